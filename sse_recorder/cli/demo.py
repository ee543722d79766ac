"""`sse-recorder demo` and `demo-upstream`: the main job end to end, and its upstream."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from sse_recorder.cli.app import _fail, _run, main


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where the demo cassette and mitmproxy CA go.")
def demo(workdir: Path) -> None:
    """The main job end to end: record demo streams through mitmproxy, replay at 1x and 10x."""
    from sse_recorder.demo.walkthrough import run_demo

    sys.exit(_run(run_demo(workdir, click.echo)))


@main.command("demo-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535))
def demo_upstream(host: str, port: int) -> None:
    """Serve the built-in demo SSE streams (vendor formats, CI logs, deploys, resets)."""
    from sse_recorder.demo.upstream import ROUTES, serve

    def ready(base_url: str) -> None:
        click.echo(base_url)
        for route in ROUTES:
            click.echo(f"  {route.method:<5} {route.path:<22} {route.description}", err=True)
        sys.stdout.flush()

    try:
        asyncio.run(serve(host, port, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}")

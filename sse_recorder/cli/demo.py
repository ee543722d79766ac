"""`sse-recorder demo` and `demo-upstream`: the main job end to end, and its upstream."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from sse_recorder.cli.app import _fail, _run, cannot_listen, listen_options, main


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("demo-out"), show_default=True,
              help="Directory for the demo cassette, mitmproxy's CA and each process's log.")
def demo(workdir: Path) -> None:
    """The main job end to end: record demo streams through mitmproxy, replay at 1x and 10x."""
    from sse_recorder.demo.walkthrough import run_demo

    sys.exit(_run(run_demo(workdir, click.echo)))


@main.command("demo-upstream")
@listen_options("the demo upstream")
def demo_upstream(listen_host: str, listen_port: int) -> None:
    """Serve the built-in demo SSE streams (vendor formats, CI logs, deploys, resets)."""
    from sse_recorder.demo.upstream import ROUTES, serve

    def ready(base_url: str) -> None:
        click.echo(base_url)
        for route in ROUTES:
            click.echo(f"  {route.method:<5} {route.path:<22} {route.description}", err=True)
        sys.stdout.flush()

    try:
        asyncio.run(serve(listen_host, listen_port, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _fail(cannot_listen(listen_host, listen_port, exc))

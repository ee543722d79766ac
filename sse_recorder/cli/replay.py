"""`sse-recorder replay` and `faults`: serve a cassette, with the faults to inject."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from sse_recorder.cli.app import _fail, _run, main
from sse_recorder.errors import SSERecorderError


@main.command()
@click.argument("cassette", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--speed", default=1.0, show_default=True, type=float,
              help="Replay at this many times the recorded pace.")
@click.option("--instant", is_flag=True, help="No waiting at all (chunk boundaries kept).")
@click.option("--max-gap", type=float, metavar="SECONDS", help="Clamp longer pauses to this.")
@click.option("--match", "match", metavar="LIST",
              help="Criteria, comma-separated: method,scheme,host,path,query,body,headers,"
                   "header:NAME (default method,path,query,body).")
@click.option("--ignore-json", multiple=True, metavar="FIELD",
              help="JSON body field to ignore when matching (repeatable).")
@click.option("--ignore-query", multiple=True, metavar="NAME",
              help="Query parameter to ignore when matching (repeatable).")
@click.option("--ignore-header", multiple=True, metavar="NAME",
              help="Header to ignore when matching headers (repeatable).")
@click.option("--when-exhausted", type=click.Choice(["repeat-last", "error"]),
              default="repeat-last", show_default=True,
              help="After every recorded response to a request was served once.")
@click.option("--fault", "fault_specs", multiple=True, metavar="SPEC",
              help="Inject a fault, e.g. drop:after_events=3,how=rst (repeatable; "
                   "see `sse-recorder faults`).")
@click.option("--faults", "fault_file", type=click.Path(path_type=Path), metavar="FILE",
              help="A TOML fault plan ([[fault]] tables, optional seed).")
@click.option("--seed", type=int, help="Seed for probabilistic faults (default: the plan's, or 0).")
@click.option("--fault-log", type=click.Path(path_type=Path), metavar="FILE",
              help="Append one JSON line per response: what matched and which faults fired.")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human",
              show_default=True,
              help="The per-request log on stderr: a line to read, or the JSON record that "
                   "--fault-log writes.")
@click.option("--loop", "loop_name", type=click.Choice(["asyncio", "uvloop"]),
              default="asyncio", show_default=True,
              help="Event loop to serve on (uvloop must be installed; not with --proxy).")
@click.option("--proxy", "as_proxy", is_flag=True,
              help="Be an HTTP(S) proxy (mitmproxy) answering every request from CASSETTE.")
@click.option("--confdir", type=click.Path(path_type=Path),
              default=Path("~/.mitmproxy").expanduser(), show_default=True,
              help="With --proxy: mitmproxy configuration directory (holds its CA).")
def replay(
    cassette: Path,
    host: str,
    port: int,
    speed: float,
    instant: bool,
    max_gap: float | None,
    match: str | None,
    ignore_json: tuple[str, ...],
    ignore_query: tuple[str, ...],
    ignore_header: tuple[str, ...],
    when_exhausted: str,
    fault_specs: tuple[str, ...],
    fault_file: Path | None,
    seed: int | None,
    fault_log: Path | None,
    log_format: str,
    loop_name: str,
    as_proxy: bool,
    confdir: Path,
) -> None:
    """Serve CASSETTE over HTTP with the recorded chunks, timing and endings.

    The first line printed is the base URL (with --proxy: the proxy URL, then the CA to
    trust); then one line per request on stderr says what matched and how it ended.
    Ctrl-C stops.
    """
    from sse_recorder.faults import FaultPlan
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.replay.records import Served
    from sse_recorder.replay.schedule import Timing
    from sse_recorder.replay.server import ReplayOptions, ReplayServer, loop_factory

    async def go() -> None:
        options = ReplayOptions(
            timing=Timing(speed=speed, instant=instant, max_gap=max_gap),
            match=MatchConfig.parse(match, ignore_json, ignore_query, ignore_header,
                                    when_exhausted),
            faults=FaultPlan.load(fault_specs, fault_file, seed),
            fault_log=fault_log,
        )
        render = Served.json_line if log_format == "json" else Served.line
        server = await ReplayServer.open(
            str(cassette), options, lambda served: click.echo(render(served), err=True)
        )
        try:
            if as_proxy:
                await _replay_as_proxy(server, host, port, confdir)
                return
            try:
                await server.start(host, port)
            except OSError as exc:
                raise SSERecorderError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            click.echo(server.base_url)
            sys.stdout.flush()
            await _until_signalled()
        finally:
            await server.close()

    try:
        factory = None if as_proxy else loop_factory(loop_name)
    except SSERecorderError as exc:
        _fail(str(exc))
    _run(go(), factory)


async def _replay_as_proxy(server: Any, host: str, port: int, confdir: Path) -> None:
    try:
        from sse_recorder.mitm.runner import Listening, ProxySettings
        from sse_recorder.mitm.runner import replay as run_proxy
    except ImportError as exc:
        raise SSERecorderError(f"--proxy needs mitmproxy ({exc.name} is missing): "
                               "install 'sse-recorder[record]'") from None

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        sys.stdout.flush()

    await server.start("127.0.0.1", 0)
    await run_proxy(server, ProxySettings(listen_host=host, listen_port=port, confdir=confdir),
                    ready)


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (Ctrl-C stops cleanly, without a traceback)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@main.command("faults")
def list_faults() -> None:
    """List the fault types with an example of each."""
    from sse_recorder.faults import describe_types

    click.echo(describe_types())

"""`sse-recorder replay` and `faults`: serve a cassette, with the faults to inject."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from sse_recorder.cli.app import (
    Pairing,
    _fail,
    _run,
    cannot_listen,
    cassette_argument,
    check_pairings,
    confdir_option,
    listen_options,
    main,
    needs_mitmproxy,
)
from sse_recorder.errors import SSERecorderError


@main.command()
@cassette_argument
@listen_options("the replay server (with --proxy: the proxy)")
@click.option("--speed", default=1.0, show_default=True, type=float,
              help="Replay at this many times the recorded pace.")
@click.option("--instant", is_flag=True, help="No waiting at all (chunk boundaries kept).")
@click.option("--max-gap", metavar="DURATION",
              help="Clamp longer pauses to this (250ms, 2s; a bare number is milliseconds).")
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
              help="Inject a fault, e.g. drop:after_event=3,how=rst (repeatable; "
                   "see `sse-recorder faults`).")
@click.option("--faults", "fault_file", type=click.Path(path_type=Path), metavar="FILE",
              help="A TOML fault plan ([[fault]] tables, optional seed).")
@click.option("--seed", type=int, help="Seed for probabilistic faults (default: the plan's, or 0).")
@click.option("--fault-log", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
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
@confdir_option("With --proxy: ")
def replay(
    cassette: Path,
    listen_host: str,
    listen_port: int,
    speed: float,
    instant: bool,
    max_gap: str | None,
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
    check_pairings(click.get_current_context(), PAIRINGS)
    from sse_recorder.faults import FaultPlan
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.replay.records import Served, log_to_stderr
    from sse_recorder.replay.schedule import Timing
    from sse_recorder.replay.server import ReplayOptions, ReplayServer, loop_factory
    from sse_recorder.units import parse_duration

    async def go() -> None:
        options = ReplayOptions(
            timing=Timing(speed=speed, instant=instant, max_gap=None if max_gap is None
                          else parse_duration(max_gap, "--max-gap")),
            match=MatchConfig.parse(match, ignore_json, ignore_query, ignore_header,
                                    when_exhausted),
            faults=FaultPlan.load(fault_specs, fault_file, seed),
            fault_log=fault_log,
        )
        render = Served.json_line if log_format == "json" else Served.line
        server = await ReplayServer.open(
            str(cassette), options, log_to_stderr(render)  # never blocks on a full pipe
        )
        for warning in options.faults.unreachable(server.matcher.interactions):
            click.echo(f"sse-recorder: warning: {warning}", err=True)
        fresh_log = fault_log is not None and not fault_log.exists()
        try:
            if as_proxy:
                await _replay_as_proxy(server, listen_host, listen_port, confdir)
                return
            await _start(server, listen_host, listen_port)
            click.echo(server.base_url)
            sys.stdout.flush()
            await _until_signalled()
        except SSERecorderError:  # failed to start: no fault log created for nothing
            if fresh_log and fault_log and fault_log.exists() and not fault_log.stat().st_size:
                fault_log.unlink()
            raise
        finally:
            await server.close()

    try:
        factory = None if as_proxy else loop_factory(loop_name)
    except SSERecorderError as exc:
        _fail(str(exc))
    _run(go(), factory)


PAIRINGS = (
    Pairing("speed", "instant", needs=False, why="--instant sends everything without waiting"),
    Pairing("max_gap", "instant", needs=False,
            why="--instant sends everything without waiting"),
    Pairing("confdir", "as_proxy", needs=True, why="only the proxy uses mitmproxy's CA"),
    Pairing("loop_name", "as_proxy", needs=False, why="the proxy runs on mitmproxy's loop"),
)


async def _start(server: Any, host: str, port: int) -> None:
    """Start the server, telling apart the two things that can fail: the fault log (a file,
    opened first) and the listening socket."""
    try:
        await server.start(host, port)
    except OSError as exc:
        if exc.filename is not None:
            raise SSERecorderError(f"cannot write the fault log {exc.filename}: "
                                   f"{exc.strerror}") from None
        raise SSERecorderError(cannot_listen(host, port, exc)) from None


async def _replay_as_proxy(server: Any, host: str, port: int, confdir: Path) -> None:
    try:
        from sse_recorder.mitm.runner import ListenFailed, Listening, ProxySettings
        from sse_recorder.mitm.runner import replay as run_proxy
    except ImportError as exc:
        raise SSERecorderError(needs_mitmproxy("--proxy", exc)) from None

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        sys.stdout.flush()

    await _start(server, "127.0.0.1", 0)
    try:
        await run_proxy(server, ProxySettings(listen_host=host, listen_port=port,
                                              confdir=confdir), ready)
    except ListenFailed as exc:
        raise SSERecorderError(cannot_listen(host, port, exc.error)) from None


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

"""`sse-recorder replay` and `faults`: serve a cassette, with the faults to inject."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sse_recorder.cli.app import (
    Pairing,
    _fail,
    _run,
    cannot_listen,
    cassette_argument,
    check_ignores,
    check_pairings,
    confdir_option,
    listen_options,
    main,
    match_options,
    needs_mitmproxy,
    refuse_overwriting,
)
from sse_recorder.errors import SSERecorderError

if TYPE_CHECKING:
    from sse_recorder.replay.workers import Seat


@main.command()
@cassette_argument
@listen_options("the replay server (with --proxy: the proxy)")
@click.option("--speed", default=1.0, show_default=True, type=float,
              help="Replay at this many times the recorded pace.")
@click.option("--instant", is_flag=True, help="No waiting at all (chunk boundaries kept).")
@click.option("--max-gap", metavar="DURATION",
              help="Clamp longer pauses to this (250ms, 2s; a bare number is milliseconds).")
@match_options("matching",
               "Criteria, comma-separated: method,scheme,host,path,query,body,headers,"
               "header:NAME (default method,path,query,body).",
               "Header to ignore when matching headers (repeatable).")
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
@click.option("--workers", default="1", show_default=True, metavar="N|auto",
              envvar="SSE_RECORDER_WORKERS", show_envvar=True,
              help="Serve from N processes on the one address (auto: one per CPU); see "
                   "the README's Scale section for what each keeps to itself.")
@click.option("--pin-clients", is_flag=True,
              help="With --workers: every connection from one client address meets the "
                   "same worker (Linux).")
@click.option("--loop", "loop_name", type=click.Choice(["asyncio", "uvloop"]),
              default="asyncio", show_default=True,
              help="Event loop to serve on (uvloop must be installed; not with --proxy).")
@click.option("--cors", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages at ORIGIN (scheme://host[:port], or '*') read the replay: "
                   "answers CORS preflights, sets Access-Control-* (repeatable; off by "
                   "default).")
@click.option("--control-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve the control API (HTTP/JSON: add, list and remove faults, read the "
                   "served records) on this port; 0 picks a free one. Off by default.")
@click.option("--control-host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address the control API listens on: loopback only, unless "
                   "--control-allow-remote.")
@click.option("--control-allow-remote", is_flag=True,
              help="Let the control API listen on a non-loopback address (whoever reaches "
                   "it decides every client's faults).")
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
    workers: str,
    pin_clients: bool,
    as_proxy: bool,
    confdir: Path,
    cors_origins: tuple[str, ...],
    control_port: int | None,
    control_host: str,
    control_allow_remote: bool,
) -> None:
    """Serve CASSETTE over HTTP with the recorded chunks, timing and endings.

    The first line printed is the base URL (with --proxy: the proxy URL, then the CA to
    trust; with --control-port, then `control API: URL`); then one line per request on
    stderr says what matched and how it ended. Ctrl-C stops.
    """
    check_pairings(click.get_current_context(), PAIRINGS)
    check_ignores(click.get_current_context())
    _check_control(click.get_current_context(), control_port, control_host,
                   control_allow_remote)
    refuse_overwriting(fault_log, "--fault-log", cassette)
    from sse_recorder.faults import FaultPlan
    from sse_recorder.replay.cors import Cors
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.replay.records import Served, log_to_stderr
    from sse_recorder.replay.schedule import Timing
    from sse_recorder.replay.server import (
        ReplayOptions,
        ReplayServer,
        loop_factory,
        settle_for_serving,
    )
    from sse_recorder.transfer.exchange import replay_source
    from sse_recorder.units import parse_duration

    async def go(seat: Seat | None = None) -> None:
        options = ReplayOptions(
            timing=Timing(speed=speed, instant=instant, max_gap=None if max_gap is None
                          else parse_duration(max_gap, "--max-gap")),
            match=MatchConfig.parse(match, ignore_json, ignore_query, ignore_header,
                                    when_exhausted),
            faults=FaultPlan.load(fault_specs, fault_file, seed),
            fault_log=fault_log,
            cors=Cors.parse(cors_origins),
            worker=None if seat is None else seat.index + 1,
        )
        render = Served.json_line if log_format == "json" else Served.log_line
        # a .sse file is imported first, into a temporary cassette removed on return
        source, _imported = await replay_source(cassette)
        server = await ReplayServer.open(
            str(source), options, log_to_stderr(render)  # never blocks on a full pipe
        )
        warnings = [*options.cors.warnings,
                    *options.faults.unreachable(server.matcher.interactions)]
        for warning in warnings if seat is None or seat.first else []:  # once, not per worker
            click.echo(f"sse-recorder: warning: {warning}", err=True)
        fresh_log = fault_log is not None and not fault_log.exists()
        control = None
        try:
            if control_port is not None:
                control = await _start_control(server, control_host, control_port,
                                               control_allow_remote)
            if as_proxy:
                await _replay_as_proxy(server, listen_host, listen_port, confdir,
                                       lambda: _announce_control(control))
                return
            if seat is None:
                await _start(server, listen_host, listen_port)
            else:  # a worker: the supervisor listens, and prints the URL once all are ready
                await _start_on(server, seat.sockets)
            settle_for_serving()  # before the URL: from then on, a client may be waiting
            click.echo(server.base_url)
            _announce_control(control)
            sys.stdout.flush()
            await _until_signalled()
        except SSERecorderError:  # failed to start: no fault log created for nothing
            if fresh_log and fault_log and fault_log.exists() and not fault_log.stat().st_size:
                fault_log.unlink()
            raise
        finally:
            if control is not None:
                await control.close()
            await server.close()

    try:
        factory = None if as_proxy else loop_factory(loop_name)
        count = _workers(workers, pin_clients, as_proxy)
    except SSERecorderError as exc:
        _fail(str(exc))
    if count > 1 and control_port is not None:
        _fail(f"--control-port needs one process, not {_workers_setting(workers)}: each "
              "worker would have faults of its own")
    if count == 1:
        _run(go(), factory)
    else:
        sys.exit(_supervise(count, pin_clients, listen_host, listen_port,
                            lambda seat: _run(go(seat), factory)))


PAIRINGS = (
    Pairing("speed", "instant", needs=False, why="--instant sends everything without waiting"),
    Pairing("max_gap", "instant", needs=False,
            why="--instant sends everything without waiting"),
    Pairing("confdir", "as_proxy", needs=True, why="only the proxy uses mitmproxy's CA"),
    Pairing("loop_name", "as_proxy", needs=False, why="the proxy runs on mitmproxy's loop"),
    Pairing("pin_clients", "as_proxy", needs=False, why="the proxy is one process"),
)


def _workers(text: str, pin: bool, as_proxy: bool) -> int:
    """How many processes serve. The proxy is one process: --workers on the command line is
    refused with --proxy, from the environment it does not apply, and is not even read (so
    SSE_RECORDER_WORKERS can be set for a whole test run)."""
    from sse_recorder.replay.workers import worker_count

    from_environment = _from_environment()
    if as_proxy and from_environment:
        return 1
    count = worker_count(text, "SSE_RECORDER_WORKERS" if from_environment else "--workers")
    if as_proxy:
        if count > 1:
            raise click.UsageError("--workers does nothing with --proxy: the proxy is one "
                                   "process", click.get_current_context())
        return 1
    if pin and count == 1:
        raise SSERecorderError("--pin-clients needs --workers 2 or more: one worker serves "
                               "every client anyway")
    return count


def _from_environment() -> bool:
    """The number of workers came from SSE_RECORDER_WORKERS: errors name it, not --workers
    (which the user never typed)."""
    source = click.get_current_context().get_parameter_source("workers")
    return source is click.core.ParameterSource.ENVIRONMENT


def _workers_setting(text: str) -> str:
    """The number of workers as the user set it."""
    return f"SSE_RECORDER_WORKERS={text}" if _from_environment() else f"--workers {text}"


def _supervise(count: int, pin: bool, host: str, port: int,
               serve: Callable[[Seat], None]) -> int:
    """Listen once for `count` workers, each running `serve(seat)`; print the URL when all
    serve; the exit status (0 when stopped by a signal)."""
    from sse_recorder.replay.workers import StartError, Supervisor
    from sse_recorder.wire.connections import base_url
    from sse_recorder.wire.listening import listen

    try:
        listeners = listen(host, port, count, pin)
    except OSError as exc:
        _fail(cannot_listen(host, port, exc))
    except SSERecorderError as exc:
        _fail(str(exc))

    def ready() -> None:
        click.echo(base_url(listeners.host, listeners.port))
        sys.stdout.flush()

    def worker(seat: Seat) -> int:
        serve(seat)
        return 0

    def report(line: str) -> None:
        """A line lost on a closed stderr (`2>&1 | head -1`) must not stop the serving."""
        with contextlib.suppress(OSError, ValueError):
            click.echo(f"sse-recorder: {line}", err=True)

    try:
        return Supervisor(listeners, count, worker, ready, report).run()
    except StartError as exc:  # the workers already started are stopped
        _fail(str(exc))


async def _start_on(server: Any, sockets: tuple[socket.socket, ...]) -> None:
    """A worker's start: the listening sockets are there already; only the fault log can
    fail."""
    try:
        await server.start(sockets=sockets)
    except OSError as exc:
        raise SSERecorderError(f"cannot write the fault log {exc.filename}: "
                               f"{exc.strerror}") from None


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


def _check_control(ctx: click.Context, port: int | None, host: str,
                   allow_remote: bool) -> None:
    """The control API's options: they need --control-port, and a loopback address."""
    from sse_recorder.replay.control import check_host

    for name, param in (("--control-host", "control_host"),
                        ("--control-allow-remote", "control_allow_remote")):
        if port is None and ctx.get_parameter_source(param) not in (
                click.core.ParameterSource.DEFAULT, None):
            raise click.UsageError(f"{name} needs --control-port: the control API is off "
                                   "without it", ctx)
    try:
        check_host(host, allow_remote)
    except SSERecorderError as exc:
        _fail(str(exc))


async def _start_control(server: Any, host: str, port: int, allow_remote: bool) -> Any:
    from sse_recorder.replay.control import ControlServer

    try:
        return await ControlServer(server, allow_remote).start(host, port)
    except OSError as exc:  # the hints name the control API's options
        reason = cannot_listen(host, port, exc).replace("--listen-", "--control-")
        raise SSERecorderError(f"control API: {reason}") from None


def _announce_control(control: Any) -> None:
    """The control API's line, after the line(s) saying where the replay listens."""
    if control is not None:
        click.echo(f"control API: {control.url}")
        sys.stdout.flush()


async def _replay_as_proxy(server: Any, host: str, port: int, confdir: Path,
                           announce: Callable[[], None] = lambda: None) -> None:
    try:
        from sse_recorder.mitm.runner import ListenFailed, Listening, ProxySettings
        from sse_recorder.mitm.runner import replay as run_proxy
    except ImportError as exc:
        raise SSERecorderError(needs_mitmproxy("--proxy", exc)) from None

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        announce()
        sys.stdout.flush()

    await _start(server, "127.0.0.1", 0)
    # HTTP/2 only if some recorded client spoke it: offered to a client recorded over
    # HTTP/1.1 (curl takes it), a recorded truncation reached it as a stream reset
    http2 = any(i.request.http_version.startswith("HTTP/2")
                for i in server.matcher.interactions)
    try:
        await run_proxy(server, ProxySettings(listen_host=host, listen_port=port,
                                              confdir=confdir, http2=http2), ready)
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

"""The `sse-recorder` command line: a thin click shell over the library.

Heavy imports (SQLAlchemy, mitmproxy) happen inside the commands so `--help` is instant and
the core commands work without the `record` extra. Every expected failure is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from sse_recorder import __version__
from sse_recorder.errors import SSERecorderError

T = TypeVar("T")


def _run(
    coro: Coroutine[Any, Any, T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run a coroutine, turning expected failures into a one-line error and exit status 2."""
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    except SSERecorderError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    """An expected failure: one line on stderr, exit status 2."""
    click.echo(f"sse-recorder: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sse-recorder")
def main() -> None:
    """Record Server-Sent Events through mitmproxy into SQLite cassettes, and replay them."""


# -- record --------------------------------------------------------------------------------


@main.command()
@click.option("--cassette", "cassette", required=True, type=click.Path(path_type=Path),
              help="Cassette to record into: created, or appended to if it is one.")
@click.option("--upstream", metavar="URL",
              help="Reverse-proxy mode towards URL (clients change only their base URL).")
@click.option("--listen-host", default="127.0.0.1", show_default=True)
@click.option("--listen-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--confdir", type=click.Path(path_type=Path),
              default=Path("~/.mitmproxy").expanduser(), show_default=True,
              help="mitmproxy configuration directory (holds its CA).")
@click.option("--include", multiple=True, metavar="ROUTE",
              help="Record only '[METHOD ]host/path-glob' routes (repeatable).")
@click.option("--exclude", multiple=True, metavar="ROUTE", help="Never record these routes.")
@click.option("--redact-header", multiple=True, metavar="NAME",
              help="Extra header to redact (credential headers always are).")
@click.option("--redact-query", multiple=True, metavar="NAME",
              help="Extra query parameter to redact.")
@click.option("--redact-json", multiple=True, metavar="FIELD",
              help="Extra JSON field to redact in bodies and SSE data.")
@click.option("--ssl-insecure", is_flag=True, help="Do not verify upstream TLS certificates.")
@click.option("--replay-matched", is_flag=True,
              help="Answer requests the cassette already holds from it; record only new ones.")
@click.option("--match", "match", metavar="LIST",
              help="With --replay-matched: matching criteria, as for `replay --match`.")
def record(
    cassette: Path,
    upstream: str | None,
    listen_host: str,
    listen_port: int,
    confdir: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    redact_header: tuple[str, ...],
    redact_query: tuple[str, ...],
    redact_json: tuple[str, ...],
    ssl_insecure: bool,
    replay_matched: bool,
    match: str | None,
) -> None:
    """Run mitmproxy and record every interaction into CASSETTE until Ctrl-C.

    The first line printed is the URL clients use: the proxy URL (set HTTPS_PROXY and trust
    the CA printed below) or, with --upstream, the base URL replacing the upstream's.
    """
    try:
        from sse_recorder.mitm.runner import Listening, ProxySettings
        from sse_recorder.mitm.runner import record as run_proxy
    except ImportError as exc:
        _fail(f"recording needs mitmproxy ({exc.name} is missing): "
              "install 'sse-recorder[record]', e.g. pipx install 'sse-recorder[record]'")
    from sse_recorder.record.redact import RedactionRules
    from sse_recorder.record.session import RecorderConfig
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.routes import RouteFilter

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        if upstream:
            click.echo(f"reverse proxy to {upstream}: point clients' base URL at {listening.url}")
        else:
            click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        click.echo(f"recording into {cassette}; Ctrl-C to stop", err=True)
        sys.stdout.flush()

    async def go() -> int:
        settings = ProxySettings(upstream, listen_host, listen_port, confdir, ssl_insecure)
        rules = RedactionRules.with_extra(redact_header, redact_query, redact_json)
        return await run_proxy(
            cassette, settings, ready, RouteFilter.parse(include, exclude),
            RecorderConfig(redaction=rules),
            MatchConfig.parse(match) if replay_matched else None,
        )

    sys.exit(_run(go()))


# -- ls / show -----------------------------------------------------------------------------


def _ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.1f}ms"


def _content_type(interaction: Any) -> str:
    from sse_recorder.model import header_value

    if interaction.response is None:
        return "-"
    return (header_value(interaction.response.headers, "content-type") or "-").split(";")[0]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _interaction_json(cassette: Any, interaction: Any) -> dict[str, Any]:
    chunks = [
        {
            "seq": c.seq,
            "offset_ms": c.offset_ns / 1e6,
            "size": len(c.data),
            "data": base64.b64encode(c.data).decode("ascii"),
        }
        async for c in cassette.chunks(interaction.id)
    ]
    events = [
        {"type": e.type, "data": e.data, "id": e.id, "retry": e.retry,
         "offset_ms": e.offset_ns / 1e6}
        for e in await cassette.events(interaction.id)
        if e.kind == "event"
    ]
    response = interaction.response
    return {
        "id": interaction.id,
        "request": {
            "method": interaction.request.method,
            "url": interaction.request.url,
            "headers": [list(h) for h in interaction.request.headers],
        },
        "response": None if response is None else {
            "status": response.status,
            "headers": [list(h) for h in response.headers],
        },
        "complete": interaction.complete,
        "end_reason": interaction.outcome.value,
        "chunks": chunks,
        "events": events,
    }


async def _dump_json(path: Path, only: int | None) -> None:
    from sse_recorder.store.cassette import Cassette

    async with await Cassette.open(path) as cassette:
        chosen = (
            [await cassette.interaction(only)] if only is not None
            else await cassette.interactions()
        )
        document = {
            "cassette": str(path),
            "format_version": cassette.version,
            "interactions": [await _interaction_json(cassette, i) for i in chosen],
        }
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


@main.command("ls")
@click.argument("cassette", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every chunk.")
def list_interactions(cassette: Path, as_json: bool) -> None:
    """List CASSETTE's interactions, one line each."""
    if as_json:
        _run(_dump_json(cassette, None))
        return

    async def go() -> str:
        from sse_recorder.store.cassette import Cassette

        async with await Cassette.open(cassette) as opened:
            found = await opened.interactions()
        rows = [["ID", "METHOD", "URL", "STATUS", "TYPE", "EVENTS", "CHUNKS", "DURATION", "END"]]
        for i in found:
            rows.append([
                str(i.id), i.request.method, i.request.url,
                str(i.response.status) if i.response else "-", _content_type(i),
                str(i.event_count), str(i.chunk_count), _ms(i.end_offset_ns), i.outcome.value,
            ])
        return _table(rows) if found else f"{cassette}: no interactions recorded yet"

    click.echo(_run(go()))


@main.command()
@click.argument("cassette", type=click.Path(path_type=Path))
@click.argument("interaction_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every chunk.")
def show(cassette: Path, interaction_id: int | None, as_json: bool) -> None:
    """Show the timeline of one interaction (or all): each chunk and event with its offset."""
    if as_json:
        _run(_dump_json(cassette, interaction_id))
        return

    async def go() -> None:
        from sse_recorder.store.cassette import Cassette

        async with await Cassette.open(cassette) as opened:
            chosen = (
                [await opened.interaction(interaction_id)] if interaction_id is not None
                else await opened.interactions()
            )
            for interaction in chosen:
                await _print_timeline(opened, interaction)

    _run(go())


async def _print_timeline(cassette: Any, i: Any) -> None:
    status = f"{i.response.status} {i.response.reason}" if i.response else "no response"
    click.echo(f"#{i.id} {i.request.method} {i.request.url} -> {status}")
    click.echo(
        f"  started {i.started_at:.3f}  head at {_ms(i.head_offset_ns)}  "
        f"{i.chunk_count} chunks, {i.body_size} bytes, {i.event_count} events  "
        f"end: {i.outcome.value}{' (complete)' if i.complete else ' (incomplete)'}"
        + (f"  [{i.error}]" if i.error else "")
    )
    events = await cassette.events(i.id)
    by_last_chunk: dict[int, list[Any]] = {}
    for event in events:
        by_last_chunk.setdefault(event.last_chunk, []).append(event)
    async for chunk in cassette.chunks(i.id):
        preview = chunk.data[:60].decode("utf-8", "replace").encode("unicode_escape").decode()
        click.echo(f"  {chunk.offset_ns / 1e6:10.3f}ms  chunk {chunk.seq:<5} "
                   f"{len(chunk.data):>6}B  {preview}")
        for event in by_last_chunk.get(chunk.seq, []):
            if event.kind == "comment":
                click.echo(f"  {'':>12}    comment  : {event.data}")
            else:
                fields = (("id", event.id), ("retry", event.retry))
                meta = "".join(f" {k}={v}" for k, v in fields if v is not None)
                data = event.data if len(event.data) <= 70 else event.data[:67] + "..."
                click.echo(f"  {'':>12}    event {event.type}{meta}: {data}")


# -- replay --------------------------------------------------------------------------------


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
    from sse_recorder.faults.run import FaultPlan
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
    from sse_recorder.faults.run import describe_types

    click.echo(describe_types())


# -- demo --------------------------------------------------------------------------------


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where the demo cassette and mitmproxy CA go.")
def demo(workdir: Path) -> None:
    """The main job end to end: record demo streams through mitmproxy, replay at 1x and 10x."""
    from sse_recorder.demo.walkthrough import run_demo

    sys.exit(_run(run_demo(workdir, click.echo)))


# -- demo upstream -------------------------------------------------------------------------


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

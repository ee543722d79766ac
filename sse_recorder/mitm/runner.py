"""Run mitmproxy in-process: recording (`sse-recorder record`) or replay (`replay --proxy`).

The cassette is opened before mitmproxy starts, so a bad path fails with a one-line
message and nothing listens. A socket that cannot listen (a port in use, an address not
of this machine) is raised as `ListenFailed` with the system's error, for the CLI to word
with its own option names; other start-up errors mitmproxy logs are collected and reported
as one line too, instead of its generic "errors logged" exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitmproxy import connection, http, options
from mitmproxy.proxy import server_hooks
from mitmproxy.tools.dump import DumpMaster

from sse_recorder.errors import SSERecorderError
from sse_recorder.mitm.record_addon import Recorder
from sse_recorder.record.session import RecordingSession
from sse_recorder.routes import RouteFilter

if TYPE_CHECKING:  # the replay (and the store under it) is imported where used: a recording
    # proxy's process never loads the store (its start-up was 0.45 s of SQLAlchemy)
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.replay.server import ReplayServer


@dataclass(frozen=True)
class ProxySettings:
    upstream: str | None = None  # reverse mode towards this URL; regular proxy when None
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    confdir: Path = field(default_factory=lambda: Path("~/.mitmproxy").expanduser())
    ssl_insecure: bool = False
    http2: bool = True  # offered to clients (ALPN h2)


@dataclass(frozen=True)
class Listening:
    url: str  # what clients use: the proxy URL, or the reverse proxy's base URL
    ca_cert: Path  # the mitmproxy CA certificate clients must trust for HTTPS


class _StartupErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().strip().splitlines()
        if lines:  # mitmproxy logs str(exception), empty for a bare AssertionError
            self.messages.append(lines[0])


class ListenFailed(Exception):
    """mitmproxy could not open its listening socket; `error` is the system's reason, for
    the caller to word with the options it was given."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _UnansweredConnections:
    """Reports an upstream that could not be reached before any request: in reverse mode
    mitmproxy connects as the client does, so that failure reaches no flow (nothing to
    record) and the client only sees its connection closed. Failures within a flow are
    the recorder's to report, with the flow."""

    def __init__(self, report: Callable[[str, str], None]) -> None:
        self.report = report
        self._with_flows: set[str] = set()  # client connections that sent a request

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._with_flows.add(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self._with_flows.discard(client.id)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.client.id not in self._with_flows:
            host, port = data.server.address or ("?", 0)
            self.report(f"{host}:{port}", data.server.error or "connection failed")


class _Ready:
    """Signals when mitmproxy has run every addon's `running` hook."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


def ca_problem(confdir: Path) -> str | None:
    """Why the confdir's CA cannot sign certificates for HTTPS clients, or None. mitmproxy
    starts with a damaged `mitmproxy-ca.pem` and says nothing: every HTTPS client then
    failed its handshake while the printed CA file did not exist."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca = confdir / "mitmproxy-ca.pem"
    fix = f"remove {confdir}/mitmproxy-ca* to make a new CA (clients must trust it again)"
    try:
        data = ca.read_bytes()
        x509.load_pem_x509_certificate(data)
        load_pem_private_key(data, None)
    except OSError as exc:
        return f"cannot read the mitmproxy CA {ca}: {exc.strerror or exc}"
    except (ValueError, TypeError):  # cryptography's reasons point at its FAQ, not here
        return f"{ca}: not a PEM certificate and private key mitmproxy can use; {fix}"
    if not (confdir / "mitmproxy-ca-cert.pem").is_file():
        return f"{confdir}/mitmproxy-ca-cert.pem is missing; {fix}"
    return None


async def run_mitmproxy(
    settings: ProxySettings,
    addons: list[Any],
    on_ready: Callable[[Listening], None],
    *,
    handle_signals: bool = True,
    on_master: Callable[[DumpMaster], None] | None = None,
) -> None:
    """Start mitmproxy with `addons`, announce where it listens, run until shut down.

    With `handle_signals`, SIGINT/SIGTERM shut it down (main thread only); otherwise the
    caller stops it with `master.shutdown()` on the master handed to `on_master`.
    Raises ListenFailed if it cannot listen, SSERecorderError if it fails otherwise."""
    errors = _StartupErrors()
    logging.getLogger().addHandler(errors)
    try:
        opts = options.Options(
            listen_host=settings.listen_host,
            listen_port=settings.listen_port,
            confdir=str(settings.confdir),
            mode=[f"reverse:{settings.upstream}" if settings.upstream else "regular"],
            ssl_insecure=settings.ssl_insecure,
            http2=settings.http2,
        )
        master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        master.addons.remove(master.addons.get("errorcheck"))  # it would sys.exit
        if on_master is not None:
            on_master(master)
        ready = _Ready()
        master.addons.add(*addons, ready)
        run = asyncio.get_running_loop().create_task(master.run())
        waiter = asyncio.ensure_future(ready.event.wait())
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        proxyserver = master.addons.get("proxyserver")
        try:
            addrs = [addr for server in proxyserver.servers for addr in server.listen_addrs]
            if run.done() or not addrs:
                waiter.cancel()
                master.shutdown()
                await run
                for server in proxyserver.servers:
                    if isinstance(server.last_exception, OSError):
                        raise ListenFailed(server.last_exception)
                reason = errors.messages[0] if errors.messages else "proxy did not start"
                raise SSERecorderError(f"cannot start the proxy: {reason}")
            if problem := ca_problem(settings.confdir):
                waiter.cancel()
                master.shutdown()
                await run
                raise SSERecorderError(problem)
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, master.shutdown)
            host, port = addrs[0][:2]
            on_ready(
                Listening(f"http://{host}:{port}", settings.confdir / "mitmproxy-ca-cert.pem")
            )
            await run
        finally:
            if any(server.is_running for server in proxyserver.servers):
                await proxyserver.servers.update([])  # mitmproxy leaves its sockets open
    finally:
        logging.getLogger().removeHandler(errors)


async def record(
    cassette: Path,
    session: RecordingSession,
    settings: ProxySettings,
    on_ready: Callable[[Listening], None],
    routes: RouteFilter | None = None,
    replay_matched: MatchConfig | None = None,
    on_upstream_error: Callable[[str, str], None] | None = None,
) -> int:
    """Record until SIGINT/SIGTERM; returns the process exit code.

    `session` records into `cassette`; it may be starting already
    (`RecordingSession.begin_start`, not with `replay_matched`, which reads the cassette
    before the writer opens it). With `replay_matched`, requests the cassette already
    answers (under that matching) are replayed from it and not recorded again: VCR's "new
    episodes" mode. `on_upstream_error` hears of upstream connections that failed before
    any request (address, error)."""
    replayer = None
    if replay_matched is not None and cassette.exists():
        from sse_recorder.replay.server import ReplayOptions, ReplayServer

        replayer = await ReplayServer.open(str(cassette), ReplayOptions(match=replay_matched))
    try:
        await session.start()  # CassetteError here: nothing is listening yet
        recorder = Recorder(session=session, routes=routes)
        addons: list[Any] = [recorder]
        if on_upstream_error is not None:
            addons.append(_UnansweredConnections(on_upstream_error))
        if replayer is not None:
            from sse_recorder.mitm.replay_addon import MatchedReplayRouter
            from sse_recorder.replay.matching import IncomingRequest, differences

            await replayer.start("127.0.0.1", 0)
            known, matching = replayer.matcher.interactions, replayer.options.match

            def answers(request: IncomingRequest) -> bool:
                return any(
                    i.response is not None and not differences(i.request, request, matching)
                    for i in known
                )

            addons.insert(0, MatchedReplayRouter(replayer.host, replayer.port, answers,
                                                 replayer.close))
        await run_mitmproxy(settings, addons, on_ready)
    finally:
        await session.close()  # idempotent: the addon's `done` normally closed it already
        if replayer is not None:
            await replayer.close()
    return 1 if recorder.failed else 0


async def replay(
    server: ReplayServer, settings: ProxySettings, on_ready: Callable[[Listening], None]
) -> None:
    """Serve a started `server`'s cassette to proxy clients until SIGINT/SIGTERM."""
    from sse_recorder.mitm.replay_addon import ReplayRouter

    await run_mitmproxy(settings, [ReplayRouter(server.host, server.port)], on_ready)

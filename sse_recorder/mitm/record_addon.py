"""The mitmproxy recording addon: a thin shell over `RecordingSession`.

Rules it keeps (see the project notes on mitmproxy 11/12):
- streaming is switched on in `responseheaders` when `framing.policy.streams` says so (an
  event stream, a known stream type, a chunked or close-delimited body, a large one), for
  flows left unrecorded too (a route filter): the client gets them live either way; other
  responses (small JSON answers) are buffered by mitmproxy and stored whole in `response`;
- the stream callable stamps, queues and returns the chunk untouched; it never returns
  `b""` or `None` for a non-final chunk, never awaits and never raises;
- each flow is finalized in exactly one of `response` or `error`, not on the final `b""`;
- every option is a string (or list of strings) parsed here, so a bad value is a clear
  start-up error instead of mitmproxy silently disabling the addon.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState, Server
from mitmproxy.proxy import server_hooks

from sse_recorder.errors import ConfigError
from sse_recorder.framing.policy import StreamPolicy, streams
from sse_recorder.mitm.transports import REPLAYED, Transports, headers_of
from sse_recorder.model import Framing, Outcome, RecordedRequest, ResponseHead, body_framing
from sse_recorder.record.redact import RedactionRules, SecretOptionError, secret_values
from sse_recorder.record.session import RecorderConfig, RecordingSession
from sse_recorder.routes import RouteFilter

log = logging.getLogger("sse_recorder")

_TRUNCATED_H1 = (
    "HTTP/1 protocol error: peer closed connection without sending complete message body"
)


def classify_error(
    message: str, *, client_open: bool, server_open: bool, server_reset: bool
) -> Outcome:
    """Map mitmproxy's flow error text (identical in 11.0.2 and 12.3.1) to an end reason."""
    if message == "Client disconnected.":
        return Outcome.CLIENT_GONE
    upstream_gone = Outcome.RESET if server_reset else Outcome.CLOSED
    if message.startswith(_TRUNCATED_H1):
        return upstream_gone
    if message == "peer closed connection":  # HTTP/2: whichever side is closed went away
        if not client_open:
            return Outcome.CLIENT_GONE
        if not server_open:
            return upstream_gone
        return Outcome.PROXY_ERROR
    if message.startswith("stream reset by client ("):  # the text names "client" either way
        return Outcome.CLIENT_GONE if "(CANCEL)" in message else Outcome.RESET
    return Outcome.PROXY_ERROR


class _Flow:
    """What the addon remembers about one recorded flow."""

    __slots__ = ("iid", "anchor_ns", "streamed", "close_delimited")

    def __init__(self, iid: int, anchor_ns: int) -> None:
        self.iid = iid
        self.anchor_ns = anchor_ns
        self.streamed = False
        self.close_delimited = False


class Recorder:
    """Records HTTP traffic (SSE streamed chunk by chunk, the rest whole) into a cassette."""

    def __init__(
        self, session: RecordingSession | None = None, routes: RouteFilter | None = None
    ) -> None:
        # In-process use (`sse-recorder record`) passes a started session and routes; as a
        # `mitmdump -s` script, both come from the sse_* options in `running`.
        self.session = session
        if session is not None:
            session.on_failure = self._storage_failed
            session.on_congestion = self._congestion
        self.filter = routes or RouteFilter()
        self.stream_policy = StreamPolicy()  # which responses stream through (framing.policy)
        self._preconfigured = session is not None
        self._flows: dict[str, _Flow] = {}
        self._live: dict[str, http.HTTPFlow] = {}
        self.transports = Transports()
        self.failed = False
        self.secret_values: list[str] = []  # sse_redact_values and sse_redact_env's values
        self._paused: dict[Server, Any] = {}  # upstream transports paused while congested
        # mitmproxy listens before `running` has opened the cassette: early requests wait.
        self._started = asyncio.Event()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "sse_cassette", str, "", "SQLite cassette to record into (created, or appended to)."
        )
        loader.add_option(
            "sse_include", Sequence[str], [],
            "Record only requests matching one of these routes: '[METHOD ]host/path-glob'.",
        )
        loader.add_option(
            "sse_exclude", Sequence[str], [], "Never record requests matching these routes."
        )
        loader.add_option(
            "sse_stream_types", Sequence[str], [],
            "More media types to stream through and record chunk by chunk, whatever their size.",
        )
        loader.add_option(
            "sse_redact_headers", Sequence[str], [],
            "Extra header names to redact (credential headers always are).",
        )
        loader.add_option(
            "sse_redact_query", Sequence[str], [],
            "Extra query parameter names to redact (api_key, token... always are).",
        )
        loader.add_option(
            "sse_redact_json", Sequence[str], [],
            "Extra JSON field names to redact in request bodies, response bodies and SSE data.",
        )
        loader.add_option(
            "sse_redact_values", Sequence[str], [],
            "Secret values never to store, wherever they appear (also encoded).",
        )
        loader.add_option(
            "sse_redact_env", Sequence[str], [],
            "Environment variables whose values are never stored, like sse_redact_values.",
        )

    def configure(self, updated: set[str]) -> None:
        if self._preconfigured:
            return
        try:
            if updated & {"sse_include", "sse_exclude"}:
                self.filter = RouteFilter.parse(ctx.options.sse_include, ctx.options.sse_exclude)
        except ConfigError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if "sse_stream_types" in updated:
            self.stream_policy = StreamPolicy().with_types(ctx.options.sse_stream_types)
        if updated & {"sse_redact_values", "sse_redact_env"}:
            try:
                self.secret_values = secret_values(ctx.options.sse_redact_values,
                                                   ctx.options.sse_redact_env)
            except SecretOptionError as exc:
                raise exceptions.OptionsError(f"sse_redact_{exc.option}: {exc}") from None
        if self.session is not None and updated & {"sse_cassette"}:
            raise exceptions.OptionsError("sse_cassette cannot change while recording")

    async def running(self) -> None:
        try:
            await self._start()
        finally:
            self._started.set()

    async def _start(self) -> None:
        if self._preconfigured:
            return
        unknown = sorted(k for k in ctx.options.deferred if k.startswith("sse_"))
        if unknown:
            log.error(f"sse-recorder: unknown option(s): {', '.join(unknown)}")
            return
        if not ctx.options.sse_cassette:
            log.error("sse-recorder: set the cassette path with --set sse_cassette=PATH")
            return
        rules = RedactionRules.with_extra(
            ctx.options.sse_redact_headers,
            ctx.options.sse_redact_query,
            ctx.options.sse_redact_json,
            self.secret_values,
        )
        session = RecordingSession(
            ctx.options.sse_cassette, RecorderConfig(redaction=rules), self._storage_failed,
            self._congestion,
        )
        try:
            await session.start()
        except Exception as exc:  # noqa: BLE001 - CassetteError or an OS error opening it
            log.error(f"sse-recorder: {exc}")
            return
        self.session = session
        log.info(f"sse-recorder: recording into {ctx.options.sse_cassette}")

    async def done(self) -> None:
        self._congestion(False)
        # mitmproxy keeps streaming while the cassette closes (measured: 30 more events of a
        # 5 ms stream reached the client, never stored): a stream still open is cut first, so
        # its client gets nothing the cassette lacks (it is stored as `stopped`).
        for flow in self._live.values():
            if flow.live:  # (a storage failure has killed them already)
                self.transports.reset_client(flow.client_conn)
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()
            log.info(f"sse-recorder: flushed {session.chunks_written} chunks")
        if self.failed:
            raise SystemExit(1)  # mitmdump then exits non-zero: the recording is incomplete

    # -- storage failure: stop loudly ----------------------------------------------------

    def _storage_failed(self, exc: Exception) -> None:
        self.failed = True
        sys.stderr.write(f"sse-recorder: cannot write the cassette, stopping the proxy: {exc}\n")
        for flow in list(self._live.values()):
            if flow.killable:
                flow.kill()
        ctx.master.shutdown()

    # -- backpressure: the writer's backlog is bounded by time ---------------------------

    def _pause(self, flow: http.HTTPFlow) -> None:
        """Stop reading from this flow's upstream while the writer is congested: the client
        then gets the stream more slowly, and a crash cannot lose more than the bound."""
        server = flow.server_conn
        transport = self._paused.get(server)
        if transport is None:
            writer = getattr(self.transports.io_of(server), "writer", None)
            transport = getattr(writer, "transport", None)
            if transport is None:
                return
            self._paused[server] = transport
        transport.pause_reading()  # again each time: the StreamReader may have resumed it

    def _congestion(self, congested: bool) -> None:
        if congested:
            return  # flows pause themselves on their next chunk (see _stream_callable)
        paused, self._paused = self._paused, {}
        for transport in paused.values():
            if not transport.is_closing():
                transport.resume_reading()

    # -- hooks ---------------------------------------------------------------------------

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.transports.server_connected(data)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not (self._preconfigured or self._started.is_set()):
            return self._request_once_started(flow)  # mitmproxy awaits it for this flow only
        self._record_request(flow)
        return None

    async def _request_once_started(self, flow: http.HTTPFlow) -> None:
        await self._started.wait()
        self._record_request(flow)

    def _record_request(self, flow: http.HTTPFlow) -> None:
        session = self.session
        if session is None or self.failed:
            if self.failed and flow.killable:
                flow.kill()
            return
        request = flow.request
        if flow.metadata.get(REPLAYED):
            return  # answered from the cassette (record mode new_episodes)
        if not self.filter.allows(request.method, request.pretty_host, request.path):
            return
        started_at = time.time()
        anchor_ns = time.monotonic_ns()
        iid = session.begin(
            RecordedRequest(
                method=request.method,
                url=request.pretty_url,
                headers=headers_of(request),
                body=request.raw_content or b"",
                http_version=request.http_version,
            ),
            started_at,
        )
        self._flows[flow.id] = _Flow(iid, anchor_ns)
        self._live[flow.id] = flow

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        state = self._flows.get(flow.id)
        session = self.session
        head = ResponseHead(
            status=response.status_code,
            reason=response.reason,
            headers=headers_of(response),
            http_version=response.http_version,
        )
        if state is None or session is None:
            # Not recorded (a route filter, no cassette): mitmproxy would still buffer the
            # whole body, so an endless event stream would never reach its client.
            if streams(head, flow.request.method, self.stream_policy):
                response.stream = True
            return
        is_sse = session.head(state.iid, head, time.monotonic_ns() - state.anchor_ns)
        if is_sse or streams(head, flow.request.method, self.stream_policy):
            state.streamed = True
            state.close_delimited = body_framing(head, flow.request.method) is Framing.CLOSE
            response.stream = _stream_callable(session, flow, state, self._pause)

    def response(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        self._live.pop(flow.id, None)
        session = self.session
        if state is None or session is None:
            return
        offset = time.monotonic_ns() - state.anchor_ns
        if not state.streamed and flow.response is not None and flow.response.raw_content:
            session.chunk(state.iid, offset, flow.response.raw_content)
        if state.close_delimited and self.transports.upstream_was_reset(flow.server_conn):
            # the connection's end is such a body's end: mitmproxy calls an RST complete
            session.end(state.iid, Outcome.RESET, offset, "the upstream reset the connection")
            return
        session.end(
            state.iid, Outcome.CLEAN, offset, None, check_truncation=state.close_delimited
        )

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        self._live.pop(flow.id, None)
        session = self.session
        if state is None or session is None:
            return
        message = flow.error.msg if flow.error else "unknown error"
        reset = self.transports.upstream_was_reset(flow.server_conn)
        if ctx.master.should_exit.is_set():  # mitmproxy closes connections as it stops
            reason = Outcome.STOPPED
        else:
            reason = classify_error(
                message,
                client_open=bool(flow.client_conn.state & ConnectionState.CAN_READ),
                server_open=bool(flow.server_conn.state & ConnectionState.CAN_READ),
                server_reset=reset,
            )
        session.end(state.iid, reason, time.monotonic_ns() - state.anchor_ns, message)


def _stream_callable(
    session: RecordingSession, flow: http.HTTPFlow, state: _Flow,
    pause: Callable[[http.HTTPFlow], None],
) -> Callable[[bytes], bytes | list[bytes]]:
    """mitmproxy's stream callable: each chunk recorded and returned untouched; `[]` for the
    final empty call (b"" would end a chunked body early; the end is handled in hooks)."""
    empty: list[bytes] = []
    return session.chunk_forwarder(state.iid, state.anchor_ns, partial(pause, flow), empty)

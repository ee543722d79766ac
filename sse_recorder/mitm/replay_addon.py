"""Proxy-mode replay: mitmproxy answers every request from a cassette, streaming live.

mitmproxy cannot stream a response an addon makes up, so each request is rerouted to an
in-process `ReplayServer` (which owns matching, timing and endings) with the original
Host header kept. This needs `connection_strategy=lazy`, or mitmproxy would first try to
reach the real host. A recorded reset reaches mitmproxy as a truncated body, which it
would pass on as a plain close: the addon turns it back into a TCP reset for the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks

from sse_recorder.errors import ConfigError, SSERecorderError
from sse_recorder.mitm.transports import REPLAYED, Transports, headers_of
from sse_recorder.replay.matching import SCHEME_FIELD, IncomingRequest, MatchConfig
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import ReplayOptions, ReplayServer

log = logging.getLogger("sse_recorder")


class ReplayRouter:
    """Reroutes every request to the replay server at `host:port`, streaming the answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.transports = Transports()

    def running(self) -> None:
        ctx.options.connection_strategy = "lazy"  # never contact the recorded hosts

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.transports.server_connected(data)

    def request(self, flow: http.HTTPFlow) -> None:
        original_host = flow.request.host_header
        flow.request.headers[SCHEME_FIELD] = flow.request.scheme  # for --match scheme
        flow.request.scheme = "http"
        flow.request.host = self.host
        flow.request.port = self.port
        flow.request.host_header = original_host  # what the client asked for, for matching

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = True

    def error(self, flow: http.HTTPFlow) -> None:
        # HTTP/2 clients already get RST_STREAM from mitmproxy; an HTTP/1 client would see
        # a plain close, so its TCP connection is reset instead.
        if (
            flow.request.http_version.startswith("HTTP/1")
            and self.transports.upstream_was_reset(flow.server_conn)
        ):
            self.transports.reset_client(flow.client_conn)


class CassetteReplay:
    """The `mitmdump -s addons/replay.py` addon: starts its own replay server in `running`.

    Options are strings parsed here, so a bad value fails at start-up with a clear message
    instead of mitmproxy silently disabling the addon. mitmproxy listens before `running`
    has opened the cassette: requests that early wait for it rather than go upstream.
    """

    def __init__(self) -> None:
        self.server: ReplayServer | None = None
        self.router: ReplayRouter | None = None
        self._started = asyncio.Event()

    def load(self, loader: Any) -> None:
        loader.add_option("sse_replay", str, "", "Cassette to answer every request from.")
        loader.add_option(
            "sse_replay_speed", str, "1", "Replay speed factor, or 'instant' for no waiting."
        )
        loader.add_option(
            "sse_replay_match", str, "",
            "Match criteria, comma-separated (default method,path,query,body).",
        )

    async def running(self) -> None:
        ctx.options.connection_strategy = "lazy"  # before any await: never contact real hosts
        try:
            await self._start()
        finally:
            self._started.set()

    async def _start(self) -> None:
        try:
            if not ctx.options.sse_replay:
                raise SSERecorderError("set the cassette with --set sse_replay=PATH")
            try:
                timing = Timing.parse(ctx.options.sse_replay_speed)
            except ConfigError as exc:
                raise ConfigError(f"sse_replay_speed: {exc}") from None
            options = ReplayOptions(timing, MatchConfig.parse(ctx.options.sse_replay_match or None))
            server = await ReplayServer.open(ctx.options.sse_replay, options)
            self.server = server
            await server.start("127.0.0.1", 0)
        except SSERecorderError as exc:
            log.error(f"sse-recorder: {exc}")
            return
        self.router = ReplayRouter(server.host, server.port)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        if self.router is not None:
            self.router.server_connected(data)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not self._started.is_set():
            return self._request_once_started(flow)  # mitmproxy awaits it for this flow only
        if self.router is not None:
            self.router.request(flow)
        return None

    async def _request_once_started(self, flow: http.HTTPFlow) -> None:
        await self._started.wait()
        self.request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.router is not None:
            self.router.responseheaders(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if self.router is not None:
            self.router.error(flow)

    async def done(self) -> None:
        if self.server is not None:
            await self.server.close()


class MatchedReplayRouter(ReplayRouter):
    """Record mode `new_episodes`: requests the cassette already answers are rerouted to the
    replay server (and marked, so the recorder skips them); the rest go upstream."""

    MARK = REPLAYED

    def __init__(
        self, host: str, port: int, answers: Callable[[IncomingRequest], bool],
        let_go: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(host, port)
        self.answers = answers
        self.let_go = let_go

    def running(self) -> None:
        pass  # unmatched requests must still reach the upstream

    async def done(self) -> None:
        """The replay server closes its reader of the cassette here, before the recorder
        (after this addon in the chain) folds the WAL back: SQLite leaves WAL mode only
        with no other connection open, so the cassette ends as one file."""
        if self.let_go is not None:
            await self.let_go()

    def request(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        incoming = IncomingRequest(
            method=request.method,
            target=request.path,
            headers=headers_of(request),
            body=request.raw_content or b"",
            scheme=request.scheme,
            host=request.pretty_host,
        )
        if self.answers(incoming):
            flow.metadata[self.MARK] = True
            super().request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(self.MARK):
            super().responseheaders(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(self.MARK):
            super().error(flow)

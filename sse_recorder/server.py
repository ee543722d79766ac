"""The replay server: serves a cassette back over HTTP/1.1 with the recorded timing.

Requests are parsed with h11; responses are written by hand so the wire shows exactly
what was recorded: one HTTP chunk per recorded chunk (or raw bytes for Content-Length
and close-delimited bodies), each its own write with TCP_NODELAY, due at
`start + offset / speed` on an absolute schedule, and the recorded ending: terminating
chunk, FIN without it, or RST. Small interactions are cached after first use; large ones
stream from SQLite a page at a time, so the first byte never waits for the whole file.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h11

from .cassette import Cassette
from .matching import IncomingRequest, MatchConfig, Matcher, Miss
from .model import Chunk, EndReason, Interaction, header_value
from .schedule import Schedule, Timing
from .sse import Event, SSEParser

log = logging.getLogger("sse_recorder.replay")

CACHE_LIMIT = 8 << 20  # interactions with bodies up to this size are kept in memory
MAX_REQUEST_BODY = 64 << 20
PRECISE_WINDOW = 0.0015  # wake this early and finish the wait by polling the loop
PRECISE_MAX_STREAMS = 32  # above this many active streams, plain timers (CPU matters more)
INSTANT_YIELD_EVERY = 32  # instant mode: let other streams run every this many chunks
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "proxy-connection", "upgrade", "te", "trailer"}


@dataclass(frozen=True)
class ReplayOptions:
    timing: Timing = field(default_factory=Timing)
    match: MatchConfig = field(default_factory=MatchConfig)


@dataclass(frozen=True, slots=True)
class Served:
    """One request the server answered: what matched and how the response ended."""

    method: str
    target: str
    interaction_id: int | None
    status: int
    ending: str  # clean, closed, reset, client-gone, unmatched, bad-request
    explanation: str = ""


def _framing(interaction: Interaction) -> str:
    """How the recorded body was delimited: chunked, length or close."""
    assert interaction.response is not None
    headers = interaction.response.headers
    if "chunked" in (header_value(headers, "transfer-encoding") or "").lower():
        return "chunked"
    if header_value(headers, "content-length") is not None:
        return "length"
    if interaction.response.http_version.startswith("HTTP/1"):
        return "close"
    return "chunked"  # HTTP/2 has no framing headers; chunked keeps each DATA frame apart


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with a TCP RST: SO_LINGER {on, 0} then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ReplayServer:
    """Serve one cassette. `await start()`, then clients use `base_url`; `await close()`."""

    def __init__(
        self,
        cassette: Cassette,
        interactions: list[Interaction],
        options: ReplayOptions | None = None,
        on_served: Callable[[Served], None] | None = None,
    ) -> None:
        self.cassette = cassette
        self.options = options or ReplayOptions()
        self.matcher = Matcher(interactions, self.options.match)
        self.on_served = on_served
        self.served: list[Served] = []
        self._cache: dict[int, list[Chunk]] = {}
        self._cache_locks: dict[int, asyncio.Lock] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.active_streams = 0

    @classmethod
    async def open(
        cls,
        path: str,
        options: ReplayOptions | None = None,
        on_served: Callable[[Served], None] | None = None,
    ) -> ReplayServer:
        cassette = await Cassette.open(path)
        try:
            interactions = await cassette.interactions()
        except BaseException:
            await cassette.close()
            raise
        return cls(cassette, interactions, options, on_served)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ReplayServer:
        self._server = await asyncio.start_server(self._connection, host, port, backlog=4096)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        assert self._server is not None
        return str(self._server.sockets[0].getsockname()[0])

    @property
    def base_url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        await self.cassette.close()

    async def __aenter__(self) -> ReplayServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections -----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=64 * 1024)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request = await self._read_request(conn, reader, writer)
                if request is None:
                    break
                keep_alive = await self._respond(request, writer)
                if not keep_alive or conn.our_state is h11.MUST_CLOSE:
                    break
                leftover, _closed = conn.trailing_data
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
                conn.receive_data(bytes(leftover))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> IncomingRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data and head is None and not conn.trailing_data[0]:
                        return None  # the client closed an idle keep-alive connection
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_REQUEST_BODY:
                        raise h11.RemoteProtocolError("request body too large", 413)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            message = f"sse-recorder: malformed HTTP request: {exc}\n".encode()
            writer.write(
                f"HTTP/1.1 {status} Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(message)}\r\nConnection: close\r\n\r\n".encode() + message
            )
            self._record(Served("?", "?", None, status, "bad-request", str(exc)))
            return None
        assert head is not None
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
        return IncomingRequest(
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            headers=headers,
            body=bytes(body),
            host=(header_value(headers, "host") or "").rsplit(":", 1)[0],
        )

    def _record(self, served: Served) -> None:
        self.served.append(served)
        if self.on_served is not None:
            self.on_served(served)

    # -- responses -------------------------------------------------------------------------

    async def _respond(self, request: IncomingRequest, writer: asyncio.StreamWriter) -> bool:
        found = self.matcher.match(request)
        if isinstance(found, Miss):
            explanation = found.explain(request)
            body = explanation.encode()
            status = 409 if found.exhausted else 404
            writer.write(
                f"HTTP/1.1 {status} {'Conflict' if found.exhausted else 'Not Found'}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nX-SSE-Recorder: unmatched\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
            self._record(Served(request.method, request.target, None, status, "unmatched",
                                explanation))
            return True
        self.active_streams += 1
        try:
            ending = await self._play(found, request, writer)
        finally:
            self.active_streams -= 1
        assert found.response is not None
        self._record(Served(request.method, request.target, found.id, found.response.status,
                            ending))
        wants_close = (header_value(request.headers, "connection") or "").lower() == "close"
        return ending == "clean" and _framing(found) != "close" and not wants_close

    async def _play(
        self, interaction: Interaction, request: IncomingRequest, writer: asyncio.StreamWriter
    ) -> str:
        assert interaction.response is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        timing = self.options.timing
        framing = _framing(interaction)
        chunks = self._chunks(interaction)
        schedule = Schedule(timing)
        resume_from = header_value(request.headers, "last-event-id")
        if resume_from is not None and interaction.is_sse:
            chunks, origin_ns = await self._resume(interaction, chunks, resume_from)
            schedule = Schedule(timing, origin_ns)
        head_due = 0.0 if resume_from is not None else schedule.due(interaction.head_offset_ns or 0)
        await self._wait_until(loop, start + head_due)
        writer.write(self._head(interaction, framing))
        sent = 0
        try:
            async for chunk in chunks:
                if not chunk.data:
                    continue
                due = start + schedule.due(chunk.offset_ns)
                if due > loop.time():
                    await self._wait_until(loop, due)
                if framing == "chunked":
                    writer.write(b"%x\r\n%b\r\n" % (len(chunk.data), chunk.data))
                else:
                    writer.write(chunk.data)
                sent += 1
                if timing.instant and sent % INSTANT_YIELD_EVERY == 0:
                    await writer.drain()
                    await asyncio.sleep(0)  # fairness: every stream makes progress
                elif writer.transport.get_write_buffer_size() > 64 * 1024:
                    await writer.drain()
            if interaction.end_offset_ns is not None and interaction.end_reason is not (
                EndReason.CLEAN
            ):
                await self._wait_until(loop, start + schedule.due(interaction.end_offset_ns))
            return await self._end(interaction, framing, writer)
        except ConnectionError:
            return "client-gone"

    async def _end(
        self, interaction: Interaction, framing: str, writer: asyncio.StreamWriter
    ) -> str:
        reason = interaction.end_reason
        if reason is EndReason.CLEAN:
            if framing == "chunked":
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            if framing == "close":
                writer.close()
                return "closed"
            return "clean"
        if reason is EndReason.UPSTREAM_RESET:
            _reset(writer)
            return "reset"
        await writer.drain()
        writer.close()  # FIN before the body's end: the client sees a truncated body
        return "closed"

    def _head(self, interaction: Interaction, framing: str) -> bytes:
        response = interaction.response
        assert response is not None
        lines = [f"HTTP/1.1 {response.status} {response.reason or 'OK'}"]
        lines += [f"{k}: {v}" for k, v in response.headers
                  if k.lower() not in _HOP_BY_HOP and not k.startswith(":")]
        if framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        elif framing == "length":
            recorded = header_value(response.headers, "content-length")
            length = recorded if interaction.end_reason is not EndReason.CLEAN else str(
                interaction.body_size
            )
            lines.append(f"Content-Length: {length}")
        else:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _wait_until(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """Sleep until `due`. asyncio wakes up to 1 ms late (epoll's millisecond timeout),
        so while few streams are active, wake early and poll the loop for the rest."""
        delay = due - loop.time()
        if delay <= 0:
            return
        if self.active_streams > PRECISE_MAX_STREAMS:
            await asyncio.sleep(delay)
            return
        if delay > PRECISE_WINDOW:
            await asyncio.sleep(delay - PRECISE_WINDOW)
        while loop.time() < due:
            await asyncio.sleep(0)

    # -- chunk sources ---------------------------------------------------------------------

    async def _chunks(self, interaction: Interaction) -> AsyncIterator[Chunk]:
        if interaction.body_size > CACHE_LIMIT:
            async for chunk in self.cassette.chunks(interaction.id):
                yield chunk
            return
        cached = self._cache.get(interaction.id)
        if cached is None:
            lock = self._cache_locks.setdefault(interaction.id, asyncio.Lock())
            async with lock:
                cached = self._cache.get(interaction.id)
                if cached is None:
                    cached = [c async for c in self.cassette.chunks(interaction.id)]
                    self._cache[interaction.id] = cached
        for chunk in cached:
            yield chunk

    async def _resume(
        self, interaction: Interaction, chunks: AsyncIterator[Chunk], last_id: str
    ) -> tuple[AsyncIterator[Chunk], int]:
        """Skip to just after the event whose id is `last_id`, keeping the gaps from there.

        The stream is re-parsed up to that event, so a chunk holding its end and the start
        of the next event is cut there. An unknown id replays from the start."""
        if not any(e.id == last_id for e in await self.cassette.events(interaction.id)):
            log.info("Last-Event-ID %r is not in #%d: replaying from the start", last_id,
                     interaction.id)
            return chunks, 0
        parser = SSEParser()
        position = 0
        iterator = chunks.__aiter__()
        async for chunk in iterator:
            items = parser.feed(chunk.data)
            end = next((i.end for i in items if isinstance(i, Event) and i.id == last_id), None)
            position += len(chunk.data)
            if end is not None:
                rest = chunk.data[len(chunk.data) - (position - end):]
                if rest.startswith(b"\n") and chunk.data[: len(chunk.data) - len(rest)].endswith(
                    b"\r"
                ):
                    rest = rest[1:]  # the LF of the CRLF that ended the event
                return _prepend(Chunk(chunk.seq, chunk.offset_ns, rest), iterator), chunk.offset_ns
        return _empty(), 0


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    yield first
    async for chunk in rest:
        yield chunk


async def _empty() -> AsyncIterator[Chunk]:
    return
    yield  # pragma: no cover - makes this an async generator

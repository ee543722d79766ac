"""The replay server: serves a cassette back over HTTP/1.1 with the recorded timing.

Requests are parsed with h11; responses are written by hand so the wire shows exactly
what was recorded: one HTTP chunk per recorded chunk (or raw bytes for Content-Length
and close-delimited bodies), each its own write with TCP_NODELAY, due at
`start + offset / speed` on an absolute schedule, and the recorded ending: terminating
chunk, FIN without it, or RST. With --instant nothing waits, so chunks go out a batch per
write (HTTP chunks keep their boundaries; the transport merges raw bytes anyway) and
concurrent streams take turns. Small interactions are cached after first use; large ones
stream from SQLite a page at a time, so the first byte never waits for the whole file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import h11

from sse_recorder.errors import ConfigError
from sse_recorder.faults.run import Ending, FaultPlan, FaultRun, HttpError, Piece, split_at_events
from sse_recorder.model import Chunk, Interaction, Outcome, body_framing, header_value
from sse_recorder.replay.matching import IncomingRequest, MatchConfig, Matcher, Miss
from sse_recorder.replay.records import Answer, Served
from sse_recorder.replay.schedule import Schedule, Timing
from sse_recorder.sse import Event, SSEParser
from sse_recorder.store.cassette import CHUNK_PAGE, Cassette

log = logging.getLogger("sse_recorder.replay")

CACHE_LIMIT = 8 << 20  # interactions with bodies up to this size are kept in memory
MAX_REQUEST_BODY = 64 << 20
PRECISE_WINDOW = 0.0015  # wake this early and finish the wait by polling the loop
PRECISE_MAX_STREAMS = 32  # above this many active streams, plain timers (CPU matters more)
WRITE_BUFFER_HIGH = 64 * 1024  # drain above this many bytes queued in the transport
INSTANT_BATCH = 4 * 1024  # instant mode: bytes per write, then other streams take a turn
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "proxy-connection", "upgrade", "te", "trailer"}


@dataclass(frozen=True)
class ReplayOptions:
    timing: Timing = field(default_factory=Timing)
    match: MatchConfig = field(default_factory=MatchConfig)
    faults: FaultPlan = field(default_factory=FaultPlan)
    fault_log: Path | None = None  # JSON lines: one per response, with the faults that fired


def _framing(interaction: Interaction) -> str:
    """How the recorded body was delimited: chunked, length or close."""
    assert interaction.response is not None
    return body_framing(interaction.response)


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
        self._batch_cache: dict[int, list[bytes]] = {}  # instant mode's writes, see `_batches`
        self._cache_locks: dict[int, asyncio.Lock] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.active_streams = 0
        self._responses = 0  # numbers responses for fault seeding: same order, same faults
        self._fault_log: IO[str] | None = None

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
        if self.options.fault_log is not None and self._fault_log is None:
            self._fault_log = open(self.options.fault_log, "a", encoding="utf-8")  # noqa: SIM115
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
        if self._fault_log is not None:
            self._fault_log.close()
            self._fault_log = None
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
                # The parser has nothing more to say until the next request (responses never
                # go through it): keep what the loop needs and let it go while a long stream
                # plays, which saves memory per open stream.
                must_close = conn.our_state is h11.MUST_CLOSE
                leftover, closed = conn.trailing_data
                del conn
                keep_alive = await self._respond(request, reader, writer)
                if not keep_alive or must_close:
                    break
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
                if leftover:  # a pipelined request already read
                    conn.receive_data(bytes(leftover))
                if closed:  # receive_data(b"") means end of stream: only when it was
                    conn.receive_data(b"")
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
            self._record(Served("?", "?", None, status, Outcome.CLEAN, Answer.BAD_REQUEST,
                                str(exc), time=time.time()))
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

    async def _respond(
        self, request: IncomingRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        number = self._responses
        self._responses += 1
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
            self._served(Served(request.method, request.target, None, status, Outcome.CLEAN,
                                Answer.UNMATCHED, explanation, number))
            return True
        resumed = header_value(request.headers, "last-event-id") is not None
        path = request.target.split("?", 1)[0]
        run = self.options.faults.for_connection(number, request.method, request.host, path,
                                                 resumed)
        self.active_streams += 1
        try:
            status, answer, outcome = await self._answer(found, request, reader, writer, run)
        finally:
            self.active_streams -= 1
        self._served(Served(request.method, request.target, found.id, status, outcome, answer,
                            number=number, faults=tuple(run.log)))
        wants_close = (header_value(request.headers, "connection") or "").lower() == "close"
        return outcome is Outcome.CLEAN and _framing(found) != "close" and not wants_close

    def _served(self, served: Served) -> None:
        served = dataclasses.replace(served, time=time.time())
        self._record(served)
        if self._fault_log is not None:
            self._fault_log.write(served.json_line() + "\n")
            self._fault_log.flush()

    async def _answer(
        self, interaction: Interaction, request: IncomingRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, run: FaultRun,
    ) -> tuple[int, Answer, Outcome]:
        """Faults that replace the response, else the recorded response (maybe faulted)."""
        assert interaction.response is not None
        if run.refuse():
            _reset(writer)
            return 0, Answer.FAULT, Outcome.RESET
        if run.no_head():
            await _until_closed(reader)
            return 0, Answer.FAULT, Outcome.STALLED
        error = run.http_error()
        if error is not None:
            writer.write(_error_response(error))
            await writer.drain()
            return error.status, Answer.FAULT, Outcome.CLEAN
        return interaction.response.status, Answer.RECORDED, await self._play(
            interaction, request, reader, writer, run
        )

    async def _play(
        self, interaction: Interaction, request: IncomingRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, run: FaultRun,
    ) -> Outcome:
        assert interaction.response is not None
        loop = asyncio.get_running_loop()
        start = time.monotonic()  # the schedule's clock: loop.time() is whole ms on uvloop
        timing = self.options.timing
        framing = _framing(interaction)
        chunks: AsyncIterator[Chunk] | None = None  # None: the whole body (see `_pages`)
        schedule = Schedule(timing)
        skipped = 0
        resumed = None
        resume_from = header_value(request.headers, "last-event-id")
        if resume_from is not None and interaction.is_sse:
            resumed = await self._resume(interaction, self._chunks(interaction), resume_from)
        if resumed is not None:
            chunks, origin_ns, skipped = resumed
            schedule = Schedule(timing, origin_ns)
            start = time.monotonic()  # the recorded gaps count from here, however long it took
            head_due = 0.0
        else:
            head_due = schedule.due(interaction.head_offset_ns or 0)
        if run.chosen:
            if chunks is None:
                chunks = self._chunks(interaction)
            return await self._play_faulted(interaction, framing, chunks, schedule, start,
                                            head_due, skipped, reader, writer, run)
        if chunks is None and interaction.body_size <= CACHE_LIMIT:
            await self._cached(interaction)  # a first use reads the body while the head waits
        await self._wait_until(loop, start + head_due)
        # The hot loops run once per chunk per stream: a cached body is a plain list.
        transport = writer.transport
        transport.write(self._head(interaction, framing, skipped))
        chunked = framing == "chunked"
        try:
            if timing.instant:
                since_turn = 0  # bytes written since other connections last had a turn
                async for batches in self._batches(interaction, chunks, chunked):
                    for batch in batches:
                        transport.write(batch)
                        if transport.is_closing():
                            return Outcome.CLIENT_GONE  # a send failed: the client went away
                        if transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
                            await writer.drain()
                        since_turn += len(batch)
                        # Fairness: other connections run after every batch; a stream alone
                        # still lets the loop accept new ones now and then.
                        if len(self._tasks) > 1 or since_turn >= WRITE_BUFFER_HIGH:
                            since_turn = 0
                            await asyncio.sleep(0)
            else:
                async for page in self._pages(interaction, chunks):
                    for chunk in page:
                        if not chunk.data:
                            continue
                        due = start + schedule.due(chunk.offset_ns)
                        if due > time.monotonic():
                            await self._wait_until(loop, due)
                        transport.write(_frame(chunk.data) if chunked else chunk.data)
                        if transport.is_closing():
                            return Outcome.CLIENT_GONE
                        if transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
                            await writer.drain()
            if interaction.end_offset_ns is not None and interaction.outcome is not (
                Outcome.CLEAN
            ):
                await self._wait_until(loop, start + schedule.due(interaction.end_offset_ns))
            return await self._end(interaction, framing, writer)
        except ConnectionError:
            return Outcome.CLIENT_GONE

    async def _play_faulted(
        self, interaction: Interaction, framing: str, chunks: AsyncIterator[Chunk],
        schedule: Schedule, start: float, head_due: float, skipped: int,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: FaultRun,
    ) -> Outcome:
        """The recorded stream through the connection's faults. The transform is pure, so
        the whole plan is computed first (the body is read whole; fine for fault runs)."""
        loop = asyncio.get_running_loop()
        timed = [(schedule.due(c.offset_ns), c.data) async for c in chunks if c.data]
        pieces: Iterable[Piece] = (
            split_at_events(timed) if run.needs_events() else (Piece(d, b) for d, b in timed)
        )
        actions = list(run.transform(pieces))
        cut = any(isinstance(a, Ending) for a in actions)
        length = None
        if framing == "length" and not cut:
            length = sum(len(a.data) for a in actions if isinstance(a, Piece))
        # Pieces are due from the request's start, like the head (not from the head): a head
        # delay shifts both. When reading and transforming the body took longer than the
        # recorded head offset, the schedule starts late rather than bursting to catch up
        # (which would break a throttle's cap and shorten every planned gap).
        start = max(start, time.monotonic() - head_due)
        delay = run.head_delay()
        await self._wait_until(loop, start + head_due + delay)
        writer.write(self._head(interaction, framing, skipped, length))
        try:
            for action in actions:
                await self._wait_until(loop, start + delay + action.due)
                if isinstance(action, Ending):
                    return await _cut_short(action.outcome, writer, reader)
                if not action.data:
                    continue
                if framing == "chunked":
                    writer.write(b"%x\r\n%b\r\n" % (len(action.data), action.data))
                else:
                    writer.write(action.data)
                if writer.transport.is_closing():
                    return Outcome.CLIENT_GONE
                if writer.transport.get_write_buffer_size() > 64 * 1024:
                    await writer.drain()
            return await self._end(interaction, framing, writer)
        except ConnectionError:
            return Outcome.CLIENT_GONE

    async def _end(
        self, interaction: Interaction, framing: str, writer: asyncio.StreamWriter
    ) -> Outcome:
        if interaction.outcome is Outcome.CLEAN:
            if framing == "chunked":
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            if framing != "close":
                return Outcome.CLEAN
            writer.close()  # close-delimited: the close is the body's end
            return Outcome.CLEAN
        # Otherwise a FIN before the body's end (the client sees it truncated), or an RST.
        return await _cut_short(interaction.outcome.as_replayed, writer)

    def _head(
        self, interaction: Interaction, framing: str, skipped: int = 0, length: int | None = None
    ) -> bytes:
        response = interaction.response
        assert response is not None
        lines = [f"HTTP/1.1 {response.status} {response.reason or 'OK'}"]
        lines += [f"{k}: {v}" for k, v in response.headers
                  if k.lower() not in _HOP_BY_HOP and not k.startswith(":")]
        if framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        elif framing == "length":
            recorded = header_value(response.headers, "content-length")
            declared = (
                int(recorded) if recorded is not None and recorded.strip().isdigit()
                and interaction.outcome is not Outcome.CLEAN else interaction.body_size
            )
            if length is None:
                length = declared - skipped  # resumed: what is left
            lines.append(f"Content-Length: {length}")
        else:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _wait_until(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """Sleep until `due`, a `time.monotonic()` time. asyncio wakes up to 1 ms late (epoll's
        millisecond timeout), so while few streams are active, wake early and poll the loop for
        the rest. uvloop's timers and its `loop.time()` have millisecond steps: a timer can
        fire up to 1 ms early, hence the clock read here and the sleep again if early."""
        delay = due - time.monotonic()
        if delay <= 0:
            return
        if self.active_streams > PRECISE_MAX_STREAMS:
            while delay > 0:
                await asyncio.sleep(delay)
                delay = due - time.monotonic()
            return
        if delay > PRECISE_WINDOW:
            await asyncio.sleep(delay - PRECISE_WINDOW)
        while time.monotonic() < due:
            await asyncio.sleep(0)

    # -- chunk sources ---------------------------------------------------------------------

    async def _chunks(self, interaction: Interaction) -> AsyncIterator[Chunk]:
        if interaction.body_size > CACHE_LIMIT:
            async for chunk in self.cassette.chunks(interaction.id):
                yield chunk
            return
        for chunk in await self._cached(interaction):
            yield chunk

    async def _cached(self, interaction: Interaction) -> list[Chunk]:
        """A small interaction's chunks, read from the cassette once and shared."""
        cached = self._cache.get(interaction.id)
        if cached is None:
            lock = self._cache_locks.setdefault(interaction.id, asyncio.Lock())
            async with lock:
                cached = self._cache.get(interaction.id)
                if cached is None:
                    cached = [c async for c in self.cassette.chunks(interaction.id)]
                    self._cache[interaction.id] = cached
        return cached

    async def _pages(
        self, interaction: Interaction, chunks: AsyncIterator[Chunk] | None
    ) -> AsyncIterator[list[Chunk]]:
        """`chunks` (None: the whole body) in lists, so that the per-chunk loop is a plain
        `for`: a cached body at once, without a copy; otherwise a cassette page at a time."""
        if chunks is None:
            if interaction.body_size <= CACHE_LIMIT:
                yield await self._cached(interaction)
                return
            chunks = self._chunks(interaction)
        page: list[Chunk] = []
        async for chunk in chunks:
            page.append(chunk)
            if len(page) == CHUNK_PAGE:
                yield page
                page = []
        if page:
            yield page

    async def _batches(
        self, interaction: Interaction, chunks: AsyncIterator[Chunk] | None, chunked: bool
    ) -> AsyncIterator[list[bytes]]:
        """Instant mode's writes for `chunks` (None: the whole body), in lists like `_pages`.
        A cached body's are made once and shared by every stream (about the body's size
        again in memory)."""
        if chunks is None and interaction.body_size <= CACHE_LIMIT:
            batches = self._batch_cache.get(interaction.id)
            if batches is None:
                batches = _batched(await self._cached(interaction), chunked)
                self._batch_cache[interaction.id] = batches
            yield batches
            return
        async for page in self._pages(interaction, chunks):
            yield _batched(page, chunked)

    async def _resume(
        self, interaction: Interaction, chunks: AsyncIterator[Chunk], last_id: str
    ) -> tuple[AsyncIterator[Chunk], int, int] | None:
        """Skip to just after the event whose id is `last_id`, keeping the gaps from there.

        The stream is re-parsed up to that event, so a chunk holding its end and the start
        of the next event is cut there. Returns the chunks left, the offset the schedule
        counts from and how many body bytes were skipped; None for an unknown id (the
        caller replays from the start)."""
        if not any(e.id == last_id for e in await self.cassette.events(interaction.id)):
            log.info("Last-Event-ID %r is not in #%d: replaying from the start", last_id,
                     interaction.id)
            return None
        parser = SSEParser()
        position = 0
        iterator = chunks.__aiter__()
        async for chunk in iterator:
            items = parser.feed(chunk.data)
            end = next((i.end for i in items if isinstance(i, Event) and i.id == last_id), None)
            position += len(chunk.data)
            if end is None:
                continue
            cut = len(chunk.data) - (position - end)
            skipped = end
            left = [Chunk(chunk.seq, chunk.offset_ns, chunk.data[cut:])]
            if chunk.data[:cut].endswith(b"\r"):
                # The event ended with a CR: the LF of that CRLF (in this chunk or, when the
                # CRLF was split, in the next one) belongs to what was skipped.
                if not left[0].data:
                    following = await anext(iterator, None)
                    if following is not None:
                        left.append(following)
                first = next((c for c in left if c.data), None)
                if first is not None and first.data.startswith(b"\n"):
                    index = left.index(first)
                    left[index] = Chunk(first.seq, first.offset_ns, first.data[1:])
                    skipped += 1
            return _prepend(left, iterator), chunk.offset_ns, skipped
        return _empty(), 0, interaction.body_size


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _batched(chunks: list[Chunk], chunked: bool) -> list[bytes]:
    """Instant mode's writes: chunks framed and joined up to INSTANT_BATCH bytes, so that a
    stream costs one send per batch rather than one per chunk."""
    batches: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        if chunk.data:
            batch.append(_frame(chunk.data) if chunked else chunk.data)
            size += len(batch[-1])
            if size >= INSTANT_BATCH:
                batches.append(b"".join(batch))
                batch.clear()
                size = 0
    if batch:
        batches.append(b"".join(batch))
    return batches


async def _prepend(first: list[Chunk], rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


async def _empty() -> AsyncIterator[Chunk]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Hold a connection open, sending nothing, until the client goes away."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


async def _cut_short(
    outcome: Outcome, writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None = None
) -> Outcome:
    """End a response now: CLOSED (FIN), RESET (RST) or STALLED (hold it open, silent, until
    the client leaves; needs `reader`). What was written goes out first."""
    if outcome is Outcome.STALLED:
        assert reader is not None
        await writer.drain()
        await _until_closed(reader)
        return outcome
    if outcome is Outcome.RESET:
        writer.transport.set_write_buffer_limits(high=0)
        await writer.drain()
        _reset(writer)
        return outcome
    await writer.drain()
    writer.close()
    return Outcome.CLOSED


def _error_response(error: HttpError) -> bytes:
    lines = [f"HTTP/1.1 {error.status} {error.reason}"]
    lines += [f"{k}: {v}" for k, v in error.headers]
    lines.append(f"Content-Length: {len(error.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + error.body


LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str = "asyncio") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to replay on, for `asyncio.Runner(loop_factory=...)`.

    uvloop is optional (not a dependency): it is imported only when asked for. None means
    asyncio's own loop."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("the uvloop event loop needs uvloop: pip install uvloop") from None
        return uvloop.new_event_loop
    raise ConfigError(f"unknown event loop {name!r}: choose one of {', '.join(LOOPS)}")

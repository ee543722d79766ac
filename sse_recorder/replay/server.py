"""The replay server: serves a cassette back over HTTP/1.1 with the recorded timing.

Rules:
- requests are read with h11 (`wire/requests.py`); responses are written by hand, so the
  wire shows exactly what was recorded (`replay/play.py`, `wire/responses.py`);
- each request is matched, answered (unmatched: 404/409 with an explanation; a fault may
  answer instead; else the recording, maybe faulted) and reported as one `Served` record;
- a connection carries the next request only after a clean, framed response when the
  client did not ask to close; a malformed request gets a 4xx and the close;
- faults are drawn per response number, so the same requests in the same order meet the
  same faults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import h11

from sse_recorder.errors import ConfigError
from sse_recorder.faults import FaultPlan, FaultRun
from sse_recorder.model import Interaction, Outcome, header_value
from sse_recorder.replay.matching import IncomingRequest, MatchConfig, Matcher, Miss
from sse_recorder.replay.play import Load, Player, writer_for
from sse_recorder.replay.records import Answer, Served
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.sources import Bodies
from sse_recorder.store.cassette import Cassette
from sse_recorder.wire import responses
from sse_recorder.wire.connections import base_url, reset
from sse_recorder.wire.endings import until_closed
from sse_recorder.wire.requests import BadRequest, read_request

__all__ = ["LOOPS", "ReplayOptions", "ReplayServer", "loop_factory"]

MAX_HEAD = 64 * 1024  # request heads (h11's max_incomplete_event_size)
WRITE_BUFFER_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ReplayOptions:
    timing: Timing = field(default_factory=Timing)
    match: MatchConfig = field(default_factory=MatchConfig)
    faults: FaultPlan = field(default_factory=FaultPlan)
    fault_log: Path | None = None  # JSON lines: one per response, with the faults that fired


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
        self.load = Load()
        self.player = Player(Bodies(cassette), self.options.timing, self.load)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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
        return base_url(self.host, self.port)

    @property
    def active_streams(self) -> int:
        """Responses being answered right now."""
        return self.load.streams

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
        self.load.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_LIMIT)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                request = await self._read(conn, reader, writer)
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
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                if leftover:  # a pipelined request already read
                    conn.receive_data(bytes(leftover))
                if closed:  # receive_data(b"") means end of stream: only when it was
                    conn.receive_data(b"")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self.load.connections -= 1
            if not writer.transport.is_closing():
                writer.close()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> IncomingRequest | None:
        """The next request, or None when the connection is done (closed, or malformed
        input answered with a 4xx)."""
        try:
            request = await read_request(conn, reader)
        except BadRequest as exc:
            writer.write(responses.bad_request(exc.status, str(exc)))
            self._record(Served("?", "?", None, exc.status, Outcome.CLEAN, Answer.BAD_REQUEST,
                                str(exc), time=time.time()))
            return None
        if request is None:
            return None
        host = (header_value(request.headers, "host") or "").rsplit(":", 1)[0]
        return IncomingRequest(request.method, request.target, request.headers, request.body,
                               host=host)

    def _record(self, served: Served) -> None:
        self.served.append(served)
        if self.on_served is not None:
            self.on_served(served)

    # -- dispatch --------------------------------------------------------------------------

    async def _respond(
        self, request: IncomingRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Match, answer and report one request; True when the connection can carry another."""
        number = self._responses
        self._responses += 1
        found = self.matcher.match(request)
        if isinstance(found, Miss):
            explanation = found.explain(request)
            status, response = responses.unmatched(explanation, found.exhausted)
            writer.write(response)
            await writer.drain()
            self._served(Served(request.method, request.target, None, status, Outcome.CLEAN,
                                Answer.UNMATCHED, explanation, number))
            return True
        last_event_id = header_value(request.headers, "last-event-id")
        path = request.target.split("?", 1)[0]
        run = self.options.faults.for_connection(number, request.method, request.host, path,
                                                 last_event_id is not None)
        self.load.streams += 1
        try:
            status, answer, outcome = await self._answer(found, last_event_id, reader, writer,
                                                         run)
        finally:
            self.load.streams -= 1
        self._served(Served(request.method, request.target, found.id, status, outcome, answer,
                            number=number, faults=tuple(run.log)))
        wants_close = (header_value(request.headers, "connection") or "").lower() == "close"
        return outcome is Outcome.CLEAN and not writer_for(found).closes and not wants_close

    def _served(self, served: Served) -> None:
        served = dataclasses.replace(served, time=time.time())
        self._record(served)
        if self._fault_log is not None:
            self._fault_log.write(served.json_line() + "\n")
            self._fault_log.flush()

    async def _answer(
        self, interaction: Interaction, last_event_id: str | None,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: FaultRun,
    ) -> tuple[int, Answer, Outcome]:
        """Faults that replace the response, else the recorded response (maybe faulted)."""
        assert interaction.response is not None
        if run.refuse():
            reset(writer)
            return 0, Answer.FAULT, Outcome.RESET
        if run.no_head():
            await until_closed(reader)
            return 0, Answer.FAULT, Outcome.STALLED
        error = run.http_error()
        if error is not None:
            writer.write(responses.whole(error.status, error.reason, error.headers, error.body))
            await writer.drain()
            return error.status, Answer.FAULT, Outcome.CLEAN
        return interaction.response.status, Answer.RECORDED, await self.player.play(
            interaction, last_event_id, reader, writer, run
        )


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

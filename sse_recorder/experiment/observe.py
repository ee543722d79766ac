"""The tap: a loopback relay in front of a run's replay server that writes down each exchange.

The replay server's `Served` records say what was matched and which faults fired; what a
verdict also needs is what crossed the wire: when each request arrived, the `Last-Event-ID`
it carried, which events its response delivered, the `Retry-After` and `retry:` the client
was told, and when and how the response ended. The tap relays bytes unchanged in both
directions (a reset is passed on as a reset, a half-close as a half-close) and reads them
with h11, one parser per direction, so no HTTP parsing is written here. Should h11 refuse
what it sees (a fault may send anything), the tap stops reading that connection and goes
on relaying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h11

from sse_recorder.sse import Event, SSEParser
from sse_recorder.wire.connections import base_url, stop_serving

READ_SIZE = 65536


@dataclass
class Exchange:
    """One request and its response, as the tap saw them (times in seconds from `t0`)."""

    connection: int
    started: float
    method: str
    target: str
    last_event_id: str | None
    status: int = 0  # 0: no response head
    retry_after: float | None = None  # the response's Retry-After, in seconds
    sse: bool = False
    events: list[Event] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    retry_ms: int | None = None  # the last `retry:` this response carried
    ended: float | None = None
    ending: str = ""  # complete, closed, reset, client-left


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return float(value.decode().strip())
            except ValueError:
                return None  # an HTTP date: not measured
    return None


def _header(headers: Sequence[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


class _Watch:
    """Reads one connection's two byte streams; h11 in the server role reads requests, in
    the client role responses, and each is told what the other saw so both advance."""

    def __init__(self, number: int, clock: Callable[[], float], out: list[Exchange]) -> None:
        self.number = number
        self.clock = clock
        self.out = out
        self.requests = h11.Connection(h11.SERVER)
        self.responses = h11.Connection(h11.CLIENT)
        self.current: Exchange | None = None
        self.parser: SSEParser | None = None
        self.broken = False

    def from_client(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.requests.receive_data(data)
            self._requests()
        except h11.ProtocolError:
            self.broken = True

    def from_server(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.responses.receive_data(data)
            self._responses()
        except h11.ProtocolError:
            self.broken = True

    def _requests(self) -> None:
        while True:
            event = self.requests.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                self.current = Exchange(
                    self.number, self.clock(), event.method.decode(), event.target.decode(),
                    _header(event.headers, b"last-event-id"))
                self.out.append(self.current)
                self.parser = None
            self.responses.send(event)  # type: ignore[arg-type]

    def _responses(self) -> None:
        while True:
            event = self.responses.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                return
            exchange = self.current
            if isinstance(event, h11.Response) and exchange is not None:
                exchange.status = event.status_code
                exchange.retry_after = _retry_after(event.headers)
                exchange.sse = "event-stream" in (_header(event.headers, b"content-type") or "")
                self.parser = SSEParser() if exchange.sse else None
            elif isinstance(event, h11.Data) and exchange is not None and self.parser:
                now = self.clock()
                for item in self.parser.feed(bytes(event.data)):
                    if isinstance(item, Event):
                        exchange.events.append(item)
                        exchange.event_times.append(now)
                exchange.retry_ms = self.parser.reconnection_time
            self.requests.send(event)  # type: ignore[arg-type]
            if isinstance(event, h11.EndOfMessage):
                self._end("complete")
                if (self.requests.our_state is h11.DONE
                        and self.requests.their_state is h11.DONE):
                    self.requests.start_next_cycle()
                    self.responses.start_next_cycle()
                    self._requests()  # a pipelined request already read

    def _end(self, how: str) -> None:
        if self.current is not None and self.current.ended is None:
            self.current.ended = self.clock()
            self.current.ending = how

    def closed(self, how: str) -> None:
        """The connection ended: an exchange still open ended `how`."""
        if not self.broken and how == "closed":
            with contextlib.suppress(h11.ProtocolError):
                self.responses.receive_data(b"")  # a close-delimited body completes
                self._responses()
        self._end(how)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as the replay server does for `how=rst`."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Tap:
    """Relay 127.0.0.1:<port> to the replay server at (host, port), recording `exchanges`."""

    def __init__(self, host: str, port: int, t0: float | None = None) -> None:
        self.upstream = (host, port)
        self.t0 = time.monotonic() if t0 is None else t0
        self.exchanges: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0

    def clock(self) -> float:
        return time.monotonic() - self.t0

    async def start(self) -> Tap:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def base_url(self) -> str:
        return base_url(*self.address)

    async def wind_down(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the relayed connections to end by themselves."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Stop; an exchange still open ends now, as `open`."""
        for exchange in self.exchanges:
            if exchange.ended is None:
                exchange.ended, exchange.ending = self.clock(), "open"
        if self._server is not None:
            await stop_serving([self._server], self._tasks)
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                          ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        watch = _Watch(self._connections, self.clock, self.exchanges)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            self._tasks.discard(task)
            return
        for each in (writer, up_writer):
            sock = each.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upward = asyncio.create_task(self._client_to_server(reader, up_writer, writer, watch))
        try:
            how = await self._server_to_client(up_reader, writer, up_writer, watch)
            watch.closed(how)
        except asyncio.CancelledError:
            pass
        finally:
            upward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upward
            for each in (writer, up_writer):
                if not each.transport.is_closing():
                    each.close()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader,
                                up_writer: asyncio.StreamWriter,
                                writer: asyncio.StreamWriter, watch: _Watch) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                watch.from_client(data)
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            watch.closed("client-left")
            _reset(up_writer)
            return
        watch.closed("client-left")  # the client closed its side: what is open ends here
        if up_writer.can_write_eof() and not up_writer.transport.is_closing():
            with contextlib.suppress(OSError):
                up_writer.write_eof()

    async def _server_to_client(self, up_reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter,
                                watch: _Watch) -> str:
        """Relay the server's bytes until it closes; how it closed."""
        try:
            while data := await up_reader.read(READ_SIZE):
                watch.from_server(data)
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            _reset(writer)
            return "reset"
        except ConnectionError:  # the client went away while the server wrote
            _reset(up_writer)
            return "client-left"
        return "closed"

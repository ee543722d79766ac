"""Paced sends of many streams on one timer: under load, a send costs a heap entry and a
write, not a wake-up of its stream's task.

Each stream's task used to sleep until its next piece was due: a future, a timer and a
task step (its coroutine resumed through every frame of the connection) per piece. With
1,000 streams at 100 events/s that machinery cost as much as the rest of a send, and on a
machine whose CPUs are all busy, every microsecond a send costs lengthens the queue every
stream waits in.

Rules:
- a stream is a list of (seconds from its start, wire bytes), often shared by every stream
  of one recording, a cursor into it and its start on `time.monotonic()`;
- one loop timer, armed for the earliest send due; when it fires, every send due by then
  goes out, earliest first (a stream's pieces due together go out back to back, one write
  each: the recorded chunk boundaries stay);
- a stream leaves the pacer when its pieces are all out, when its client went away, when
  its transport holds more than WRITE_BUFFER_HIGH unsent bytes (its task drains it and comes
  back), or when the server is no longer busy (`busy()`: few streams play, and its task
  sends the rest itself, with precise waits): `send`'s future says which, and the task is
  woken only then;
- a stream whose task was cancelled is dropped when its turn comes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence

from sse_recorder.wire.connections import call_at_monotonic

__all__ = ["CLIENT_GONE", "Pacer"]

CLIENT_GONE = -1  # `send`'s result when a write found the connection closing


class _Stream:
    __slots__ = ("future", "pieces", "sent", "start", "transport")

    def __init__(self, transport: asyncio.WriteTransport, pieces: Sequence[tuple[float, bytes]],
                 sent: int, start: float, future: asyncio.Future[int]) -> None:
        self.transport = transport
        self.pieces = pieces
        self.sent = sent  # pieces out so far: the next one's index
        self.start = start
        self.future = future


class Pacer:
    """The paced sends of one event loop's streams."""

    def __init__(self, write_buffer_high: int, busy: Callable[[], bool] = lambda: True) -> None:
        self._high = write_buffer_high
        self._busy = busy  # asked once per timer: False hands the streams back to their tasks
        self._heap: list[tuple[float, int, _Stream]] = []  # (due, tie-breaker, stream)
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0  # the due time the timer is set for

    async def play(self, pieces: Sequence[tuple[float, bytes]], start: float,
                   writer: asyncio.StreamWriter, first: int = 0) -> int:
        """Send `pieces[first:]`, each at `start` + its due time. Returns how many pieces
        are out: all of them, CLIENT_GONE, or fewer once the server is not busy (the
        caller sends the rest)."""
        sent = first
        while sent < len(pieces):
            sent = await self.send(writer.transport, pieces, sent, start)
            if sent == CLIENT_GONE or writer.transport.get_write_buffer_size() <= self._high:
                break  # gone, done, or handed back
            await writer.drain()  # its buffer is full: drained here, then back in line
        return sent

    def send(self, transport: asyncio.WriteTransport, pieces: Sequence[tuple[float, bytes]],
             first: int, start: float) -> asyncio.Future[int]:
        """Send `pieces[first:]` on schedule. The future's result: how many pieces are out
        (all of them, or fewer: the transport's buffer is over the high mark, or the server
        is no longer busy), or CLIENT_GONE."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        due = start + pieces[first][0]
        heapq.heappush(self._heap, (due, next(self._order),
                                    _Stream(transport, pieces, first, start, future)))
        if self._timer is None or due < self._armed:
            self._arm(due)
        return future

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = call_at_monotonic(due, self._fire)
        self._armed = due

    def _fire(self) -> None:
        """Every send due by now, earliest first; then the timer for the next one. A timer
        that fires early (uvloop's millisecond steps) sends nothing and is set again."""
        self._timer = None
        heap = self._heap
        now = time.monotonic()
        busy = self._busy()
        try:
            while heap and heap[0][0] <= now:
                stream = heapq.heappop(heap)[2]
                self._send_due(stream, now, busy)
        finally:
            if heap:
                self._arm(heap[0][0])

    def _send_due(self, stream: _Stream, now: float, busy: bool) -> None:
        """One stream's pieces due by `now`, then back in the heap (while `busy`) or out of
        the pacer."""
        future = stream.future
        if future.done():  # its task was cancelled
            return
        transport, pieces, sent = stream.transport, stream.pieces, stream.sent
        try:
            while True:
                transport.write(pieces[sent][1])
                sent += 1
                if transport.is_closing():
                    future.set_result(CLIENT_GONE)
                    return
                if sent == len(pieces) or transport.get_write_buffer_size() > self._high:
                    future.set_result(sent)
                    return
                due = stream.start + pieces[sent][0]
                if due > now:
                    if not busy:  # few streams: its task waits for the rest precisely
                        future.set_result(sent)
                        return
                    stream.sent = sent
                    heapq.heappush(self._heap, (due, next(self._order), stream))
                    return
        except Exception as exc:  # for the stream's task to report: the others go on
            future.set_exception(exc)

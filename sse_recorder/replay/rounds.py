"""Instant streams written from one callback, each taking a turn per round.

`--instant` sends a body as fast as the client takes it, in writes of about 8 KiB, and every
stream must get a share from the start (the fairness `bench/replay_bench.py` part 3
measures). Each stream's task used to yield to the loop after each turn: a task step through
every frame of the connection, per turn, which cost the replay about a sixth of its CPU
against a server that never turns.

Rules:
- a round, one loop callback, gives every stream in it one turn: writes up to `turn` bytes
  (`lone_turn` when it is alone in the round), then the loop runs (accepts, reads, drains,
  paced sends) before the next round;
- a stream leaves the rounds when its writes are all out, when its client went away, or when
  its transport holds more than the high mark (its task drains it and comes back): `send`'s
  future says which, and the task is woken only then;
- a stream whose task was cancelled is dropped at its next turn; a write that raises reaches
  its own stream only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from sse_recorder.replay.pacer import CLIENT_GONE

__all__ = ["Rounds"]


class _Stream:
    __slots__ = ("future", "sent", "transport", "writes")

    def __init__(self, transport: asyncio.WriteTransport, writes: Sequence[bytes], sent: int,
                 future: asyncio.Future[int]) -> None:
        self.transport = transport
        self.writes = writes
        self.sent = sent  # writes out so far: the next one's index
        self.future = future


class Rounds:
    """The instant streams of one event loop."""

    def __init__(self, turn: int, lone_turn: int, write_buffer_high: int) -> None:
        self._turn = turn
        self._lone_turn = lone_turn
        self._high = write_buffer_high
        self._streams: deque[_Stream] = deque()
        self._scheduled = False

    async def play(self, writes: Sequence[bytes], writer: asyncio.StreamWriter) -> bool:
        """Write `writes` in turns; True when the client went away."""
        sent = 0
        while sent < len(writes):
            sent = await self.send(writer.transport, writes, sent)
            if sent == CLIENT_GONE:
                return True
            if sent < len(writes):  # its buffer is full: drained here, then back in turn
                await writer.drain()
        return False

    def send(self, transport: asyncio.WriteTransport, writes: Sequence[bytes],
             first: int) -> asyncio.Future[int]:
        """Write `writes[first:]` in turns. The future's result: how many writes are out
        (all of them, or fewer: the transport's buffer is over the high mark), or
        CLIENT_GONE."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._streams.append(_Stream(transport, writes, first, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._round)
        return future

    def _round(self) -> None:
        """One turn for every stream in the rounds, in the order they came."""
        streams = self._streams
        turn = self._turn if len(streams) > 1 else self._lone_turn
        for _ in range(len(streams)):
            stream = streams.popleft()
            if not stream.future.done() and self._take_turn(stream, turn):
                streams.append(stream)
        self._scheduled = bool(streams)
        if streams:
            asyncio.get_running_loop().call_soon(self._round)

    def _take_turn(self, stream: _Stream, turn: int) -> bool:
        """Up to `turn` bytes of one stream; whether it stays in the rounds."""
        transport, writes, sent, future = (stream.transport, stream.writes, stream.sent,
                                           stream.future)
        written = 0
        try:
            while True:
                data = writes[sent]
                transport.write(data)
                sent += 1
                written += len(data)
                if transport.is_closing():
                    future.set_result(CLIENT_GONE)
                    return False
                if sent == len(writes) or transport.get_write_buffer_size() > self._high:
                    future.set_result(sent)
                    return False
                if written >= turn:
                    stream.sent = sent
                    return True
        except Exception as exc:  # for the stream's task to report: the others go on
            future.set_exception(exc)
            return False

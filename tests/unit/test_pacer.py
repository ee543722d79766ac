"""`replay.pacer.Pacer`: many paced streams on one timer, over real sockets.

Each stream writes to one end of a socket pair (asyncio transports on real sockets, no
mocks); the other end is read by a task that notes when each byte arrived.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.replay.pacer import CLIENT_GONE, Pacer


class Pair:
    """A socket pair: `writer` for the pacer, and what the far end received, with times."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                 far: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.reader = reader
        self.far = far  # the far end's own writer, kept: dropped, it would close that end
        self.received: list[tuple[float, bytes]] = []

    @classmethod
    async def open(cls, send_buffer: int | None = None) -> Pair:
        near, far = socket.socketpair()
        if send_buffer is not None:
            near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        _, writer = await asyncio.open_connection(sock=near)
        reader, far_writer = await asyncio.open_connection(sock=far)
        return cls(writer, reader, far_writer)

    async def read(self, size: int) -> bytes:
        """Until `size` bytes came, each read noted with its time."""
        got = 0
        while got < size:
            data = await self.reader.read(65536)
            assert data, "closed early"
            self.received.append((time.monotonic(), data))
            got += len(data)
        return b"".join(d for _, d in self.received)

    def close(self) -> None:
        self.writer.close()
        self.far.close()


def pieces_of(gaps_ms: list[int], sizes: list[int], tag: int) -> list[tuple[float, bytes]]:
    due, out = 0.0, []
    for i, (gap, size) in enumerate(zip(gaps_ms, sizes, strict=False)):
        due += gap / 1000
        out.append((due, bytes([65 + (tag + i) % 26]) * size))
    return out


async def test_every_stream_gets_its_pieces_in_order_and_none_early() -> None:
    pacer = Pacer(64 * 1024)
    pairs = [await Pair.open() for _ in range(6)]
    streams = [pieces_of([i, 5, 0, 10, 3], [10, 200, 1, 30, 5000], i) for i in range(6)]
    start = time.monotonic()
    try:
        results = await asyncio.gather(
            *[pacer.play(pieces, start, pair.writer) for pair, pieces in zip(pairs, streams,
                                                                              strict=True)],
            *[pair.read(sum(len(d) for _, d in pieces)) for pair, pieces in zip(
                pairs, streams, strict=True)])
        for pair, pieces, got in zip(pairs, streams, results[6:], strict=True):
            assert got == b"".join(d for _, d in pieces)
            # a piece never arrives before it is due: the last byte of each piece arrives
            # after start + its due time
            arrived = 0
            ends = []
            for when, data in pair.received:
                arrived += len(data)
                ends.append((arrived, when))
            total = 0
            for due, data in pieces:
                total += len(data)
                when = next(w for size, w in ends if size >= total)
                assert when >= start + due
        assert results[:6] == [len(pieces) for pieces in streams]  # all out
    finally:
        for pair in pairs:
            pair.close()


async def test_sends_due_together_go_out_earliest_first() -> None:
    pacer = Pacer(64 * 1024)
    order: list[int] = []
    pairs = [await Pair.open() for _ in range(3)]
    start = time.monotonic()
    try:
        # due at 30, 10 and 20 ms: the pacer's one timer sends them in due order
        plays = [pacer.play([(due / 1000, b"x")], start, pair.writer)
                 for due, pair in zip([30, 10, 20], pairs, strict=True)]

        async def note(i: int, pair: Pair) -> None:
            await pair.read(1)
            order.append(i)

        await asyncio.gather(*plays, *[note(i, p) for i, p in enumerate(pairs)])
        assert order == [1, 2, 0]
    finally:
        for pair in pairs:
            pair.close()


async def test_a_full_buffer_hands_the_stream_back_to_drain_and_nothing_is_lost() -> None:
    """A client that does not read: the transport's buffer passes the high mark, the stream
    leaves the pacer (its task drains) and comes back; every byte arrives once it reads."""
    pacer = Pacer(1024)
    pair = await Pair.open(send_buffer=4096)
    pieces = [(0.0, bytes([65 + i % 26]) * 3000) for i in range(200)]  # 600 KB, all due now
    try:
        sent = await pacer.send(pair.writer.transport, pieces, 0, time.monotonic())
        assert 0 < sent < len(pieces)  # handed back before the end: its buffer is full
        playing = asyncio.create_task(pacer.play(pieces, time.monotonic(), pair.writer,
                                                 sent))
        got = await pair.read(3000 * len(pieces))
        assert got == b"".join(d for _, d in pieces)
        assert await playing == len(pieces)
    finally:
        pair.close()


async def test_once_the_server_is_not_busy_the_streams_are_handed_back() -> None:
    """`busy()` turning False (few streams left) hands each stream back with what is out:
    its pieces due by then went, the rest is for its task to send with precise waits."""
    busy = True
    pacer = Pacer(64 * 1024, lambda: busy)
    pair = await Pair.open()
    start = time.monotonic()
    pieces = [(0.0, b"a"), (0.0, b"b"), (0.03, b"c"), (0.06, b"d"), (0.09, b"e")]
    try:
        playing = asyncio.create_task(pacer.play(pieces, start, pair.writer))
        assert await pair.read(2) == b"ab"  # due at once, sent while busy
        busy = False
        sent = await playing
        assert sent == 3  # "c", due next, went out; then it was handed back
        assert await pair.read(1) == b"abc"
    finally:
        pair.close()


async def test_a_client_gone_is_reported_and_the_others_go_on() -> None:
    pacer = Pacer(64 * 1024)
    gone, kept = await Pair.open(), await Pair.open()
    start = time.monotonic()
    pieces = [(i / 1000, b"data: x\n\n") for i in range(0, 60, 5)]
    try:
        gone.far.close()
        gone.writer.transport.abort()  # as a send that failed leaves it: closing
        results = await asyncio.gather(pacer.play(pieces, start, gone.writer),
                                       pacer.play(pieces, start, kept.writer),
                                       kept.read(len(pieces) * 9))
        assert results[0] == CLIENT_GONE and results[1] == len(pieces)
        assert results[2] == b"data: x\n\n" * len(pieces)
    finally:
        gone.close()
        kept.close()


async def test_a_cancelled_stream_is_dropped_and_the_others_go_on() -> None:
    pacer = Pacer(64 * 1024)
    cancelled, kept = await Pair.open(), await Pair.open()
    start = time.monotonic()
    pieces = [(i / 1000, b"y") for i in range(0, 500, 50)]
    try:
        doomed = asyncio.create_task(pacer.play(pieces, start, cancelled.writer))
        playing = asyncio.create_task(pacer.play(pieces, start, kept.writer))
        first = await cancelled.reader.readexactly(1)  # its first piece out, then the
        doomed.cancel()  # server stops that stream
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await kept.read(len(pieces)) == b"y" * len(pieces)
        assert await playing == len(pieces)
        # nothing more reaches the cancelled stream's client
        cancelled.writer.close()
        rest = first
        while data := await cancelled.reader.read(65536):
            rest += data
        assert 0 < len(rest) < len(pieces)
    finally:
        cancelled.close()
        kept.close()


async def test_a_write_that_fails_reaches_its_own_stream_only() -> None:
    pacer = Pacer(64 * 1024)
    broken, kept = await Pair.open(), await Pair.open()
    start = time.monotonic()
    try:
        bad: list[tuple[float, bytes]] = [(0.0, "not bytes")]  # type: ignore[list-item]
        results = await asyncio.gather(pacer.play(bad, start, broken.writer),
                                       pacer.play([(0.0, b"ok")], start, kept.writer),
                                       return_exceptions=True)
        assert isinstance(results[0], TypeError) and results[1] == 1
        assert await kept.read(2) == b"ok"
    finally:
        broken.close()
        kept.close()


STREAMS = st.lists(st.tuples(st.lists(st.integers(0, 4), min_size=1, max_size=12),
                             st.lists(st.integers(1, 3000), min_size=12, max_size=12)),
                   min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS, st.sampled_from([512, 4096, 64 * 1024]))
def test_any_streams_any_buffer_mark_every_byte_arrives_in_order(
    streams: list[tuple[list[int], list[int]]], high: int,
) -> None:
    """Streams of any gaps (pieces due together, or apart) and sizes (under and over the
    high mark) through one pacer: each client gets exactly its bytes, in order."""

    async def run() -> None:
        pacer = Pacer(high)
        pairs = [await Pair.open(send_buffer=8192) for _ in streams]
        plans = [pieces_of(gaps, sizes, i) for i, (gaps, sizes) in enumerate(streams)]
        start = time.monotonic()
        try:
            results = await asyncio.gather(
                *[pacer.play(p, start, pair.writer) for pair, p in zip(pairs, plans,
                                                                        strict=True)],
                *[pair.read(sum(len(d) for _, d in p)) for pair, p in zip(pairs, plans,
                                                                           strict=True)])
            assert results[:len(plans)] == [len(p) for p in plans]
            assert results[len(plans):] == [b"".join(d for _, d in p) for p in plans]
        finally:
            for pair in pairs:
                pair.close()

    asyncio.run(run())


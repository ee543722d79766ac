"""`replay.rounds.Rounds`: instant streams written in turns from one callback, over real
sockets (the `Pair` of the pacer's tests: an asyncio transport on one end of a socket pair,
a reader on the other)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.replay.rounds import Rounds
from tests.unit.test_pacer import Pair

TURN, LONE = 8 * 1024, 64 * 1024


def writes_of(sizes: list[int], tag: int) -> list[bytes]:
    return [bytes([65 + (tag + i) % 26]) * size for i, size in enumerate(sizes)]


async def test_a_short_stream_is_not_held_up_by_a_long_one_that_came_first() -> None:
    """Turns: the short stream's writes go out between the long one's, so it is complete
    while the long one still has most of its body to send."""
    rounds = Rounds(TURN, LONE, 1 << 30)  # a high mark that is never passed: turns only
    long, short = await Pair.open(), await Pair.open()
    long_writes, short_writes = writes_of([8192] * 400, 0), writes_of([8192] * 3, 1)
    finished: list[str] = []

    async def play(name: str, pair: Pair, writes: list[bytes]) -> None:
        assert await rounds.play(writes, pair.writer) is False
        finished.append(name)

    try:
        results = await asyncio.gather(
            play("long", long, long_writes), play("short", short, short_writes),
            long.read(sum(map(len, long_writes))), short.read(sum(map(len, short_writes))))
        assert finished == ["short", "long"]
        assert results[2:] == [b"".join(long_writes), b"".join(short_writes)]
    finally:
        long.close()
        short.close()


async def test_a_lone_stream_still_takes_turns() -> None:
    """Alone, a stream takes longer turns, not the whole body at once: when its client has
    its first byte, most of the 1.6 MB body has not yet been handed to the transport."""
    rounds = Rounds(TURN, LONE, 1 << 30)  # a high mark never passed: only turns stop it
    pair = await Pair.open()
    writes = writes_of([8192] * 200, 0)
    try:
        playing = asyncio.create_task(rounds.play(writes, pair.writer))
        assert await pair.reader.readexactly(1) == b"A"
        assert pair.writer.transport.get_write_buffer_size() < 512 * 1024
        rest = await pair.reader.readexactly(sum(map(len, writes)) - 1)
        assert b"A" + rest == b"".join(writes)
        assert await playing is False
    finally:
        pair.close()


async def test_a_full_buffer_hands_the_stream_back_to_drain_and_nothing_is_lost() -> None:
    rounds = Rounds(TURN, LONE, 1024)
    pair = await Pair.open(send_buffer=4096)
    writes = writes_of([3000] * 200, 0)  # 600 KB to a client that does not read yet
    try:
        sent = await rounds.send(pair.writer.transport, writes, 0)
        assert 0 < sent < len(writes)  # handed back before the end: its buffer is full
        playing = asyncio.create_task(rounds.play(writes[sent:], pair.writer))
        assert await pair.read(sum(map(len, writes))) == b"".join(writes)
        assert await playing is False
    finally:
        pair.close()


async def test_a_client_gone_and_a_cancelled_task_leave_the_others_playing() -> None:
    rounds = Rounds(TURN, LONE, 1 << 30)
    gone, doomed, kept = await Pair.open(), await Pair.open(), await Pair.open()
    writes = writes_of([8192] * 50, 0)
    try:
        gone.far.close()
        gone.writer.transport.abort()  # as a send that failed leaves it: closing
        cancelled = asyncio.create_task(rounds.play(writes, doomed.writer))
        playing = asyncio.gather(rounds.play(writes, gone.writer),
                                 rounds.play(writes, kept.writer))
        cancelled.cancel()
        assert await kept.read(sum(map(len, writes))) == b"".join(writes)
        assert await playing == [True, False]
        assert cancelled.cancelled()
    finally:
        for pair in (gone, doomed, kept):
            pair.close()


async def test_a_write_that_fails_reaches_its_own_stream_only() -> None:
    rounds = Rounds(TURN, LONE, 1 << 30)
    broken, kept = await Pair.open(), await Pair.open()
    try:
        bad: list[bytes] = ["not bytes"]  # type: ignore[list-item]
        results = await asyncio.gather(rounds.play(bad, broken.writer),
                                       rounds.play([b"ok"], kept.writer),
                                       return_exceptions=True)
        assert isinstance(results[0], TypeError) and results[1] is False
        assert await kept.read(2) == b"ok"
    finally:
        broken.close()
        kept.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.integers(1, 20_000), max_size=12), min_size=1, max_size=5),
       st.sampled_from([512, 4096, 1 << 30]), st.sampled_from([1, 8192, 65536]))
def test_any_streams_any_turns_every_byte_arrives_in_order(
    streams: list[list[int]], high: int, turn: int,
) -> None:
    """Any number of streams, writes under and over a turn and the high mark: each client
    gets exactly its bytes, in order."""

    async def run() -> None:
        rounds = Rounds(turn, turn * 8, high)
        pairs = [await Pair.open(send_buffer=8192) for _ in streams]
        plans = [writes_of(sizes, i) for i, sizes in enumerate(streams)]
        try:
            results = await asyncio.gather(
                *[rounds.play(w, pair.writer) for pair, w in zip(pairs, plans, strict=True)],
                *[pair.read(sum(map(len, w))) for pair, w in zip(pairs, plans, strict=True)])
            assert results[:len(plans)] == [False] * len(plans)
            assert results[len(plans):] == [b"".join(w) for w in plans]
        finally:
            for pair in pairs:
                pair.close()

    asyncio.run(run())

"""The cassette store on both backends (the `store` fixture: a SQLite file, a PostgreSQL
cassette): write and read back, concurrent writers, in-progress interactions, copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sse_recorder.errors import CassetteError
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.store import open_store
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)

pytestmark = pytest.mark.integration

Store = Callable[[str], str]
HEAD = ResponseHead(200, "OK", (("content-type", "text/event-stream"),), "HTTP/1.1")


def request(n: int) -> RecordedRequest:
    return RecordedRequest("POST", f"http://127.0.0.1/v1/s/{n}", (("a", "b"),), b"{}",
                           "HTTP/1.1")


async def record(cassette: Cassette, n: int, chunks: list[bytes], *, end: bool = True,
                 per_batch: int = 1) -> int:
    """Interaction `n` with `chunks`, `per_batch` to a batch (so stored as rows of one chunk,
    or blocks); returns the allocated number."""
    iid = cassette.allocate_id()
    await cassette.write(WriteBatch(starts=[InteractionStart(iid, 1000.0 + n, request(n))],
                                    heads=[HeadUpdate(iid, HEAD, 5, True)]))
    for first in range(0, len(chunks), per_batch):
        await cassette.write(WriteBatch(chunks=[
            (iid, seq, 10 * seq, chunks[seq])
            for seq in range(first, min(first + per_batch, len(chunks)))]))
    if end:
        await cassette.write(WriteBatch(ends=[EndUpdate(iid, True, Outcome.CLEAN, 99, None,
                                                        len(chunks))]))
    return iid


async def test_round_trip(store: Store) -> None:
    target = store("rt")
    cassette = await open_store(target, record=True)
    try:
        await record(cassette, 1, [b"data: a\n\n", b"data: b\n\n"])
        await record(cassette, 2, [b"data: " + bytes(range(256)) * 300 + b"\n\n"])
        await record(cassette, 3, [b"data: %d\n\n" % n for n in range(10)], per_batch=4)
        await cassette.finish_recording()
    finally:
        await cassette.close()
    async with await open_store(target) as opened:
        found = await opened.interactions()
        assert [i.id for i in found] == [1, 2, 3]
        assert found[0].request == request(1)
        assert found[0].response == HEAD
        assert (found[0].outcome, found[0].complete, found[0].end_offset_ns) == (
            Outcome.CLEAN, True, 99)
        assert (found[0].chunk_count, found[0].event_count, found[0].body_size) == (2, 2, 18)
        chunks = [c async for c in opened.chunks(2)]
        assert chunks[0].data == b"data: " + bytes(range(256)) * 300 + b"\n\n"
        assert [e.data for e in await opened.events(1)] == ["a", "b"]
        # derived from the exact chunks: U+0000 too, which PostgreSQL text could not hold
        (event,) = await opened.events(2)
        assert event.data[:4] == "\0\x01\x02\x03"
        # blocks of 4, 4 and 2 chunks read back as the chunks written
        assert found[2].chunk_count == 10 and found[2].event_count == 10
        assert [(c.seq, c.offset_ns, c.data) async for c in opened.chunks(3, 3)] == [
            (n, 10 * n, b"data: %d\n\n" % n) for n in range(3, 10)]
        assert [(e.data, e.first_chunk, e.offset_ns) for e in await opened.events(3)] == [
            (str(n), n, 10 * n) for n in range(10)]


async def test_an_empty_new_cassette_is_not_left_behind(store: Store) -> None:
    target = store("empty")
    await (await open_store(target, record=True)).close()
    with pytest.raises(CassetteError, match="no such cassette"):
        await open_store(target)


async def test_two_writers_into_one_cassette_never_collide(store: Store) -> None:
    """Two writers (as two recorder processes would) number interactions on their own;
    the stored ids are the database's, distinct, and each chunk lands in its own."""
    target = store("two")
    first = await open_store(target, record=True)
    second = await open_store(target, record=True)
    try:
        a = await record(first, 1, [b"data: a1\n\n"])
        b = await record(second, 2, [b"data: b1\n\n", b"data: b2\n\n"])
        c = await record(first, 3, [b"data: a2\n\n"])
        assert (a, b, c) == (1, 1, 2)  # each writer's own numbers collide...
        stored = [first.stored_id(a), second.stored_id(b), first.stored_id(c)]
        assert sorted(stored) == [1, 2, 3]  # ...the stored ids do not
    finally:
        await second.close()
        await first.close()
    async with await open_store(target) as opened:
        bodies = {i.request.url[-1]: b"".join([c.data async for c in opened.chunks(i.id)])
                  for i in await opened.interactions()}
    assert bodies == {"1": b"data: a1\n\n", "2": b"data: b1\n\ndata: b2\n\n",
                      "3": b"data: a2\n\n"}


async def test_readers_see_finalized_interactions_unless_in_progress(store: Store) -> None:
    """A store's readers see an interaction once it is finalized (another recorder may be
    writing it), or as it grows with in_progress; a file shows it (its one writer died)."""
    target = store("progress")
    writer = await open_store(target, record=True)
    try:
        await record(writer, 1, [b"data: done\n\n"])
        await record(writer, 2, [b"data: growing\n\n"], end=False)
        async with await open_store(target) as reader:
            shown = [i.id for i in await reader.interactions()]
        assert shown == ([1, 2] if target.endswith(".sqlite") else [1])
        async with await open_store(target, in_progress=True) as reader:
            (growing,) = [i for i in await reader.interactions() if i.id == 2]
            assert growing.outcome is Outcome.STOPPED and growing.chunk_count == 1
            await writer.write(WriteBatch(chunks=[(2, 1, 50, b"data: more\n\n")]))
            assert [c.data async for c in reader.chunks(2)][-1] == b"data: more\n\n"
    finally:
        await writer.close()
    if not target.endswith(".sqlite"):  # the URL says it too
        async with await open_store(f"{target}&in_progress=true") as reader:
            assert len(await reader.interactions()) == 2

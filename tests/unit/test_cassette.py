"""Unit tests for `sse_recorder.store.cassette` against real SQLite files in `tmp_path`."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.errors import CassetteError
from sse_recorder.model import (
    Chunk,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)
from sse_recorder.store import cassette as cassette_module
from sse_recorder.store.cassette import (
    CHUNK_PAGE,
    FIRST_PAGE,
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)

Opener = Callable[[Path], Awaitable[Cassette]]
OPENERS: list[tuple[str, Opener]] = [
    ("open", Cassette.open),
    ("open_for_recording", Cassette.open_for_recording),
]

REQUEST = RecordedRequest(
    method="POST",
    url="https://api.example.com/v1/chat?stream=true",
    headers=(("Content-Type", "application/json"), ("X-Multi", "a"), ("x-multi", "b")),
    body=b'{"model": "m", "bytes": "\\u00ff"}\x00\xff',
    http_version="HTTP/2.0",
)
HEAD = ResponseHead(
    status=200,
    reason="OK",
    headers=(("content-type", "text/event-stream; charset=utf-8"), ("x-raw", "\xe9\xff")),
    http_version="HTTP/2.0",
)


SAMPLE_CHUNKS = [b"id: 0\nretry: 3000\ndata: he", b"llo\n\n",
                 b": ping\n\nid: 2\nretry: 3000\ndata: x\n\n", b""]
SAMPLE_EVENTS = [(0, "hello", 0, 1, "event"), (1, "ping", 2, 2, "comment"), (2, "x", 2, 2, "event")]


def _event(seq: int, data: str, first: int, last: int, kind: str = "event") -> RecordedEvent:
    if kind == "comment":
        return RecordedEvent(seq, "comment", None, data, None, None, 100 * last, first, last)
    return RecordedEvent(seq, "event", "message", data, str(seq), 3000, 100 * last, first, last)


async def record_sample(path: Path) -> list[Interaction]:
    """Record two interactions in several batches; return what should read back. The first
    one's chunks 0 and 1 are stored as one block row, 2 and 3 as rows of their own."""
    cassette = await Cassette.open_for_recording(path)
    try:
        first, second = cassette.allocate_id(), cassette.allocate_id()
        chunks = SAMPLE_CHUNKS
        await cassette.write(
            WriteBatch(
                starts=[
                    InteractionStart(first, 1700000000.25, REQUEST),
                    InteractionStart(second, 1700000001.5, RecordedRequest("GET", "http://h/", ())),
                ]
            )
        )
        await cassette.write(WriteBatch(heads=[HeadUpdate(first, HEAD, 1234, True)]))
        await cassette.write(
            WriteBatch(chunks=[(first, i, 100 * i, data) for i, data in enumerate(chunks[:2])])
        )
        await cassette.write(WriteBatch(chunks=[(first, 2, 200, chunks[2])]))
        await cassette.write(
            WriteBatch(
                chunks=[(first, 3, 300, chunks[3])],
                ends=[EndUpdate(first, True, Outcome.CLEAN, 999, None, 2)],
            )
        )
        await cassette.write(
            WriteBatch(ends=[EndUpdate(second, False, Outcome.PROXY_ERROR, None, "boom")])
        )
        await cassette.finish_recording()
    finally:
        await cassette.close()
    return [
        Interaction(
            id=first,
            started_at=1700000000.25,
            request=REQUEST,
            response=HEAD,
            head_offset_ns=1234,
            is_sse=True,
            complete=True,
            outcome=Outcome.CLEAN,
            end_offset_ns=999,
            error=None,
            chunk_count=4,
            body_size=sum(len(c) for c in SAMPLE_CHUNKS),
            event_count=2,  # comments are not counted as events
        ),
        Interaction(
            id=second,
            started_at=1700000001.5,
            request=RecordedRequest("GET", "http://h/", ()),
            response=None,
            head_offset_ns=None,
            is_sse=False,
            complete=False,
            outcome=Outcome.PROXY_ERROR,
            end_offset_ns=None,
            error="boom",
        ),
    ]


async def record_chunks(path: Path, counts: list[int], size: int = 64,
                        per_batch: int | None = None) -> None:
    """One interaction per entry of `counts`, with that many chunks of `size` bytes, written
    `per_batch` chunks to a batch (so stored as rows of that many chunks; default: one batch)."""
    cassette = await Cassette.open_for_recording(path)
    try:
        batch = WriteBatch()
        for count in counts:
            iid = cassette.allocate_id()
            batch.starts.append(InteractionStart(iid, 1.0, RecordedRequest("GET", "http://h/", ())))
            batch.chunks.extend((iid, seq, seq * 10, _chunk_bytes(iid, seq, size))
                                for seq in range(count))
        if per_batch is not None:
            chunks, batch.chunks = batch.chunks, []
            await cassette.write(batch)
            for start in range(0, len(chunks), per_batch):
                await cassette.write(WriteBatch(chunks=chunks[start:start + per_batch]))
        else:
            await cassette.write(batch)
        await cassette.finish_recording()
    finally:
        await cassette.close()


def _chunk_bytes(iid: int, seq: int, size: int) -> bytes:
    return f"{iid}:{seq}:".encode().ljust(size, b".")


async def all_chunks(cassette: Cassette, iid: int, start_seq: int = 0) -> list[Chunk]:
    return [chunk async for chunk in cassette.chunks(iid, start_seq)]


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


# --------------------------------------------------------------------------------------------
# round trips


def as_v1(path: Path, events: Sequence[tuple[int, RecordedEvent]] | None = None) -> None:
    """Turn a v2 cassette into the file a v1 release wrote: a row per chunk, the events as
    rows (default: the sample's), no v2 columns, format version 1, Alembic revision 0001."""
    chunks = asyncio.run(_every_chunk(path))
    if events is None:
        events = [(1, _event(*fields)) for fields in SAMPLE_EVENTS]
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM chunks")
    for column in ("count", "offsets", "sizes"):
        conn.execute(f"ALTER TABLE chunks DROP COLUMN {column}")
    conn.execute("ALTER TABLE interactions DROP COLUMN event_count")
    conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)",
                     [(iid, c.seq, c.offset_ns, c.data) for iid, c in chunks])
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(iid, *event) for iid, event in events])
    conn.execute("UPDATE cassette_meta SET value = '1' WHERE key = 'version'")
    conn.execute("UPDATE alembic_version SET version_num = '0001'")
    conn.commit()
    conn.close()


async def _every_chunk(path: Path) -> list[tuple[int, Chunk]]:
    async with await Cassette.open(path) as cassette:
        found = []
        for interaction in await cassette.interactions():
            found += [(interaction.id, c) for c in await all_chunks(cassette, interaction.id)]
        return found


@pytest.mark.parametrize("version", [2, 1])
async def test_write_batches_then_reopen_read_only_gives_identical_data(
    tmp_path: Path, version: int
) -> None:
    """v2 as written (events derived from the chunks, a block row unpacked), and the same
    cassette as a v1 release wrote it (events from their rows): both read back the same."""
    path = tmp_path / "c.cassette"
    expected = await record_sample(path)
    if version == 1:
        await asyncio.to_thread(as_v1, path)
    async with await Cassette.open(path) as cassette:
        assert cassette.version == version
        assert await cassette.interactions() == expected
        assert await cassette.interaction(2) == expected[1]
        assert await all_chunks(cassette, 1) == [
            Chunk(seq, 100 * seq, data) for seq, data in enumerate(SAMPLE_CHUNKS)]
        assert await all_chunks(cassette, 1, start_seq=1) == [
            Chunk(seq, 100 * seq, data) for seq, data in enumerate(SAMPLE_CHUNKS) if seq >= 1]
        assert await cassette.events(1) == [
            _event(seq, data, first, last, kind) for seq, data, first, last, kind in SAMPLE_EVENTS]
        assert await all_chunks(cassette, 2) == []
        assert await cassette.events(2) == []
        with pytest.raises(CassetteError, match="no interaction 3"):
            await cassette.interaction(3)


async def test_read_only_cassette_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.cassette"
    await record_sample(path)
    before = path.read_bytes()
    async with await Cassette.open(path) as cassette:
        with pytest.raises(CassetteError, match="write failed"):
            await cassette.write(
                WriteBatch(ends=[EndUpdate(1, False, Outcome.CLIENT_GONE, 1, "x")])
            )
    assert path.read_bytes() == before


async def test_open_for_recording_appends_with_continuing_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.cassette"
    expected = await record_sample(path)
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        assert iid == 3
        assert cassette.allocate_id() == 4  # allocation alone writes nothing
        await cassette.write(
            WriteBatch(
                starts=[InteractionStart(iid, 5.0, RecordedRequest("GET", "http://h/3", ()))],
                chunks=[(iid, 0, 1, b"third")],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, 2, None)],
            )
        )
        await cassette.finish_recording()
    finally:
        await cassette.close()
    async with await Cassette.open(path) as reader:
        interactions = await reader.interactions()
        assert [i.id for i in interactions] == [1, 2, 3]
        assert interactions[:2] == expected  # the old ones are untouched
        assert interactions[2].request.url == "http://h/3"
        assert await all_chunks(reader, 3) == [Chunk(0, 1, b"third")]


async def test_new_cassette_is_created_with_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "new.cassette"
    cassette = await Cassette.open_for_recording(path, keep_if_empty=True)
    try:
        assert cassette.allocate_id() == 1
        await cassette.finish_recording()
    finally:
        await cassette.close()
    async with await Cassette.open(path) as reader:
        assert await reader.interactions() == []


@pytest.mark.parametrize(
    "name", ["run#2", "what?x=1", "pct%41", "a&mode=ro", "sp ace", "colon:x", "uni-é"]
)
async def test_paths_with_uri_characters_open_exactly_that_file(tmp_path: Path, name: str) -> None:
    # SQLite URIs give '#', '?', '%' and '&' a meaning; the cassette must still be this file.
    path = tmp_path / name / f"{name}.cassette"
    expected = await record_sample(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    async with await Cassette.open(path) as cassette:
        assert await cassette.interactions() == expected
    reopened = await Cassette.open_for_recording(path)
    try:
        assert reopened.allocate_id() == 3
    finally:
        await reopened.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("opener", [o for _, o in OPENERS], ids=[n for n, _ in OPENERS])
async def test_bad_file_with_uri_characters_creates_nothing(tmp_path: Path, opener: Opener) -> None:
    path = tmp_path / "notes#1?x"
    path.write_bytes(b"plain text, not SQLite\n" * 50)
    with pytest.raises(CassetteError, match="not a readable cassette"):
        await opener(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# --------------------------------------------------------------------------------------------
# files that are not (usable) cassettes


async def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(1234).randbytes(8192))


async def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


async def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('alice')")
    conn.commit()
    conn.close()


async def _truncated(path: Path) -> None:
    await record_chunks(path, [400], size=200)
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) // page_size > 20  # many pages, so the cut really loses some
    path.write_bytes(data[: len(data) // 2])


async def _version_3(path: Path) -> None:
    await record_sample(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE cassette_meta SET value = '3' WHERE key = 'version'")
    conn.commit()
    conn.close()


async def _edit(path: Path, sql: str) -> None:
    """A valid cassette, then one SQL statement run on it with the sqlite3 module."""
    await record_sample(path)
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


async def _foreign_format(path: Path) -> None:
    await _edit(path, "UPDATE cassette_meta SET value = 'something-else' WHERE key = 'format'")


async def _version_0(path: Path) -> None:
    await _edit(path, "UPDATE cassette_meta SET value = '0' WHERE key = 'version'")


async def _version_text(path: Path) -> None:
    await _edit(path, "UPDATE cassette_meta SET value = 'one' WHERE key = 'version'")


async def _missing_table(path: Path) -> None:
    await _edit(path, "DROP TABLE events")


BAD_FILES: dict[str, tuple[Callable[[Path], Awaitable[None]], str]] = {
    "random-bytes": (_random_bytes, "not a readable cassette"),
    "empty-file": (_empty_file, "an empty SQLite file, not an sse-recorder cassette"),
    "other-application": (_other_application, "a SQLite database, not an sse-recorder cassette"),
    "truncated": (_truncated, "not a readable cassette"),
    "version-3": (_version_3, "cassette format version 3 is newer"),
    "foreign-format": (_foreign_format, "not an sse-recorder cassette"),
    "version-0": (_version_0, "unknown cassette format version 0"),
    "version-text": (_version_text, "unreadable format version"),
    "missing-table": (_missing_table, "damaged cassette, missing events"),
}


@pytest.mark.parametrize("opener", [o for _, o in OPENERS], ids=[n for n, _ in OPENERS])
@pytest.mark.parametrize("kind", list(BAD_FILES))
async def test_bad_file_raises_one_line_error_and_is_left_untouched(
    tmp_path: Path, kind: str, opener: Opener
) -> None:
    path = tmp_path / "bad.cassette"
    make, message = BAD_FILES[kind]
    await make(path)
    before = path.read_bytes()
    listing = side_files(path)

    with pytest.raises(CassetteError) as info:
        await opener(path)

    text = str(info.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text and "\r" not in text
    assert path.read_bytes() == before  # never overwritten, never turned into a cassette
    assert side_files(path) == listing  # no -wal, -shm or -journal left behind


@pytest.mark.parametrize("opener", [o for _, o in OPENERS], ids=[n for n, _ in OPENERS])
async def test_directory_is_refused(tmp_path: Path, opener: Opener) -> None:
    path = tmp_path / "dir.cassette"
    path.mkdir()
    with pytest.raises(CassetteError, match="is a directory") as info:
        await opener(path)
    assert "\n" not in str(info.value)
    assert list(path.iterdir()) == []


async def test_missing_file_is_not_created_by_open(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "nothing.cassette"
    with pytest.raises(CassetteError, match="no such cassette") as info:
        await Cassette.open(path)
    assert "\n" not in str(info.value)
    assert not path.exists()
    assert not path.parent.exists()


# --------------------------------------------------------------------------------------------
# reading chunks in pages


async def test_chunks_stream_in_order_across_pages(tmp_path: Path) -> None:
    path = tmp_path / "big.cassette"
    count = 2 * CHUNK_PAGE + CHUNK_PAGE // 2
    # a row per chunk; neighbours must not leak in
    await record_chunks(path, [count, 3, 2 * CHUNK_PAGE], per_batch=1)
    async with await Cassette.open(path) as cassette:
        queries = 0
        read = cassette._read

        async def counting_read(query: object) -> object:
            nonlocal queries
            queries += 1
            return await read(query)

        cassette._read = counting_read  # type: ignore[method-assign]
        chunks = await all_chunks(cassette, 1)
        # really paged, not loaded in one go: a small first page, then full ones
        assert queries == 1 + math.ceil((count - FIRST_PAGE) / CHUNK_PAGE)
        assert [c.seq for c in chunks] == list(range(count))
        assert all(c == Chunk(c.seq, c.seq * 10, _chunk_bytes(1, c.seq, 64)) for c in chunks)

        # an exact multiple of the page size ends with one empty page
        assert [c.seq for c in await all_chunks(cassette, 3)] == list(range(2 * CHUNK_PAGE))
        assert [c.seq for c in await all_chunks(cassette, 2)] == [0, 1, 2]


@pytest.mark.parametrize("per_batch", [1, 2, 7, None])
async def test_chunks_start_seq(tmp_path: Path, per_batch: int | None) -> None:
    """From any chunk on, in rows of one chunk, in blocks of 2 (more rows than a page), of
    7 (a start inside a block) and in one block of them all."""
    path = tmp_path / "big.cassette"
    count = 2 * CHUNK_PAGE + 100
    await record_chunks(path, [count], per_batch=per_batch)
    async with await Cassette.open(path) as cassette:
        assert [c.seq for c in await all_chunks(cassette, 1)] == list(range(count))
        tail = await all_chunks(cassette, 1, start_seq=300)
        assert [c.seq for c in tail] == list(range(300, count))
        assert tail[0].data == _chunk_bytes(1, 300, 64)
        assert await all_chunks(cassette, 1, start_seq=count) == []
        assert await all_chunks(cassette, 1, start_seq=count - 1) == [
            Chunk(count - 1, (count - 1) * 10, _chunk_bytes(1, count - 1, 64))
        ]


async def test_iterating_chunks_lazily_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "big.cassette"
    await record_chunks(path, [3 * CHUNK_PAGE])
    async with await Cassette.open(path) as cassette:
        seen = []
        stream = cassette.chunks(1)
        async for chunk in stream:
            seen.append(chunk.seq)
            if len(seen) == 5:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        assert seen == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# finishing, and interactions left open


async def test_finish_recording_leaves_a_single_file(tmp_path: Path) -> None:
    path = tmp_path / "c.cassette"
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        await cassette.write(
            WriteBatch(
                starts=[InteractionStart(iid, 1.0, REQUEST)],
                chunks=[(iid, 0, 5, b"data: 1\n\n")],
            )
        )
        assert (tmp_path / "c.cassette-wal").exists()  # WAL while recording
        await cassette.finish_recording()
    finally:
        await cassette.close()
    assert side_files(path) == []
    async with await Cassette.open(path) as reader:
        assert len(await reader.interactions()) == 1
    assert side_files(path) == []


async def test_interaction_never_ended_reads_back_as_recording_stopped(tmp_path: Path) -> None:
    path = tmp_path / "c.cassette"
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        await cassette.write(
            WriteBatch(
                starts=[InteractionStart(iid, 1.0, REQUEST)],
                heads=[HeadUpdate(iid, HEAD, 10, True)],
                chunks=[(iid, 0, 20, b"data: 1\n\n"), (iid, 1, 30, b"data: 2")],
            )
        )
        # no finish_recording: as if the recorder died after this commit
    finally:
        await cassette.close()
    async with await Cassette.open(path) as reader:
        (interaction,) = await reader.interactions()
        assert interaction.outcome is Outcome.STOPPED
        assert interaction.complete is False
        assert interaction.end_offset_ns is None
        assert (interaction.chunk_count, interaction.body_size) == (2, 16)
        assert [c.data for c in await all_chunks(reader, iid)] == [b"data: 1\n\n", b"data: 2"]


# --------------------------------------------------------------------------------------------
# how outcomes are spelled on disk (format v1, cassettes/FORMAT.md)

V1_SPELLING = {
    Outcome.CLEAN: "clean",
    Outcome.CLOSED: "upstream-closed",
    Outcome.RESET: "upstream-reset",
    Outcome.STALLED: "stalled",
    Outcome.CLIENT_GONE: "client-gone",
    Outcome.PROXY_ERROR: "proxy-error",
    Outcome.STOPPED: "recording-stopped",
}


async def test_outcomes_keep_their_v1_spelling_on_disk(tmp_path: Path) -> None:
    assert set(V1_SPELLING) == set(Outcome)
    path = tmp_path / "c.cassette"
    cassette = await Cassette.open_for_recording(path)
    try:
        ids = {outcome: cassette.allocate_id() for outcome in V1_SPELLING}
        await cassette.write(WriteBatch(
            starts=[InteractionStart(iid, 1.0, REQUEST) for iid in ids.values()],
            ends=[EndUpdate(iid, o is Outcome.CLEAN, o, 1, None) for o, iid in ids.items()],
        ))
        await cassette.finish_recording()
    finally:
        await cassette.close()
    conn = sqlite3.connect(path)
    stored = dict(conn.execute("SELECT id, end_reason FROM interactions").fetchall())
    conn.execute("UPDATE interactions SET end_reason = 'from-the-future' WHERE id = 1")
    conn.commit()
    conn.close()
    assert stored == {iid: V1_SPELLING[o] for o, iid in ids.items()}
    async with await Cassette.open(path) as reader:
        read = {i.id: i.outcome for i in await reader.interactions()}
    # an ending a newer release wrote reads as a close before the body's end
    assert read == {iid: o for o, iid in ids.items()} | {1: Outcome.CLOSED}


# --------------------------------------------------------------------------------------------
# blocks: a batch's chunks of one interaction in one row, whatever the batches and the
# interleaving; a block boundary anywhere reads back the same chunks

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.tuples(st.integers(1, 2), st.integers(0, 40)), max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=8),
       block_bytes=st.sampled_from([16, 64, 1 << 16]), as_runs=st.booleans())
def test_chunks_read_back_exactly_however_batches_and_blocks_cut_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sizes: list[tuple[int, int]],
    cuts: list[int], block_bytes: int, as_runs: bool
) -> None:
    """Two interleaved interactions' chunks (empty ones too), cut into batches at random,
    given one by one or as runs (as the recorder's writer gives them), and into blocks at a
    small byte limit: every chunk reads back with its seq, offset and bytes, from the start
    and from any seq."""
    monkeypatch.setattr(cassette_module, "BLOCK_BYTES", block_bytes)
    path = tmp_path / f"blocks-{uuid.uuid4().hex}.cassette"
    written: dict[int, list[Chunk]] = {1: [], 2: []}
    rows = []
    for n, (iid, size) in enumerate(sizes):
        chunk = Chunk(len(written[iid]), 1000 * n + iid, bytes([n % 251]) * size)
        written[iid].append(chunk)
        rows.append((iid, *chunk))
    bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]

    async def record_and_read() -> dict[int, list[list[Chunk]]]:
        cassette = await Cassette.open_for_recording(path)
        try:
            get = RecordedRequest("GET", "http://h/", ())
            await cassette.write(WriteBatch(starts=[
                InteractionStart(cassette.allocate_id(), 1.0, get) for _ in range(2)]))
            for start, end in zip(bounds, bounds[1:], strict=False):
                await cassette.write(_as_runs(rows[start:end]) if as_runs
                                     else WriteBatch(chunks=rows[start:end]))
            await cassette.finish_recording()
        finally:
            await cassette.close()
        async with await Cassette.open(path) as reading:
            found = {i.id: i for i in await reading.interactions()}
            for iid in (1, 2):
                assert found[iid].chunk_count == len(written[iid])
                assert found[iid].body_size == sum(len(c.data) for c in written[iid])
            return {iid: [await all_chunks(reading, iid, start)
                          for start in range(len(written[iid]) + 1)] for iid in (1, 2)}

    read = asyncio.run(record_and_read())
    for iid in (1, 2):
        for start, chunks in enumerate(read[iid]):
            assert chunks == written[iid][start:]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=80),
       block_bytes=st.integers(1, 100))
def test_a_run_is_cut_into_the_fewest_blocks_that_keep_the_limit(
    sizes: list[int], block_bytes: int
) -> None:
    """Blocks of consecutive chunks, each as big as it can be without passing the limit
    (a chunk over the limit, or with nothing beside it, is a row of its own, as in v1), in
    order, covering every chunk once: a chunk at the edge of the limit on either side of a
    block boundary lands in the right block."""
    datas = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    offsets = [1000 + n for n in range(len(datas))]
    rows: list[tuple[object, ...]] = []
    original = cassette_module.BLOCK_BYTES
    cassette_module.BLOCK_BYTES = block_bytes
    try:
        cassette_module._pack(7, 3, offsets, datas, rows)
    finally:
        cassette_module.BLOCK_BYTES = original
    counts = [row[4] or 1 for row in rows]
    assert [row[1] for row in rows] == [3 + sum(counts[:n]) for n in range(len(rows))]
    assert sum(counts) == len(datas) and all(row[0] == 7 for row in rows)
    start = 0
    for row, count in zip(rows, counts, strict=True):
        block = datas[start:start + count]
        assert row[2] == offsets[start] and row[3] == b"".join(block)
        if count == 1:
            assert row[4] is None  # a v1 row
        else:
            assert sum(map(len, block)) <= block_bytes
        if start + count < len(datas):  # the next chunk would have passed the limit
            assert sum(map(len, block)) + len(datas[start + count]) > block_bytes
        start += count


@pytest.mark.parametrize("alone", [True, False], ids=["chunks-alone", "with-an-end"])
async def test_a_failed_write_is_one_line_and_leaves_the_file_as_it_was(
    tmp_path: Path, alone: bool
) -> None:
    """A batch of chunks alone goes straight to the driver (the flood's case), any other
    through SQLAlchemy: either way a failure is one CassetteError, nothing of the batch is
    stored, and the cassette keeps what earlier batches committed."""
    path = tmp_path / "c.cassette"
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        await cassette.write(WriteBatch(
            starts=[InteractionStart(iid, 1.0, RecordedRequest("GET", "http://h/", ()))]))
        await cassette.write(WriteBatch(chunks=[(iid, 0, 0, b"a")]))
        await cassette.write(WriteBatch(chunks=[(iid, 1, 1, b"b")]))
        again = WriteBatch(chunks=[(iid, 2, 2, b"c"), (iid, 1, 3, b"duplicate")])
        if not alone:
            again.ends.append(EndUpdate(iid, True, Outcome.CLEAN, 4, None, 0))
        with pytest.raises(CassetteError) as info:
            await cassette.write(again)
        assert str(info.value).startswith(f"{path}: write failed: UNIQUE constraint failed")
        assert "\n" not in str(info.value)
        await cassette.write(WriteBatch(chunks=[(iid, 2, 5, b"d")]))  # still usable
        await cassette.finish_recording()
    finally:
        await cassette.close()
    async with await Cassette.open(path) as reading:
        assert [(c.seq, c.data) for c in await all_chunks(reading, iid)] == [
            (0, b"a"), (1, b"b"), (2, b"d")]
        (interaction,) = await reading.interactions()
        assert interaction.outcome is Outcome.STOPPED  # the failed batch's end is not there


async def test_a_row_overlapping_the_block_before_it_is_damage(tmp_path: Path) -> None:
    """The primary key sees a row's first seq only: a block hides the seqs after it, so a
    reader checks that no row starts inside the block before it."""
    path = tmp_path / "c.cassette"
    await record_sample(path)  # chunks 0-1 as a block row, 2 and 3 as rows of their own
    run = sqlite3.connect(path)
    run.execute("UPDATE chunks SET seq = 1 WHERE seq = 2")
    run.commit()
    run.close()
    async with await Cassette.open(path) as cassette:
        with pytest.raises(CassetteError, match=r"interaction 1, chunk 1: starts inside the "
                                                r"block of chunks 0 to 1"):
            await all_chunks(cassette, 1)


def _as_runs(rows: list[tuple[int, int, int, bytes]]) -> WriteBatch:
    """The same chunks as runs: each interaction's in this batch, in order."""
    batch = WriteBatch()
    for iid, seq, ns, data in rows:
        mine = [run for run in batch.runs if run[0] == iid]
        if mine:
            mine[-1][2].append(ns)
            mine[-1][3].append(data)
        else:
            batch.runs.append((iid, seq, [ns], [data]))
    return batch


async def test_events_of_an_unfinished_stream_read_its_chunks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No event count stored (the recorder died): `interactions` counts from the chunks,
    `events` derives from them without counting first."""
    path = tmp_path / "c.cassette"
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        await cassette.write(WriteBatch(
            starts=[InteractionStart(iid, 1.0, RecordedRequest("GET", "http://h/", ()))],
            heads=[HeadUpdate(iid, HEAD, 1, True)]))
        await cassette.write(WriteBatch(chunks=[(iid, 0, 5, b"data: a\n\n"),
                                                (iid, 1, 6, b"data: b\n\n: c\n\n")]))
    finally:
        await cassette.close()
    async with await Cassette.open(path) as reading:
        (interaction,) = await reading.interactions()
        assert interaction.event_count == 2 and interaction.outcome is Outcome.STOPPED
        read = 0
        chunks = reading.chunks

        def counted(interaction_id: int, start_seq: int = 0) -> AsyncIterator[Chunk]:
            nonlocal read
            read += 1
            return chunks(interaction_id, start_seq)

        monkeypatch.setattr(reading, "chunks", counted)
        assert [(e.kind, e.data) for e in await reading.events(iid)] == [
            ("event", "a"), ("event", "b"), ("comment", "c")]
        assert read == 1


async def test_a_failed_chunks_only_batch_leaves_nothing_and_the_next_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood's batches (chunks alone) go to the driver in one trip to its thread: rows and
    commit, or a rollback of all of them. A batch failing on its second row keeps nothing
    of its first, and the cassette goes on."""
    import aiosqlite

    trips: list[object] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., object], *args: object
                      ) -> object:
        trips.append(fn)
        return await original(self, fn, *args)

    path = tmp_path / "c.sqlite"
    cassette = await Cassette.open_for_recording(path)
    try:
        first, second = cassette.allocate_id(), cassette.allocate_id()
        await cassette.write(WriteBatch(starts=[InteractionStart(first, 1.0, REQUEST),
                                                InteractionStart(second, 2.0, REQUEST)]))
        await cassette.write(WriteBatch(chunks=[(second, 0, 0, b"data: kept\n\n")]))
        with pytest.raises(CassetteError, match="write failed"):
            await cassette.write(WriteBatch(chunks=[(first, 0, 0, b"data: lost\n\n"),
                                                    (second, 0, 5, b"data: twice\n\n")]))
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        await cassette.write(WriteBatch(chunks=[(first, 0, 7, b"data: a\n\n"),
                                                (first, 1, 8, b"data: b\n\n")]))
        assert len(trips) == 1  # the rows and the commit together
        monkeypatch.undo()
        await cassette.finish_recording()
    finally:
        await cassette.close()
    reader = await Cassette.open(path)
    try:
        assert [c.data async for c in reader.chunks(first)] == [b"data: a\n\n", b"data: b\n\n"]
        assert [c.data async for c in reader.chunks(second)] == [b"data: kept\n\n"]
    finally:
        await reader.close()

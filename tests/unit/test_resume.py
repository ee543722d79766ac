"""The Last-Event-ID cut: what is left of a recorded stream after the event a client last saw."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.model import Chunk
from sse_recorder.replay.resume import Cut, Resumed, resume
from sse_recorder.sse import Event, SSEParser


def chunks(*pieces: bytes) -> list[Chunk]:
    """Recorded chunks, 10 ns apart."""
    return [Chunk(seq, seq * 10, data) for seq, data in enumerate(pieces)]


def left(resumed: Resumed | None) -> list[bytes]:
    """The pieces that would go out (empty ones are never sent)."""
    assert resumed is not None
    return [c.data for c in resumed.chunks if c.data]


def test_an_event_ending_mid_chunk_cuts_that_chunk() -> None:
    stream = chunks(b"retry: 1000\n\n", b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
                    b"id: 3\ndata: c\n\n")
    resumed = resume(stream, "1")
    assert left(resumed) == [b"id: 2\ndata: b\n\n", b"id: 3\ndata: c\n\n"]
    assert resumed is not None
    assert resumed.origin_ns == 10  # the gaps count from the chunk that held the cut
    assert resumed.skipped == len(b"retry: 1000\n\nid: 1\ndata: a\n\n")
    assert resumed.chunks[0].seq == 1 and resumed.chunks[1] == stream[2]  # later ones as is


def test_an_event_ending_a_chunk_leaves_the_following_chunks() -> None:
    stream = chunks(b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n", b"id: 3\ndata: c\n\n")
    resumed = resume(stream, "2")
    assert left(resumed) == [b"id: 3\ndata: c\n\n"]
    assert resumed is not None and (resumed.origin_ns, resumed.skipped) == (10, 30)


def test_the_id_on_the_first_event() -> None:
    stream = chunks(b"id: first\ndata: a\n\n", b"data: b\n\n")
    resumed = resume(stream, "first")
    assert left(resumed) == [b"data: b\n\n"]
    assert resumed is not None and (resumed.origin_ns, resumed.skipped) == (0, 19)


def test_the_id_on_the_last_event_leaves_nothing() -> None:
    stream = chunks(b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n")
    resumed = resume(stream, "2")
    assert left(resumed) == []
    assert resumed is not None and (resumed.origin_ns, resumed.skipped) == (10, 30)


def test_an_id_set_by_a_block_without_data_is_found() -> None:
    """`id: 5` then a blank line dispatches nothing, yet sets the id a client reconnects
    with (WHATWG: the last event ID is set before the empty-data check)."""
    stream = chunks(b"id: 4\ndata: a\n\n", b"id: 5\n\n", b"data: b\n\n")
    resumed = resume(stream, "5")
    assert left(resumed) == [b"data: b\n\n"]
    assert resumed is not None and (resumed.origin_ns, resumed.skipped) == (10, 22)
    mid = chunks("data: a\n\n: note\nid: \u03a9\nretry: 9\n\ndata: b\n\n".encode())
    assert left(resume(mid, "\u03a9")) == [b"data: b\n\n"]


def test_an_id_only_block_without_its_blank_line_is_not_found() -> None:
    assert resume(chunks(b"data: a\n\n", b"id: 5\n"), "5") is None


def test_an_unknown_id_is_not_found() -> None:
    assert resume(chunks(b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"), "3") is None
    assert resume(chunks(b"data: no ids at all\n\n"), "1") is None
    assert resume([], "1") is None


def test_an_id_only_block_first_in_the_stream_is_found() -> None:
    """It used to be skipped (no event, no row in the cassette's events): replayed whole."""
    resumed = resume(chunks(b"id: 5\n\n", b"data: a\n\n"), "5")
    assert left(resumed) == [b"data: a\n\n"]
    assert resumed is not None and (resumed.origin_ns, resumed.skipped) == (0, 7)


def test_the_first_event_with_the_id_wins() -> None:
    stream = chunks(b"id: 7\ndata: a\n\n", b"data: b\n\n", b"id: 7\ndata: c\n\n")
    assert left(resume(stream, "7")) == [b"data: b\n\n", b"id: 7\ndata: c\n\n"]


def test_a_crlf_ending_inside_a_chunk_is_skipped_whole() -> None:
    stream = chunks(b"id: 1\r\ndata: a\r\n\r\nid: 2\r\ndata: b\r\n\r\n")
    resumed = resume(stream, "1")
    assert left(resumed) == [b"id: 2\r\ndata: b\r\n\r\n"]
    assert resumed is not None and resumed.skipped == len(b"id: 1\r\ndata: a\r\n\r\n") == 18


def test_a_crlf_ending_split_across_chunks_skips_its_lf() -> None:
    stream = chunks(b"id: 1\r\ndata: a\r\n\r", b"\nid: 2\r\ndata: b\r\n\r", b"\n")
    resumed = resume(stream, "1")
    assert left(resumed) == [b"id: 2\r\ndata: b\r\n\r", b"\n"]
    assert resumed is not None
    assert (resumed.origin_ns, resumed.skipped) == (0, 18)  # the CR's chunk, and the LF
    assert left(resume(stream, "2")) == []  # its LF was the last byte


def test_the_lf_of_a_split_crlf_may_come_after_empty_chunks() -> None:
    stream = chunks(b"id: 1\r\ndata: a\r\n\r", b"", b"\ndata: b\r\n\r\n")
    assert left(resume(stream, "1")) == [b"data: b\r\n\r\n"]


def test_a_cr_ending_keeps_what_follows_it() -> None:
    stream = chunks(b"id: 1\rdata: a\r\r", b"data: b\r\r")
    resumed = resume(stream, "1")
    assert left(resumed) == [b"data: b\r\r"]
    assert resumed is not None and resumed.skipped == 15


def test_a_cr_ending_the_last_chunk_leaves_nothing() -> None:
    resumed = resume(chunks(b"data: x\n\nid: 1\r\ndata: a\r\n\r"), "1")
    assert resumed is not None and left(resumed) == [] and resumed.skipped == 26


def test_multi_byte_utf8_split_inside_a_character() -> None:
    event = "id: 안녕\ndata: 데모 업스트림\n\n".encode()
    after = "data: 입니다\n\n".encode()
    whole = event + after
    for cut in range(1, len(whole)):  # every split, including inside a character
        resumed = resume(chunks(whole[:cut], whole[cut:]), "안녕")
        assert b"".join(left(resumed)) == after, cut
        assert resumed is not None and resumed.skipped == len(event)


def test_cut_waits_for_the_lf_then_passes_everything_on() -> None:
    cut = Cut("1")
    assert cut.feed(Chunk(0, 5, b"id: 1\r\ndata: a\r\n\r")) is None  # a LF may follow
    assert cut.feed(Chunk(1, 9, b"")) is None
    assert cut.feed(Chunk(2, 12, b"\ndata: b\r\n\r\n")) == [Chunk(2, 12, b"data: b\r\n\r\n")]
    assert (cut.origin_ns, cut.skipped) == (5, 18)


def test_cut_finish_tells_found_from_not_found() -> None:
    found = Cut("1")
    assert found.feed(Chunk(0, 0, b"id: 1\rdata: a\r\r")) is None
    assert found.finish() == []
    missing = Cut("1")
    assert missing.feed(Chunk(0, 0, b"data: a\n\n")) is None
    assert missing.finish() is None


# -- for any chunking, the cut is the unchunked stream's ----------------------------------------

ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=6)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, str]:
    """An event stream (ids, comments, retries, every line ending, UTF-8) and an id in it."""
    lines: list[str] = ["\ufeff"] if draw(st.booleans()) else []
    ids: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        eol = draw(ENDINGS)
        if draw(st.booleans()):
            lines.append(f": {draw(TEXT)}{eol}")
        if draw(st.booleans()):
            lines.append(f"retry: {draw(st.integers(0, 5000))}{eol}")
        event_id = draw(st.none() | TEXT)
        if event_id is not None:
            lines.append(f"id: {event_id}{eol}")
            ids.append(event_id)
        # no data lines: an id-only block, which a reconnecting client's id can name too
        lines.extend(f"data: {d}{eol}" for d in draw(st.lists(TEXT, min_size=0, max_size=3)))
        lines.append(eol)
    if not ids:
        ids.append(draw(TEXT))
        lines.append(f"id: {ids[0]}\r\ndata: x\r\n\r\n")
    return "".join(lines).encode(), draw(st.sampled_from(ids))


def chunked(stream: bytes, cuts: list[int], empties: list[int]) -> list[Chunk]:
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    for at in empties:  # empty chunks anywhere: nothing is sent for them
        pieces.insert(at % (len(pieces) + 1), b"")
    return chunks(*pieces)


@given(streams(), st.lists(st.integers(0, 10_000), max_size=12),
       st.lists(st.integers(0, 20), max_size=3))
def test_any_chunking_leaves_the_bytes_after_the_event(
    case: tuple[bytes, str], cuts: list[int], empties: list[int]
) -> None:
    stream, last_id = case
    event = next(i for i in SSEParser(id_blocks=True).feed(stream)
                 if isinstance(i, Event) and i.id == last_id)
    end = event.end
    if stream[end - 1:end] == b"\r" and stream[end:end + 1] == b"\n":
        end += 1  # a CRLF ending is skipped whole
    whole = resume(chunks(stream), last_id)
    pieces = chunked(stream, cuts, empties)
    resumed = resume(pieces, last_id)
    assert whole is not None and resumed is not None
    assert b"".join(left(resumed)) == b"".join(left(whole)) == stream[end:]
    assert resumed.skipped == whole.skipped == end
    # the schedule counts from the chunk holding the event's last byte (its CR or LF)
    position = 0
    for chunk in pieces:
        if position <= event.end - 1 < position + len(chunk.data):
            assert resumed.origin_ns == chunk.offset_ns
        position += len(chunk.data)

"""Conformance tests for the sans-IO SSE parser in `sse_recorder.sse`.

The reference is the WHATWG HTML "event stream interpretation":
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Comments are an extension of this project: the spec ignores them, the parser reports them.
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.sse import (
    Comment,
    Event,
    EventCounter,
    IdBlock,
    Item,
    SSEParser,
    encode_event,
    parse,
)

BOM = b"\xef\xbb\xbf"
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------
# helpers


def feed_all(chunks: list[bytes]) -> tuple[list[Item], SSEParser]:
    """Feed `chunks` to a fresh parser, then close it."""
    parser = SSEParser()
    items: list[Item] = []
    for chunk in chunks:
        items.extend(parser.feed(chunk))
    items.extend(parser.close())
    return items, parser


def split_at(stream: bytes, points: list[int]) -> list[bytes]:
    """Cut `stream` at the given positions (repeated positions give empty chunks)."""
    bounds = [0, *sorted(points), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def bytewise(stream: bytes, empties: bool = False) -> list[bytes]:
    """One byte per chunk, optionally with an empty chunk before and after each byte."""
    chunks: list[bytes] = []
    for i in range(len(stream)):
        if empties:
            chunks.append(b"")
        chunks.append(stream[i : i + 1])
    if empties:
        chunks.append(b"")
    return chunks


def with_positions(items: list[Item]) -> list[tuple[object, ...]]:
    """Items as tuples that include the `start`/`end` positions equality ignores."""
    return [(type(item).__name__, *dataclasses.astuple(item)) for item in items]


def events(items: list[Item]) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


def ev(
    data: str,
    type: str = "message",
    id: str | None = None,
    retry: int | None = None,
) -> Event:
    return Event(type=type, data=data, id=id, retry=retry)


def reference_parse(stream: bytes) -> tuple[list[Item], str, int | None]:
    """A deliberately naive, whole-stream transcription of the spec, used as an oracle.

    It decodes the whole stream at once (the spec's UTF-8 decode: one leading BOM is dropped,
    errors become U+FFFD), splits it with a regex, and keeps the spec's string buffers
    (`data` ends with LF per line, "empty data buffer" means no dispatch).
    Returns (items, last event ID buffer, reconnection time).
    """
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    text = stream.decode("utf-8", errors="replace")
    items: list[Item] = []
    data_buffer = ""
    type_buffer = ""
    last_id = ""
    reconnection: int | None = None
    block_id: str | None = None
    block_retry: int | None = None
    for match in re.finditer(r"([^\r\n]*)(?:\r\n|\r|\n)", text):
        line = match.group(1)
        if line == "":
            if data_buffer == "":
                type_buffer = ""
            else:
                if data_buffer.endswith("\n"):
                    data_buffer = data_buffer[:-1]
                items.append(Event(type_buffer or "message", data_buffer, block_id, block_retry))
                data_buffer = type_buffer = ""
            block_id = block_retry = None
            continue
        if line.startswith(":"):
            comment = line[1:]
            items.append(Comment(comment[1:] if comment.startswith(" ") else comment))
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            type_buffer = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_id = block_id = value
        elif name == "retry":
            if value and all(c in "0123456789" for c in value):
                reconnection = block_retry = int(value)
    return items, last_id, reconnection


# --------------------------------------------------------------------------------------------
# data model and API


def test_items_are_frozen_and_compare_without_positions() -> None:
    a = Event("message", "x", None, None, start=0, end=9)
    b = Event("message", "x", None, None, start=5, end=7)
    assert a == b
    assert Comment("hi", 0, 4) == Comment("hi", 3, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.data = "y"  # type: ignore[misc]


def test_defaults() -> None:
    parser = SSEParser()
    assert parser.last_event_id == ""
    assert parser.reconnection_time is None
    assert Event() == Event("message", "", None, None)


def test_feed_returns_items_as_soon_as_they_are_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping\n") == [Comment("ping")]
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [ev("a")]
    # A blank line ended by CR dispatches at once: the parser does not wait for a possible LF.
    assert parser.feed(b"data: b\r\r") == [ev("b")]
    assert parser.feed(b"\n") == []  # the LF of that CRLF
    assert parser.close() == []


def test_parse_returns_events_and_comments_in_stream_order() -> None:
    stream = b": one\ndata: a\n: two\ndata: b\n\n: three\n"
    assert parse(stream) == [Comment("one"), Comment("two"), ev("a\nb"), Comment("three")]


# --------------------------------------------------------------------------------------------
# line endings


@pytest.mark.parametrize("nl", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_each_line_ending(nl: bytes) -> None:
    stream = nl.join([b"event: e", b"data: a", b"data: b", b"", b": c", b"data: d", b"", b""])
    assert parse(stream) == [ev("a\nb", type="e"), Comment("c"), ev("d")]


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\ndata: c\r\n\r\ndata: d\n\r\ndata: e\r\r"
    assert parse(stream) == [ev("a\nb\nc"), ev("d"), ev("e")]


def test_lf_cr_is_two_line_endings() -> None:
    assert parse(b"data: a\n\rdata: b\n\n") == [ev("a"), ev("b")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    items, _ = feed_all([b"data: a\r", b"\n\ndata: b\n\n"])
    assert items == [ev("a"), ev("b")]
    assert with_positions(items) == with_positions(parse(b"data: a\r\n\ndata: b\n\n"))
    # The LF after a chunk-final CR must not be read as a blank line (that would dispatch).
    items, _ = feed_all([b"data: a\r", b"\ndata: b\n\n"])
    assert items == [ev("a\nb")]


def test_crlf_split_with_empty_chunks_between() -> None:
    items, _ = feed_all([b"data: a\r", b"", b"", b"\ndata: b\r", b"", b"\n\r", b"", b"\n"])
    assert items == [ev("a\nb")]


def test_cr_then_cr_then_lf_across_chunks() -> None:
    # CR ends "data: a"; the second CR is a blank line (dispatch); its LF is skipped.
    items, _ = feed_all([b"data: a\r", b"\r", b"\n", b"data: b\n\n"])
    assert items == [ev("a"), ev("b")]


def test_only_the_first_lf_after_cr_is_skipped() -> None:
    items, _ = feed_all([b"data: a\r", b"\n\n", b"data: b\r", b"\n", b"\n"])
    assert items == [ev("a"), ev("b")]


@pytest.mark.parametrize(
    "char",
    [
        "\u2028",  # LINE SEPARATOR
        "\u2029",  # PARAGRAPH SEPARATOR
        "\u0085",  # NEXT LINE (NEL)
        "\x0b",  # LINE TABULATION
        "\x0c",  # FORM FEED
        "\x1c",
        "\x1d",
        "\x1e",
        "\x00",
    ],
)
def test_only_cr_and_lf_end_lines(char: str) -> None:
    stream = f"data: a{char}b\nid: x{char}y\n\n".encode()
    expected_id = None if char == "\x00" else f"x{char}y"
    assert parse(stream) == [ev(f"a{char}b", id=expected_id)]


def test_a_lone_0x85_byte_is_invalid_utf8_not_a_line_ending() -> None:
    assert parse(b"data: a\x85b\n\n") == [ev("a\ufffdb")]


# --------------------------------------------------------------------------------------------
# byte order mark


def test_leading_bom_is_stripped() -> None:
    assert parse(BOM + b"data: a\n\n") == [ev("a")]


@pytest.mark.parametrize(
    "chunks",
    [
        [BOM[:1], BOM[1:2], BOM[2:], b"data: a\n\n"],
        [BOM[:1], BOM[1:] + b"data: a\n\n"],
        [BOM[:2], BOM[2:] + b"data: a\n\n"],
        [b"", BOM[:1], b"", BOM[1:2], b"", BOM[2:], b"", b"data: a\n\n"],
        [BOM + b"d", b"ata: a\n\n"],
    ],
)
def test_split_bom_is_stripped(chunks: list[bytes]) -> None:
    items, _ = feed_all(chunks)
    assert with_positions(items) == with_positions(parse(BOM + b"data: a\n\n"))
    assert items == [ev("a")]
    assert (items[0].start, items[0].end) == (3, 12)


def test_second_bom_is_not_stripped() -> None:
    # The first line's field name is "\ufeffdata": unknown, so the first block is ignored.
    stream = BOM + BOM + b"data: 1\n\ndata: 2\n\n"
    assert parse(stream) == [ev("2")]
    assert feed_all(bytewise(stream))[0] == [ev("2")]


def test_bom_after_the_stream_start_is_not_stripped() -> None:
    assert parse(b"data: 1\n\n" + BOM + b"data: 2\n\n") == [ev("1")]
    assert parse(b"data: " + BOM + b"1\n\n") == [ev("\ufeff1")]
    assert parse(b"\n" + BOM + b"data: 1\n\n") == []


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"], ids=["UTF-16LE", "UTF-16BE"])
def test_utf16_bom_is_not_a_bom(bom: bytes) -> None:
    # Streams are always UTF-8: the first line's field name is "\ufffd\ufffddata".
    assert parse(bom + b"data:1\n\ndata:2") == []
    assert parse(bom + b"data:1\n\ndata:2\n\n") == [ev("2")]


def test_partial_bom_is_data() -> None:
    # b"\xef\xbb" followed by "d" decodes to a single U+FFFD, making the field "\ufffddata".
    stream = BOM[:2] + b"data: 1\n\ndata: 2\n\n"
    assert parse(stream) == [ev("2")]
    assert feed_all([BOM[:1], BOM[1:2], b"data: 1\n\ndata: 2\n\n"])[0] == [ev("2")]
    assert feed_all([BOM[:2], b""])[0] == []
    assert parse(BOM[:2] + b"\n:x\n") == [Comment("x")]


def test_stream_that_is_only_a_bom() -> None:
    assert parse(BOM) == []
    assert feed_all(bytewise(BOM))[0] == []


# --------------------------------------------------------------------------------------------
# comments


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b": hello", "hello"),
        (b":hello", "hello"),
        (b":  two spaces", " two spaces"),
        (b":", ""),
        (b": ", ""),
        (b": a: b", "a: b"),
        (b":\tx", "\tx"),
        (b"::", ":"),
    ],
)
def test_comment_text(line: bytes, text: str) -> None:
    assert parse(line + b"\n") == [Comment(text)]


def test_comments_do_not_end_or_start_an_event() -> None:
    stream = b"data: a\n: keep-alive\ndata: b\n\n:\n\n"
    assert parse(stream) == [Comment("keep-alive"), ev("a\nb"), Comment("")]


def test_comment_only_block_does_not_dispatch() -> None:
    assert parse(b": x\n\n: y\n\n") == [Comment("x"), Comment("y")]


# --------------------------------------------------------------------------------------------
# fields


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data: x", "x"),
        (b"data:x", "x"),
        (b"data:  x", " x"),  # only one space is removed
        (b"data:   x ", "  x "),
        (b"data: ", ""),
        (b"data:", ""),
        (b"data", ""),  # no colon: the whole line is the name, the value is empty
        (b"data:\tx", "\tx"),  # only U+0020 is removed
        (b"data: a:b: c", "a:b: c"),  # the value runs from the first colon
        (b"data::", ":"),
        (b"data: \x00", "\x00"),
    ],
)
def test_field_value(line: bytes, data: str) -> None:
    assert parse(line + b"\n\n") == [ev(data)]


@pytest.mark.parametrize(
    "line",
    [b"Data: x", b"DATA: x", b"data : x", b" data: x", b"dat: x", b"datax", b"data\t: x"],
)
def test_field_names_are_exact(line: bytes) -> None:
    assert parse(line + b"\n\n") == []


def test_data_lines_are_joined_with_lf() -> None:
    assert parse(b"data: a\ndata\ndata: b\ndata:\n\n") == [ev("a\n\nb\n")]


def test_data_without_colon_appends_an_empty_line() -> None:
    assert parse(b"data\n\n") == [ev("")]
    assert parse(b"data\ndata\n\n") == [ev("\n")]


def test_unknown_fields_are_ignored() -> None:
    stream = b"foo: bar\ndata: a\nbaz\nDATA: nope\n: c\n\nfoo: only\n\n"
    assert parse(stream) == [Comment("c"), ev("a")]


def test_event_type_defaults_to_message() -> None:
    assert parse(b"data: a\n\n") == [ev("a", type="message")]
    assert parse(b"event:\ndata: a\n\n") == [ev("a", type="message")]
    assert parse(b"event\ndata: a\n\n") == [ev("a", type="message")]
    assert parse(b"event: \ndata: a\n\n") == [ev("a", type="message")]


def test_later_event_field_overrides() -> None:
    assert parse(b"event: a\ndata: x\nevent: b\n\n") == [ev("x", type="b")]
    assert parse(b"event: a\nevent:\ndata: x\n\n") == [ev("x", type="message")]


def test_event_type_is_reset_after_each_block() -> None:
    stream = b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n"
    assert parse(stream) == [ev("1", type="a"), ev("2"), ev("3")]


def test_event_type_is_kept_verbatim() -> None:
    assert parse(b"event:  spaced \ndata: x\n\n") == [ev("x", type=" spaced ")]
    assert parse("event: 이벤트\ndata: x\n\n".encode()) == [ev("x", type="이벤트")]


# --------------------------------------------------------------------------------------------
# dispatch


def test_blank_line_dispatches() -> None:
    assert parse(b"data: a\n\ndata: b\n\n") == [ev("a"), ev("b")]


def test_extra_blank_lines_dispatch_nothing() -> None:
    assert parse(b"\n\n\r\n\rdata: a\n\n\n\n\r\n") == [ev("a")]


def test_no_dispatch_without_data() -> None:
    assert parse(b"event: x\n\n") == []
    assert parse(b"event: x\nid: 1\nretry: 5\nfoo\n\n") == []


@pytest.mark.parametrize(
    "stream",
    [b"data: a", b"data: a\n", b"data: a\r", b"data: a\r\n", b"data: a\n\ndata: b\n"],
)
def test_unterminated_event_is_discarded(stream: bytes) -> None:
    complete = [ev("a")] if stream.startswith(b"data: a\n\n") else []
    assert parse(stream) == complete
    parser = SSEParser()
    assert parser.feed(stream) == complete
    assert parser.close() == []


def test_unterminated_comment_is_discarded() -> None:
    assert parse(b": never ends") == []


# --------------------------------------------------------------------------------------------
# id and last_event_id


def test_id_persists_in_last_event_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 1\ndata: a\n\n") == [ev("a", id="1")]
    assert parser.last_event_id == "1"
    # Event.id is the block's own field; the buffer keeps the last one.
    assert parser.feed(b"data: b\n\n") == [ev("b")]
    assert parser.last_event_id == "1"
    assert parser.feed(b"id: 2\ndata: c\n\n") == [ev("c", id="2")]
    assert parser.last_event_id == "2"


@pytest.mark.parametrize("line", [b"id:", b"id: ", b"id"])
def test_empty_id_resets_last_event_id(line: bytes) -> None:
    parser = SSEParser()
    parser.feed(b"id: 1\ndata: a\n\n")
    assert parser.feed(line + b"\ndata: b\n\n") == [ev("b", id="")]
    assert parser.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    parser = SSEParser()
    parser.feed(b"id: 1\ndata: a\n\n")
    assert parser.feed(b"id: a\x00b\ndata: b\n\n") == [ev("b")]
    assert parser.last_event_id == "1"
    assert parser.feed(b"id: 2\nid: \x00\ndata: c\n\n") == [ev("c", id="2")]
    assert parser.last_event_id == "2"


def test_id_without_data_still_sets_the_buffer() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\n\n") == []
    assert parser.last_event_id == "7"
    assert parser.feed(b"data: x\n\n") == [ev("x")]
    assert parser.last_event_id == "7"


def test_id_is_set_when_the_line_ends_not_when_the_event_dispatches() -> None:
    parser = SSEParser()
    parser.feed(b"data: x\nid: 9\n")
    assert parser.last_event_id == "9"
    parser.close()  # the event is discarded, the buffer is not rolled back
    assert parser.last_event_id == "9"


def test_id_only_blocks_are_reported_only_when_asked() -> None:
    stream = b"id: 7\n\n: c\n\nretry: 5\n\nid: 8\ndata: x\n\nid\n\n"
    assert [i for i in parse(stream) if isinstance(i, Event)] == [ev("x", id="8")]
    items = SSEParser(id_blocks=True).feed(stream)
    blocks = [i for i in items if isinstance(i, IdBlock)]
    assert [(b.id, stream[b.start:b.end]) for b in blocks] == [("7", b"id: 7\n\n"),
                                                               ("", b"id\n\n")]
    assert [i for i in items if type(i) is Event] == [ev("x", id="8")]


@given(st.lists(st.integers(0, 40), max_size=8))
def test_id_only_blocks_do_not_depend_on_the_chunking(points: list[int]) -> None:
    stream = b"id: 1\r\n\r\ndata: a\rid: 2\r\rid: 3\n: c\n\n"
    parser = SSEParser(id_blocks=True)
    items = [i for chunk in split_at(stream, points) for i in parser.feed(chunk)]
    assert with_positions(items) == with_positions(SSEParser(id_blocks=True).feed(stream))
    assert [(i.id, type(i).__name__) for i in items if isinstance(i, Event)] == [
        ("1", "IdBlock"), ("2", "Event"), ("3", "IdBlock")]


def test_later_id_in_block_wins_and_keeps_spaces() -> None:
    assert parse(b"id: 1\nid:  2 \ndata: x\n\n") == [ev("x", id=" 2 ")]


# --------------------------------------------------------------------------------------------
# retry and reconnection_time


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1000", 1000), ("0", 0), ("007", 7), ("1" * 40, int("1" * 40))],
)
def test_retry_valid(value: str, expected: int) -> None:
    parser = SSEParser()
    assert parser.feed(f"retry: {value}\ndata: x\n\n".encode()) == [ev("x", retry=expected)]
    assert parser.reconnection_time == expected


@pytest.mark.parametrize(
    "value",
    [
        "1a",
        "-1",
        "+1",
        "1.5",
        "1e3",
        "0x10",
        " 5",  # the second space is part of the value
        "5 ",
        "",
        "١٢",  # ARABIC-INDIC digits
        "１２",  # FULLWIDTH digits
        "²",  # SUPERSCRIPT TWO
        "1_000",
        "\x00",
    ],
)
def test_retry_not_only_ascii_digits_is_ignored(value: str) -> None:
    parser = SSEParser()
    parser.feed(b"retry: 50\ndata: a\n\n")
    assert parser.feed(f"retry: {value}\ndata: x\n\n".encode()) == [ev("x")]
    assert parser.reconnection_time == 50


def test_retry_without_colon_is_ignored() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry\ndata: x\n\n") == [ev("x")]
    assert parser.reconnection_time is None


def test_retry_without_data_sets_reconnection_time() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 1234\n\n") == []
    assert parser.reconnection_time == 1234
    assert parser.feed(b"data: x\n\n") == [ev("x")]  # retry is per block on the event
    assert parser.reconnection_time == 1234


def test_retry_with_thousands_of_digits_does_not_crash() -> None:
    # int() refuses more than sys.get_int_max_str_digits() (4300) digits: such a value is
    # ignored rather than raising out of feed().
    parser = SSEParser()
    parser.feed(b"retry: 10\n\n")
    huge = b"9" * 5000
    assert parser.feed(b"retry: " + huge + b"\ndata: x\n\n") == [ev("x")]
    assert parser.reconnection_time == 10
    # Leading zeros do not count: this is 5.
    assert parser.feed(b"retry: " + b"0" * 5000 + b"5\ndata: y\n\n") == [ev("y", retry=5)]
    assert parser.reconnection_time == 5


# --------------------------------------------------------------------------------------------
# UTF-8


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\xff", "\ufffd"),
        (b"a\xfe\xffb", "a\ufffd\ufffdb"),
        (b"\xe2\x82", "\ufffd"),  # truncated sequence: one U+FFFD (maximal subpart)
        (b"\xe2\x82x", "\ufffdx"),
        (b"\xc0\xaf", "\ufffd\ufffd"),  # overlong
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # surrogate
        (b"\xf4\x90\x80\x80", "\ufffd" * 4),  # beyond U+10FFFF
        (b"\x80", "\ufffd"),  # lone continuation byte
    ],
)
def test_invalid_utf8_becomes_replacement_characters(raw: bytes, text: str) -> None:
    stream = b"data: " + raw + b"\n\n"
    assert parse(stream) == [ev(text)]
    assert feed_all(bytewise(stream))[0] == [ev(text)]


def test_truncated_sequence_before_a_line_ending() -> None:
    assert parse(b"data: \xea\xb0\ndata: b\n\n") == [ev("\ufffd\nb")]


def test_invalid_utf8_in_a_field_name_makes_it_unknown() -> None:
    assert parse(b"dat\xe1: x\n\ndata: y\n\n") == [ev("y")]


def test_valid_multibyte_text() -> None:
    text = "안녕하세요 😀 é ‮ \ufeff"
    assert parse(f"event: 인사\ndata: {text}\n\n".encode()) == [ev(text, type="인사")]


# --------------------------------------------------------------------------------------------
# examples from the WHATWG specification


def test_spec_example_stock_ticker() -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [ev("YHOO\n+2\n10")]


def test_spec_example_comment_and_ids() -> None:
    stream = (
        b": test stream\n"
        b"\n"
        b"data: first event\n"
        b"id: 1\n"
        b"\n"
        b"data:second event\n"
        b"id\n"
        b"\n"
        b"data:  third event\n"
    )
    parser = SSEParser()
    seen: list[tuple[Item, str]] = []
    for chunk in bytewise(stream):
        seen.extend((item, parser.last_event_id) for item in parser.feed(chunk))
    assert parser.close() == []
    assert seen == [
        (Comment("test stream"), ""),
        (ev("first event", id="1"), "1"),
        (ev("second event", id=""), ""),
    ]
    # The last block is only dispatched once a blank line follows; its data keeps one space.
    assert parse(stream + b"\n") == [
        Comment("test stream"),
        ev("first event", id="1"),
        ev("second event", id=""),
        ev(" third event"),
    ]


def test_spec_example_empty_data() -> None:
    # Two events: "" and "\n"; the last block is discarded (no blank line follows it).
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [ev(""), ev("\n")]


def test_spec_example_space_after_colon_is_optional() -> None:
    assert parse(b"data:test\n\ndata: test\n\n") == [ev("test"), ev("test")]


def test_spec_example_event_types() -> None:
    stream = (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    assert parse(stream) == [
        ev("73857293", type="add"),
        ev("2153", type="remove"),
        ev("113411", type="add"),
    ]


# --------------------------------------------------------------------------------------------
# hostile chunkings

CHUNKING_STREAMS = [
    pytest.param(b"data: a\r\n\r\ndata: b\r\n\r\n", id="crlf"),
    pytest.param(b"data: a\r\rdata: b\r\r\n", id="cr"),
    pytest.param(b"data: a\n\r\n\rdata: b\n\n", id="mixed"),
    pytest.param(BOM + b": c\r\nid: 1\r\nevent: e\r\ndata: x\r\n\r\n", id="bom"),
    pytest.param("data: 안녕하세요\r\ndata: 😀🇰🇷\r\n\r\n".encode(), id="korean-emoji"),
    pytest.param(b"data: \xe2\x82\r\ndata: \xff\r\n\r\n", id="invalid-utf8"),
    pytest.param("event: ü\rid: ∅\rretry: 12\rdata:  \u2028\r\r".encode(), id="unicode-cr"),
]


@pytest.mark.parametrize("stream", CHUNKING_STREAMS)
def test_every_two_chunk_split(stream: bytes) -> None:
    expected = with_positions(parse(stream))
    assert events(parse(stream))
    for i in range(len(stream) + 1):
        assert with_positions(feed_all(split_at(stream, [i]))[0]) == expected, i


@pytest.mark.parametrize("stream", CHUNKING_STREAMS)
def test_every_three_chunk_split(stream: bytes) -> None:
    expected = with_positions(parse(stream))
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert with_positions(feed_all(split_at(stream, [i, j]))[0]) == expected, (i, j)


@pytest.mark.parametrize("stream", CHUNKING_STREAMS)
@pytest.mark.parametrize("empties", [False, True])
def test_one_byte_at_a_time(stream: bytes, empties: bool) -> None:
    items, parser = feed_all(bytewise(stream, empties=empties))
    assert with_positions(items) == with_positions(parse(stream))
    whole = SSEParser()
    whole.feed(stream)
    assert parser.last_event_id == whole.last_event_id
    assert parser.reconnection_time == whole.reconnection_time


def test_multibyte_character_split_everywhere() -> None:
    stream = "data: 한국어 😀\n\n".encode()
    for i in range(len(stream) + 1):
        assert feed_all(split_at(stream, [i]))[0] == [ev("한국어 😀")]


# --------------------------------------------------------------------------------------------
# positions


def test_positions_slice_the_block() -> None:
    stream = b": c\r\nevent: e\ndata: a\n\nid: 1\rdata: b\r\n\r\n\n\ndata: c\r\r"
    items = parse(stream)
    assert items == [Comment("c"), ev("a", type="e"), ev("b", id="1"), ev("c")]
    slices = [stream[item.start : item.end] for item in items]
    assert slices == [
        b": c\r",  # the LF of a final CRLF is not part of the item
        b"event: e\ndata: a\n\n",
        b"id: 1\rdata: b\r\n\r",
        b"data: c\r\r",
    ]


def test_positions_count_the_bom() -> None:
    stream = BOM + b"data: a\n\n: x\n"
    items = parse(stream)
    assert [(item.start, item.end) for item in items] == [(3, 12), (12, 16)]
    assert stream[items[0].start : items[0].end] == b"data: a\n\n"


def test_block_starts_at_its_first_field_line_even_if_unknown() -> None:
    stream = b"\n\n: c\nfoo: 1\ndata: a\n\n"
    event = events(parse(stream))[0]
    assert stream[event.start : event.end] == b"foo: 1\ndata: a\n\n"


def test_positions_after_a_block_without_data() -> None:
    stream = b"event: x\n\ndata: a\n\n"
    event = events(parse(stream))[0]
    assert stream[event.start : event.end] == b"data: a\n\n"


# --------------------------------------------------------------------------------------------
# at_event_boundary / earliest_open_position (used by the faults' event splitting)


def test_at_event_boundary() -> None:
    parser = SSEParser()
    assert parser.at_event_boundary
    steps = [
        (BOM[:2], False),  # a BOM may still be arriving
        (BOM[2:], True),
        (b": ping", False),  # half a line
        (b"\n", True),  # comments are not events
        (b"data: a", False),
        (b"\r", False),  # the line is complete, the event is not
        (b"\n", False),
        (b"\r\n", True),
        (b"event: x\n", False),  # a block without data is still open until its blank line
        (b"\n", True),
    ]
    for chunk, expected in steps:
        parser.feed(chunk)
        assert parser.at_event_boundary is expected, chunk
    parser.feed(b"data: unterminated\n")
    parser.close()
    assert parser.at_event_boundary


@HYPOTHESIS
@given(st.data())
def test_items_never_start_before_earliest_open_position(data: st.DataObject) -> None:
    # The faults tell a comment inside an event's block by `earliest_open_position`: every
    # item completed later must start at or after it, and it never moves backwards.
    stream, chunks = data.draw(chunked_streams())
    parser = SSEParser()
    floor = 0
    for chunk in chunks:
        items = parser.feed(chunk)
        assert all(item.start >= floor for item in items)
        assert parser.earliest_open_position >= floor
        floor = parser.earliest_open_position
        assert floor <= len(stream)
    whole = SSEParser()
    whole.feed(stream)
    assert parser.at_event_boundary == whole.at_event_boundary
    assert parser.earliest_open_position == whole.earliest_open_position


# --------------------------------------------------------------------------------------------
# memory and time bounds


def test_memory_stays_bounded_over_10_mb_of_events() -> None:
    block = b"id: 42\nevent: tick\ndata: " + b"x" * 900 + b"\ndata: y\n\n"
    stream = block * (10 * 1024 * 1024 // len(block) + 1)
    parser = SSEParser()
    count = 0
    step = 65_536 + 7  # not a multiple of the block size: chunks end mid-line
    for i in range(0, len(stream), step):
        count += len(parser.feed(stream[i : i + step]))
        assert len(parser._pending) <= len(block)
        assert len(parser._data) <= 2
    assert count == len(stream) // len(block)
    assert len(stream) >= 10 * 1024 * 1024
    assert len(parser._pending) == 0
    assert parser._data == []


def test_long_line_in_small_chunks_is_linear() -> None:
    # Re-building the pending line with `bytes + bytes` on every chunk is quadratic: tens of
    # seconds for this input. Linear buffering takes about a tenth of a second.
    size = 4 * 1024 * 1024
    line = b"data: " + b"x" * size + b"\n\n"
    parser = SSEParser()
    items: list[Item] = []
    started = time.perf_counter()
    for i in range(0, len(line), 32):
        items.extend(parser.feed(line[i : i + 32]))
    elapsed = time.perf_counter() - started
    assert [len(e.data) for e in events(items)] == [size]
    assert elapsed < 3.0


# --------------------------------------------------------------------------------------------
# property tests


_TEXT_CHARS = st.one_of(
    st.sampled_from(list("ab :\t0123456789") + ["\x00", "\ufeff", "\u2028", "\x85", "\x0b"]),
    st.sampled_from(list("한국어😀é١２")),
    st.characters(exclude_categories=("Cs",)),
)
_TEXT = st.text(_TEXT_CHARS, max_size=10)
_LINE_TEXT = st.one_of(
    st.tuples(
        st.sampled_from(["data", "event", "id", "retry", "foo", "Data", ""]),
        st.sampled_from(["", ":", ": ", ":  "]),
        _TEXT,
    ).map("".join),
    st.integers(0, 10**12).map(lambda n: f"retry: {n}"),
    st.sampled_from(["retry: 1a", "retry: -1", "retry: ١٢", "id: a\x00b", "id", "data", ""]),
    _TEXT.map(lambda t: ":" + t),
)
_LINE = st.one_of(_LINE_TEXT.map(str.encode), st.binary(max_size=6))
_ENDING = st.sampled_from([b"\n", b"\r", b"\r\n", b"\n", b"\r\n", b""])
_PREFIX = st.sampled_from([b"", b"", BOM, BOM + BOM, BOM[:2], b"\xfe\xff"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_LINE, _ENDING), max_size=25))
    return draw(_PREFIX) + b"".join(line + ending for line, ending in lines)


@st.composite
def chunked_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(sse_streams())
    points = draw(st.lists(st.integers(0, len(stream)), max_size=12))
    return stream, split_at(stream, points)


@HYPOTHESIS
@given(chunked_streams())
def test_chunking_never_changes_items_or_positions(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    whole_items, whole = feed_all([stream])
    chunked_items, chunked = feed_all(chunks)
    assert with_positions(chunked_items) == with_positions(whole_items)
    assert (chunked.last_event_id, chunked.reconnection_time) == (
        whole.last_event_id,
        whole.reconnection_time,
    )
    assert with_positions(feed_all(bytewise(stream))[0]) == with_positions(whole_items)


@HYPOTHESIS
@given(chunked_streams())
def test_lf_only_chunks_parse_like_their_cr_only_twins(case: tuple[bytes, list[bytes]]) -> None:
    """A chunk without CR takes a fast path (`_feed_lf`); the same stream with every line
    ending a CR takes the general one. Line for line they are the same stream, so items,
    positions and the parser's state must agree however the stream is cut."""
    _, chunks = case
    lf_chunks = [chunk.replace(b"\r", b"\n") for chunk in chunks]
    cr_chunks = [chunk.replace(b"\n", b"\r") for chunk in lf_chunks]
    lf_items, lf = feed_all(lf_chunks)
    cr_items, cr = feed_all(cr_chunks)
    assert with_positions(lf_items) == with_positions(cr_items)
    assert (lf.last_event_id, lf.reconnection_time) == (cr.last_event_id, cr.reconnection_time)
    assert lf_items == reference_parse(b"".join(lf_chunks))[0]


@HYPOTHESIS
@given(sse_streams())
def test_matches_the_reference_transcription_of_the_spec(stream: bytes) -> None:
    items, parser = feed_all([stream])
    expected, last_id, reconnection = reference_parse(stream)
    assert items == expected
    assert parser.last_event_id == last_id
    assert parser.reconnection_time == reconnection


@HYPOTHESIS
@given(sse_streams())
def test_positions_slice_each_item(stream: bytes) -> None:
    items = parse(stream)
    # Items come out in the order their last line ends. An event's block can enclose
    # comments, which come out first, so only the ends are ordered.
    ends = [item.end for item in items]
    assert ends == sorted(set(ends))
    for item in items:
        assert 0 <= item.start < item.end <= len(stream)
        piece = stream[item.start : item.end]
        assert piece[-1:] in (b"\r", b"\n")
        # Re-parsed on its own (after a blank line, so that a U+FEFF starting the piece is not
        # taken for the stream's BOM), the piece gives back the item.
        reparsed = parse(b"\n" + piece)
        if isinstance(item, Event):
            assert events(reparsed) == [item]
        else:
            assert reparsed == [item]


_VALUE = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"))


@HYPOTHESIS
@given(
    data=st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)))),
    event=st.one_of(st.none(), _VALUE),
    id=st.one_of(st.none(), _VALUE.filter(lambda v: "\x00" not in v)),
    retry=st.one_of(st.none(), st.integers(0, 10**15)),
    comment=st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)))),
    newline=st.sampled_from(["\n", "\r", "\r\n"]),
    split=st.integers(0, 10**6),
)
def test_encode_event_round_trips(
    data: str | None,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
    newline: str,
    split: int,
) -> None:
    encoded = encode_event(data, event=event, id=id, retry=retry, comment=comment, newline=newline)
    expected: list[Item] = []
    if comment is not None:
        expected += [Comment(part) for part in re.split(r"\r\n|\r|\n", comment)]
    if data is not None:
        # Every CR, LF or CRLF in the data is a line break, and comes back as LF.
        expected.append(Event(event or "message", re.sub(r"\r\n|\r|\n", "\n", data), id, retry))
    assert parse(encoded) == expected
    point = split % (len(encoded) + 1)
    assert with_positions(feed_all(split_at(encoded, [point]))[0]) == with_positions(parse(encoded))
    parser = SSEParser()
    parser.feed(encoded)
    assert parser.last_event_id == (id or "")
    assert parser.reconnection_time == retry


@HYPOTHESIS
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",))), min_size=1, max_size=5))
def test_encoded_events_concatenate(datas: list[str]) -> None:
    stream = b"".join(encode_event(d) for d in datas)
    assert parse(stream) == [ev(re.sub(r"\r\n|\r|\n", "\n", d)) for d in datas]


def test_encode_event_multiline_and_newline_styles() -> None:
    assert encode_event("a\nb", event="e", id="1", retry=5, comment="hi") == (
        b": hi\nevent: e\nid: 1\nretry: 5\ndata: a\ndata: b\n\n"
    )
    assert encode_event("a", newline="\r\n") == b"data: a\r\n\r\n"
    assert encode_event("a\rb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"
    assert parse(encode_event("a\rb")) == [ev("a\nb")]
    # Only CR and LF split lines: other Unicode line separators stay inside a line.
    assert encode_event(comment="a\u2028b") == ": a\u2028b\n\n".encode()
    assert parse(encode_event(" x")) == [ev(" x")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"id": "1\n2"},
        {"id": "a\x00b"},
        {"retry": -1},
        {"newline": "\u2028"},
        {"newline": ""},
    ],
)
def test_encode_event_rejects_what_cannot_round_trip(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# EventCounter: what the recorder's writer keeps of events (a count, and whether the body
# ended inside one), for any cut of the stream

COUNTED_LINES = st.sampled_from([
    b"data: x", b"data", b"data:", b"datax: y", b"data : z", b"event: e", b"id: 1", b": c", b"",
    b"retry: 5", b"\xef\xbb\xbfdata: b", b"dat", b"a: q", b"data:\xff",
])


@st.composite
def counted_streams(draw: st.DrawFn) -> bytes:
    """Lines that dispatch, do not dispatch or look as if they might, with any line ending
    (CR and CRLF take the counter's parser path), sometimes after a BOM."""
    lines = draw(st.lists(st.tuples(COUNTED_LINES, st.sampled_from([b"\n"] * 6 + [b"\r", b"\r\n"])),
                          max_size=30))
    body = b"".join(line + end for line, end in lines)
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + body


@settings(max_examples=400, deadline=None)
@given(counted_streams(), st.lists(st.integers(0, 400), max_size=10))
def test_the_event_counter_agrees_with_the_parser_however_the_stream_is_cut(
    stream: bytes, cuts: list[int]
) -> None:
    """Pieces ending at a blank line go through one regex, others through a parser that
    hands back at the next boundary: a dispatching block, a BOM and a CRLF may fall on
    either side of any cut."""
    parser = SSEParser()
    items = parser.feed(stream)
    counter = EventCounter()
    bounds = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        counter.feed(stream[start:end])
    assert counter.events == sum(type(item) is Event for item in items)
    assert counter.at_event_boundary == parser.at_event_boundary


def test_the_event_counter_counts_whole_events_in_c() -> None:
    counter = EventCounter()
    counter.feed(b"data: a\ndata: b\n\n: ping\n\nid: 3\n\ndata\n\n")
    assert (counter.events, counter._parser) == (2, None)  # the regex path, nothing kept
    counter.feed(b"data: half")
    assert counter.events == 2 and not counter.at_event_boundary
    counter.feed(b"\r\n\r\n")
    assert counter.events == 3 and counter.at_event_boundary and counter._parser is None

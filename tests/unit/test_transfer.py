"""Import and export formats (sse_recorder.transfer, sse_recorder.mitm.flows): every format
gives back what it was given (generated exchanges with every ending, chunk boundaries
anywhere, bytes no text shows), through a cassette too; the `.sse` reader's semantics and
its errors (line and column)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.transfer import TransferError, ssetext
from sse_recorder.transfer.exchange import Exchange, read_cassette, write_cassette
from sse_recorder.transfer.formats import FORMATS, guess

FORMAT_NAMES = sorted(FORMATS)
REPO = Path(__file__).resolve().parents[2]

# -- generated exchanges -------------------------------------------------------------------

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                 min_size=1, max_size=12)
_LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                blacklist_characters="\x7f"), max_size=20)
# Stream bytes: the interesting ones for a line-based format are line ends, directive and
# escape characters, and bytes that are not UTF-8.
_STREAM = st.lists(st.sampled_from([
    b"data: x", b"\n", b"\r", b"\r\n", b"@", b"\\", b'"', b"event: e", b": c", b"\xff",
    b"\xc3", b"\xa9", b"\t", b" ", b"\0", b"#", b"HTTP/1.1 200", "é".encode(), b"id: 1",
]), max_size=8).map(b"".join)
_NS = st.integers(min_value=0, max_value=10**12)


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    has_response = draw(st.integers(0, 9)) != 0
    outcome = draw(st.sampled_from(list(Outcome)))
    request = RecordedRequest(
        draw(st.sampled_from(["GET", "POST", "PATCH"])),
        "http://127.0.0.1:8080/" + draw(st.text("abc/?=&%-", max_size=10)),
        tuple(draw(st.lists(st.tuples(_TOKEN, _LATIN1), max_size=3))),
        draw(_STREAM | st.binary(max_size=20)),
        draw(st.sampled_from(["HTTP/1.1", "HTTP/2.0"])),
    )
    response = None
    head = None
    chunks: tuple[tuple[int, bytes], ...] = ()
    if has_response:
        response = ResponseHead(
            draw(st.integers(100, 999)), draw(st.sampled_from(["OK", "", "Not Found"])),
            (("Content-Type", "text/event-stream"),
             *draw(st.lists(st.tuples(_TOKEN, _LATIN1), max_size=2))),
            draw(st.sampled_from(["HTTP/1.1", "HTTP/2.0"])))
        head = draw(_NS)
        chunks = tuple(draw(st.lists(st.tuples(_NS, _STREAM), max_size=6)))
    return Exchange(
        request=request,
        started_at=draw(st.integers(0, 4 * 10**15)) / 10**6,  # to the microsecond
        response=response, head_offset_ns=head, chunks=chunks, outcome=outcome,
        end_offset_ns=draw(st.none() | _NS),
        error=draw(st.none() | st.text(max_size=20).filter(
            lambda t: not any("\ud800" <= c <= "\udfff" for c in t))),
    )


def same(a: Exchange, b: Exchange) -> None:
    assert b.request == a.request
    assert b.response == a.response
    assert b.head_offset_ns == a.head_offset_ns
    assert b.chunks == a.chunks  # bytes, boundaries and offsets, to the nanosecond
    assert (b.outcome, b.end_offset_ns, b.error) == (a.outcome, a.end_offset_ns, a.error)
    assert b.started_at == pytest.approx(a.started_at, abs=1e-6)


@pytest.mark.parametrize("name", FORMAT_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=st.lists(exchanges(), min_size=1, max_size=3))
def test_every_format_reads_back_what_it_wrote(name: str, generated: list[Exchange]) -> None:
    written = FORMATS[name].write(generated)
    assert guess(written) == name
    read = FORMATS[name].read(written, f"x.{name}")
    assert read.warnings == []
    assert len(read.exchanges) == len(generated)
    for before, after in zip(generated, read.exchanges, strict=True):
        same(before, after)


# -- through cassettes: what import and export do -------------------------------------------

EVERY_ENDING = [
    Exchange(
        RecordedRequest("GET", f"http://127.0.0.1:8080/stream/{outcome.value}",
                        (("Accept", "text/event-stream"),)),
        1_700_000_000.25 + i,
        ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),)),
        1_500_000,
        ((2_000_000, b"event: a\ndata: 1\n\n"), (52_000_123, b"data: sp"),
         (60_000_000, b"lit\r\n\r\n: ping\r"), (60_000_001, b"\ndata: \xff@\n"))
        + (((90_000_000, b"\n"),) if outcome is Outcome.CLEAN else ()),
        outcome, None if outcome is Outcome.STOPPED else 95_000_000,
        None if outcome is Outcome.CLEAN else f"ended {outcome.value}",
    )
    for i, outcome in enumerate(Outcome) if outcome is not Outcome.PROXY_ERROR
] + [
    Exchange(RecordedRequest("POST", "http://127.0.0.1:8080/v1/chat", (), b'{"a": 1}'),
             1_700_000_100.0, outcome=Outcome.PROXY_ERROR, end_offset_ns=3_000_000,
             error="connection refused"),
    Exchange(RecordedRequest("GET", "http://127.0.0.1:8080/v1/models", ()), 1_700_000_200.5,
             ResponseHead(200, "OK", (("Content-Type", "application/json"),
                                      ("Content-Length", "9"))),
             4_000_000, ((4_500_000, b'{"ok": 1}'),), Outcome.CLEAN, 4_500_000),
]


async def cassette_of(exchanges: list[Exchange], path: Path) -> list[Exchange]:
    await write_cassette(exchanges, path)
    return await read_cassette(path)


@pytest.mark.parametrize("name", FORMAT_NAMES)
async def test_cassette_to_format_to_cassette_keeps_every_ending(
    name: str, tmp_path: Path
) -> None:
    first = await cassette_of(EVERY_ENDING, tmp_path / "first.sqlite")
    assert {e.outcome for e in first} == set(Outcome)
    imported = FORMATS[name].read(FORMATS[name].write(first), "exported")
    second = await cassette_of(imported.exchanges, tmp_path / "second.sqlite")
    assert len(second) == len(first) == len(EVERY_ENDING)
    for original, before, after in zip(EVERY_ENDING, first, second, strict=True):
        same(original, before)
        same(before, after)
        assert after.events == before.events  # parsed again from the same chunks
    assert sum(len(e.events) for e in second) > 0


async def test_an_import_writes_nothing_when_the_target_exists_or_the_input_is_empty(
    tmp_path: Path
) -> None:
    target = tmp_path / "out.sqlite"
    target.write_bytes(b"mine")
    with pytest.raises(TransferError, match="exists"):
        await write_cassette(EVERY_ENDING, target)
    assert target.read_bytes() == b"mine"
    with pytest.raises(TransferError, match="nothing to import"):
        await write_cassette([], tmp_path / "empty.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sqlite"]


async def test_an_import_redacts_as_a_recording_does(tmp_path: Path) -> None:
    exchange = Exchange(
        RecordedRequest("GET", "http://127.0.0.1/s?api_key=k123456789",
                        (("Authorization", "Bearer sk-secret-123456"),)),
        1.0, ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),)), 0,
        ((1, b'data: {"access_token": "abc", "echo": "sk-secret-123456"}\n\n'),))
    [stored] = await cassette_of([exchange], tmp_path / "c.sqlite")
    assert stored.request.url.endswith("api_key=[REDACTED]")
    assert stored.request.headers == (("Authorization", "[REDACTED]"),)
    assert stored.chunks == ((1, b'data: {"access_token": "[REDACTED]", "echo": '
                                 b'"[REDACTED]"}\n\n'),)
    assert "abc" not in stored.events[0].data


# -- the .sse reader ---------------------------------------------------------------------------

def first_block(path: Path, after: str = "") -> bytes:
    """The first ``` block of a document (after a heading), as a file would hold it."""
    text = path.read_text()
    return text[text.index(after):].split("```\n", 2)[1].encode()


def test_the_documented_example_reads_as_it_says() -> None:
    example = first_block(REPO / "cassettes" / "SSE-FORMAT.md")
    [exchange] = ssetext.load(example, "x.sse", now=5.0).exchanges
    assert exchange.request == RecordedRequest(
        "GET", "http://127.0.0.1:8080/events", (("Accept", "text/event-stream"),))
    assert exchange.started_at == 5.0
    assert exchange.head_offset_ns == 120_000_000
    assert exchange.chunks == (
        (120_000_000, b'event: ping\ndata: {"timestamp": "2024-01-15T10:30:00Z"}\n\n'),
        (30_120_000_000, b": heartbeat\n\n"),
        (30_170_000_000, b'data: {"text": "hel'),
        (30_175_000_000, b'lo"}\n\n'),
    )
    assert (exchange.outcome, exchange.end_offset_ns) == (Outcome.CLOSED, 30_175_000_000)


def test_the_readme_example_reads_as_it_says() -> None:
    example = first_block(REPO / "README.md", "### `.sse` files")
    [exchange] = ssetext.load(example, "README.md").exchanges
    assert exchange.head_offset_ns == 40_000_000
    assert [ns for ns, _ in exchange.chunks] == [140_000_000, 40_140_000_000, 40_240_000_000]
    assert exchange.chunks[-1][1] == b'data: {"partial": tr'
    assert (exchange.outcome, exchange.end_offset_ns) == (Outcome.CLOSED, 40_240_000_000)


def test_a_file_ending_without_end_reads_as_end_clean() -> None:
    """`@end` is optional at the end of the file, where it means `@end clean`: the end
    at the clock's time (the last chunk's, or `@wait` later), as an explicit one gives."""
    stream = (b"GET http://127.0.0.1/s\n\n@wait 40ms\nHTTP/1.1 200 OK\n"
              b"Content-Type: text/event-stream\n\n@pace 100ms\ndata: 1\n\ndata: 2\n\n")
    for ending in (b"", b"@wait 5ms\n"):
        [implicit] = ssetext.load(stream + ending, "f.sse", now=1.0).exchanges
        [explicit] = ssetext.load(stream + ending + b"@end clean\n", "f.sse", now=1.0).exchanges
        assert implicit == explicit
        assert implicit.outcome is Outcome.CLEAN
        assert implicit.end_offset_ns == implicit.chunks[-1][0] + (5_000_000 if ending else 0)


def test_pace_line_endings_raw_and_absolute_times() -> None:
    text = b"""POST http://h/x HTTP/2.0
@started 2026-01-15T10:30:00Z
@header "X-Pad" " padded "

{"a":
 1}

HTTP/2.0 200
Content-Type: text/event-stream

@line-ending crlf
@pace 100ms
data: 1

: c
data: 2

@at 1s
@raw "@raw\\xff\\n"
@chunk
data: 3

@end rst at 2s error "gone \\"away\\""
"""
    [exchange] = ssetext.load(text, "x.sse").exchanges
    assert exchange.request.body == b'{"a":\n 1}'
    assert exchange.request.headers == (("X-Pad", " padded "),)
    assert exchange.request.http_version == "HTTP/2.0"
    assert exchange.started_at == 1768473000.0
    assert exchange.response == ResponseHead(200, "", (("Content-Type", "text/event-stream"),),
                                             "HTTP/2.0")
    assert exchange.chunks == (
        (100_000_000, b"data: 1\r\n\r\n"),
        (200_000_000, b": c\r\ndata: 2\r\n\r\n"),  # paced by its first line
        (1_000_000_000, b"@raw\xff\n"),
        (1_000_000_000, b"data: 3\r\n\r\n"),
    )
    assert (exchange.outcome, exchange.end_offset_ns, exchange.error) == (
        Outcome.RESET, 2_000_000_000, 'gone "away"')


@pytest.mark.parametrize(("text", "where", "says"), [
    (b"GET /relative\n", "1:5", "must be absolute"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@wait 5 ms\n", "4:9", "takes 1 argument"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@wait 5xs\n", "4:7", "expected a duration"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@waitt 5ms\n", "4:1", "unknown directive"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@raw \"ab\\q\"\n", "4:9", "unknown escape"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@raw \"abc\n", "4:6", "no closing quote"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@end boom\n", "4:6", "unknown ending"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@no-newline\n", "4:1", "must follow a stream line"),
    (b"GET http://h/\nbad header\n", "2:1", "expected a header"),
    (b"GET http://h/\nHTTP/1.1 20 OK\n", "2:1", "expected a status line"),
    (b"GET http://h/\nAccept: x\n", "2:1", "ends before the response"),
    (b"GET http://h/\n@chunk\n", "2:1", "cannot be used in the request head"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\ndata: \xff\n", "4:7", "not UTF-8"),
    (b"# only a comment\n", "", "no interaction"),
    # an audit found these two past the parser: a "damaged cassette" later, and a second
    # line without a position from the store ("Python int too large")
    (b"GET http://[::1/a\n", "1:5", "the URL's host or port is malformed"),
    (b"GET http://h:99999/\n", "1:5", "the URL's host or port is malformed"),
    (b"GET http://h/\nHTTP/1.1 200 OK\n\n@wait 9999999999s\n", "4:7", "the clock would pass"),
    (b"GET http://h/\n@at 100000000h\n", "2:5", "expected a duration"),
])
def test_syntax_errors_name_the_line_and_column(text: bytes, where: str, says: str) -> None:
    with pytest.raises(TransferError) as raised:
        ssetext.load(text, "f.sse")
    message = str(raised.value)
    assert message.startswith(f"f.sse:{where}: " if where else "f.sse: "), message
    assert says in message and "\n" not in message


def test_the_cassettes_directory_files_all_read() -> None:
    files = sorted((REPO / "cassettes").glob("*.sse"))
    assert len(files) >= 6
    for path in files:
        imported = ssetext.load(path.read_bytes(), str(path))
        assert imported.exchanges and all(e.response is not None for e in imported.exchanges)
        # and write back to the same exchanges
        again = ssetext.load(ssetext.dump(imported.exchanges), "again")
        for before, after in zip(imported.exchanges, again.exchanges, strict=True):
            same(before, after)


def test_durations_are_written_exactly_and_shortly() -> None:
    assert [ssetext.duration(ns) for ns in (0, 250_000_000, 1_500_000_000, 12_000_345,
                                            30 * 10**9, 1)] == [
        "0ms", "250ms", "1.5s", "12.000345ms", "30s", "0.000001ms"]


@pytest.mark.parametrize(("data", "expected"), [
    (b"123:abc", "flows"), (b'{"log": {}}', "har"), (b"\x78\x9c", "har"),
    (b'{"record": "interaction"}\n{"record": "chunk"}\n', "jsonl"),
    (b"GET http://h/\n", "sse"), (b"\x00\x01\xfe\xff\x80", None),
])
def test_the_format_is_guessed_from_the_content(data: bytes, expected: str | None) -> None:
    assert guess(data) == expected


_FRAGMENTS = st.sampled_from([
    "GET http://h/x", "POST https://h/ HTTP/2.0", "HTTP/1.1 200 OK", "HTTP/1.1 2000", "\n",
    "\r\n", "@wait ", "@at ", "@chunk", "@pace ", "@raw ", "@no-newline", "@end ", "@body ",
    "@header ", "@started ", "@line-ending ", "@#", "@", "#", "5ms", "1.5s", "off", "none",
    "fin", "rst", "error", "wait", '"', "\\x4", "\\", "X: y", ":", "data: x", " ", "\t",
    "é", "\x00", "crlf", "2026-01-15T10:30:00Z", "-1", "1e3",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=40).map("".join))
@example("GET http://h/x\nHTTP/1.1 200 OK\t")  # a tab in the reason: read, so written back
def test_any_text_reads_or_is_one_error_line(text: str) -> None:
    try:
        imported = ssetext.load(text.encode(), "f.sse")
    except TransferError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("f.sse:")
        return
    for exchange in imported.exchanges:  # what reads, writes back the same
        [again] = ssetext.load(ssetext.dump([exchange]), "again").exchanges
        same(exchange, again)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([
        "log", "entries", "request", "response", "method", "url", "headers", "name",
        "value", "status", "content", "text", "startedDateTime", "timings", "_sseRecorder",
        "chunks", "version", "outcome", "startedAt", "record", "id", "interaction", "body",
        "base64", "offset_ns", "postData", "encoding", "httpVersion", "wait"]), inner,
        max_size=5),
    max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(document=_JSON, name=st.sampled_from(["har", "jsonl"]))
def test_any_json_reads_or_is_one_error_line(document: object, name: str) -> None:
    import json

    data = json.dumps(document if name == "har" else document).encode()
    try:
        FORMATS[name].read(data, "f")
    except TransferError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("f: ")


def test_a_zlib_compressed_har_reads_as_mitmproxy_writes_it() -> None:
    import zlib

    written = FORMATS["har"].write(EVERY_ENDING)
    squeezed = zlib.compress(written, 9)  # mitmproxy's save.har to a .zhar path
    assert guess(squeezed) == "har"
    for before, after in zip(EVERY_ENDING, FORMATS["har"].read(squeezed, "x.zhar").exchanges,
                             strict=True):
        same(before, after)

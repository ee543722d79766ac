"""The sans-IO framings against independent implementations and every way to cut a stream.

The AWS event stream parser is checked both ways: messages it encodes are decoded by
botocore's `EventStreamBuffer`, and messages built here from the published format (a
separate encoder, not the package's) are decoded by it; every split point of a message and
corrupted CRCs too. The text framings are checked with hypothesis: any chunking gives the
frames that one piece gives, and frame positions cover the stream.
"""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_recorder.framing import eventstream
from sse_recorder.framing.base import ERROR, FRAME, INVALID, Frame, spell, unspell
from sse_recorder.framing.eventstream import EventStreamParser
from sse_recorder.framing.jsonarray import ArrayParser
from sse_recorder.framing.jsonseq import SeqParser
from sse_recorder.framing.ndjson import LineParser
from sse_recorder.framing.registry import DIALECTS, FRAME_SHAPES


def by_hand(headers: list[tuple[str, int, bytes]], payload: bytes) -> bytes:
    """An event stream message from the published format: (name, type, raw value) headers."""
    raw = b""
    for name, kind, value in headers:
        raw += bytes([len(name)]) + name.encode() + bytes([kind])
        raw += struct.pack(">H", len(value)) + value if kind in (6, 7) else value
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))


def feed_all(parser: object, pieces: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for piece in pieces:
        frames += parser.feed(piece)  # type: ignore[attr-defined]
    return frames + parser.finish()  # type: ignore[attr-defined]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


BEDROCK = [
    ([(":event-type", "chunk"), (":content-type", "application/json"),
      (":message-type", "event")], b'{"bytes":"eyJ0eXBlIjoiY29udGVudF9ibG9ja19kZWx0YSJ9"}'),
    ([(":event-type", "contentBlockDelta"), (":message-type", "event")],
     '{"delta":{"text":"안녕"}}'.encode()),
    ([(":exception-type", "throttlingException"), (":message-type", "exception")],
     b'{"message":"Too many requests"}'),
    ([(":message-type", "event"), (":event-type", "empty")], b""),
]


@pytest.mark.parametrize(("headers", "payload"), BEDROCK)
def test_messages_we_encode_are_what_botocore_decodes(headers: list, payload: bytes) -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(eventstream.encode(headers, payload))
    [message] = list(buffer)
    assert message.payload == payload
    assert message.headers == dict(headers)


def test_messages_from_the_published_format_decode_at_every_split_point() -> None:
    headers = [(":message-type", 7, b"event"), (":event-type", 7, b"chunk"),
               ("flag", 0, b""), ("off", 1, b""), ("b", 2, b"\x7f"), ("s", 3, b"\x01\x02"),
               ("i", 4, struct.pack(">i", -5)), ("l", 5, struct.pack(">q", 1 << 40)),
               ("raw", 6, b"\x00\xff"), ("t", 8, struct.pack(">q", 1700000000000)),
               ("u", 9, bytes(range(16)))]
    stream = by_hand(headers, b'{"a":1}') + by_hand(headers[:2], b"\xff\x00 binary")
    expected = [Frame(0, len(stream) - len(by_hand(headers[:2], b"\xff\x00 binary")), FRAME,
                      "chunk", '{"a":1}')]
    first_end = expected[0].end
    expected.append(Frame(first_end, len(stream), FRAME, "chunk",
                          spell(b"\xff\x00 binary")))
    assert eventstream.decode_headers(stream[12:12 + struct.unpack(">I", stream[4:8])[0]]) == {
        ":message-type": "event", ":event-type": "chunk", "flag": True, "off": False,
        "b": 127, "s": 258, "i": -5, "l": 1 << 40, "raw": b"\x00\xff",
        "t": 1700000000000, "u": "00010203-0405-0607-0809-0a0b0c0d0e0f"}
    for a in range(len(stream) + 1):
        assert feed_all(EventStreamParser(), cut(stream, [a])) == expected, a
    assert feed_all(EventStreamParser(), [bytes([b]) for b in stream]) == expected
    assert unspell(expected[1].data) == b"\xff\x00 binary"
    botocore = EventStreamBuffer()
    botocore.add_data(stream)
    assert [m.payload for m in botocore] == [b'{"a":1}', b"\xff\x00 binary"]


def test_exceptions_and_errors_are_error_frames() -> None:
    stream = FRAME_SHAPES["bedrock-throttling"] + eventstream.encode(
        [(":message-type", "error"), (":error-code", "InternalFailure"),
         (":error-message", "boom")], b"")
    frames = feed_all(EventStreamParser(), [stream])
    assert [(f.kind, f.type) for f in frames] == [(ERROR, "throttlingException"),
                                                   (ERROR, "InternalFailure")]
    assert frames[1].data == "boom"


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_a_bad_crc_stops_the_framing_as_botocore_does(where: str) -> None:
    good = eventstream.encode([(":event-type", "chunk")], b"{}")
    bad = bytearray(good)
    bad[8 if where == "prelude" else -1] ^= 0x01
    stream = good + bytes(bad) + good
    frames = feed_all(EventStreamParser(), cut(stream, [5, len(good) + 3]))
    assert [f.kind for f in frames] == [FRAME, INVALID]
    assert f"{where} CRC mismatch" in frames[1].data
    buffer = EventStreamBuffer()
    buffer.add_data(stream)
    messages = iter(buffer)
    next(messages)
    with pytest.raises(ChecksumMismatch):
        next(messages)


def test_a_truncated_message_is_invalid_at_the_end() -> None:
    good = eventstream.encode([(":event-type", "chunk")], b"{}")
    frames = feed_all(EventStreamParser(), [good, good[:10]])
    assert [f.kind for f in frames] == [FRAME, INVALID]
    assert "truncated" in frames[1].data


# -- text framings: any chunking gives the same frames ---------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=3),
    max_leaves=6,
)
cuts = st.lists(st.integers(min_value=1, max_value=400), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=6), st.lists(st.sampled_from(
    [b"\n", b"\r\n", b"\r"]), min_size=6, max_size=6), cuts)
def test_ndjson_lines_with_any_ending_and_any_chunking(
    items: list[object], endings: list[bytes], points: list[int]
) -> None:
    stream = b"".join(json.dumps(v, ensure_ascii=False).encode() + end
                      for v, end in zip(items, endings, strict=False))
    whole = feed_all(LineParser(), [stream])
    assert [json.loads(f.data) for f in whole] == items
    assert feed_all(LineParser(), cut(stream, points)) == whole
    assert whole[0].start == 0 and whole[-1].end == len(stream)
    assert all(a.end == b.start for a, b in zip(whole, whole[1:], strict=False))


def test_ndjson_crlf_split_between_chunks_is_one_ending_and_errors_are_error_frames() -> None:
    frames = feed_all(LineParser(), [b'{"a":1}\r', b'\n{"error":"model not found"}\r\n',
                                     b"not json\n\n", b'{"type":"done"}'])
    assert [(f.kind, f.type, f.end) for f in frames] == [
        (FRAME, None, 9), (ERROR, None, 38), (INVALID, None, 47), (FRAME, "done", 63)]


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=6), cuts)
def test_json_seq_records_and_any_chunking(items: list[object], points: list[int]) -> None:
    stream = b"".join(b"\x1e" + json.dumps(v, indent=1).encode() + b"\n" for v in items)
    whole = feed_all(SeqParser(), [stream])
    assert [json.loads(f.data) for f in whole] == items
    assert feed_all(SeqParser(), cut(stream, points)) == whole
    assert [f.start for f in whole] == [i for i, b in enumerate(stream) if b == 0x1E]


def test_json_seq_truncated_record_is_invalid() -> None:
    frames = feed_all(SeqParser(), [b'\x1e{"a":', b'\x1e{"b":2}\n'])
    assert [(f.kind, f.data) for f in frames] == [(INVALID, '{"a":'), (FRAME, '{"b":2}')]


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=6), st.sampled_from([",", ",\r\n", "\n, "]), cuts)
def test_json_array_elements_and_any_chunking(
    items: list[object], separator: str, points: list[int]
) -> None:
    stream = ("[" + separator.join(json.dumps(v) for v in items) + "]").encode()
    whole = feed_all(ArrayParser(), [stream])
    assert [json.loads(f.data) for f in whole] == items
    assert feed_all(ArrayParser(), cut(stream, points)) == whole
    for frame in whole:
        assert json.loads(stream[frame.start:frame.end]) == json.loads(frame.data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([b'{"data": [1, 2]}', b'data: {"token": "T-1"}\n\n' * 2, b"42 ,[1]",
                        b'"text", [1], {"a": 2}']), cuts)
def test_a_body_that_is_not_an_array_has_no_frames_however_it_is_cut(
    stream: bytes, points: list[int]
) -> None:
    """Found when events came to be derived chunk by chunk: after the first chunk said
    "not an array", later chunks were scanned as if they were elements."""
    assert feed_all(ArrayParser(), cut(stream, points)) == []


def test_a_json_object_body_has_no_frames_and_errors_in_an_array_are_error_frames() -> None:
    assert feed_all(ArrayParser(), [b'{"data": [1, 2]}']) == []
    frames = feed_all(ArrayParser(), [b'[{"error": {"code": 429, "message": "x, ]"}}]'])
    assert [(f.kind, f.start) for f in frames] == [(ERROR, 1)]


def test_every_stream_type_has_a_dialect() -> None:
    assert {d.name for d in DIALECTS.values()} == {"ndjson", "json-seq", "aws-eventstream",
                                                    "json"}



def test_messages_awscrt_encodes_are_decoded() -> None:
    """awscrt's native event-stream encoder (its RPC client, writing to a raw socket here on
    127.0.0.1) as the independent writer: typed headers, payload and both CRCs."""
    import socket
    from uuid import UUID

    from awscrt.eventstream import Header
    from awscrt.eventstream.rpc import ClientConnection, ClientConnectionHandler, MessageType

    class Keep(ClientConnectionHandler):
        connection: ClientConnection | None = None

        def on_connection_setup(self, connection: ClientConnection | None, error: object,
                                **kw: object) -> None:
            self.connection = connection

        def on_connection_shutdown(self, reason: object, **kw: object) -> None:
            pass

        def on_protocol_message(self, **kw: object) -> None:
            pass

    headers = [Header.from_string("greeting", "안녕"), Header.from_int32("count", -7),
               Header.from_int64("big", 1 << 40), Header.from_bool("yes", True),
               Header.from_byte_buf("raw", b"\x00\xff"), Header.from_uuid("id", UUID(int=1))]
    handler = Keep()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        connecting = ClientConnection.connect(handler=handler, host_name="127.0.0.1",
                                              port=server.getsockname()[1])
        peer, _ = server.accept()
        with peer:
            peer.settimeout(10)
            connecting.result(10)
            assert handler.connection is not None
            handler.connection.send_protocol_message(
                headers=headers, payload=b'{"x":1}', message_type=MessageType.CONNECT
            ).result(10)
            parser, received = EventStreamParser(), b""
            frames: list[Frame] = []
            while not frames:
                data = peer.recv(65536)
                assert data, "awscrt closed before a whole message"
                received += data
                frames += parser.feed(data)
            handler.connection.close().result(10)
    assert [f.kind for f in frames] == [FRAME] and frames[0].data == '{"x":1}'
    _, headers_length = eventstream.lengths(received)
    decoded = eventstream.decode_headers(received[12:12 + headers_length])
    assert {k: decoded[k] for k in ("greeting", "count", "big", "yes", "raw", "id")} == {
        "greeting": "안녕", "count": -7, "big": 1 << 40, "yes": True, "raw": b"\x00\xff",
        "id": str(UUID(int=1))}
    assert decoded[":message-type"] == MessageType.CONNECT

"""Faults at frame K of streams that are not SSE, the record-time stream decision, and frames
stored by the recorder's body step (pure: no sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_recorder.faults import Ending, FaultPlan, FaultRun, Piece, split_at_frames
from sse_recorder.framing import eventstream
from sse_recorder.framing.base import ERROR, FRAME, INVALID
from sse_recorder.framing.derive import Deriver
from sse_recorder.framing.eventstream import EventStreamParser
from sse_recorder.framing.policy import StreamPolicy, streams
from sse_recorder.framing.registry import EVENT_STREAM, FRAME_SHAPES, JSON, NDJSON, Dialect
from sse_recorder.model import Chunk, Outcome, ResponseHead
from sse_recorder.record.body import Body
from sse_recorder.record.redact import RedactionRules
from sse_recorder.store.cassette import WriteBatch


def message(i: int) -> bytes:
    return eventstream.encode([(":event-type", "chunk"), (":message-type", "event")],
                              json.dumps({"i": i}).encode())


def lines(n: int) -> list[tuple[float, bytes]]:
    return [(i * 0.1, json.dumps({"i": i}).encode() + b"\r\n") for i in range(n)]


def run_of(*specs: str, dialect: Dialect) -> FaultRun:
    run = FaultPlan.load(specs, seed=0).for_connection(0, "POST", "example.com", "/x", False)
    run.dialect = dialect
    return run


def apply(run: FaultRun, chunks: Iterable[tuple[float, bytes]]) -> list[Piece | Ending]:
    """What the replay server does for a stream with a dialect."""
    chunks = list(chunks)
    assert run.dialect is not None
    pieces: Iterable[Piece] = (split_at_frames(chunks, run.dialect) if run.needs_events()
                               else (Piece(d, b) for d, b in chunks))
    return list(run.transform(pieces))


def body(actions: list[Piece | Ending]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Piece))


def botocore_messages(data: bytes) -> list[bytes]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [m.payload for m in buffer]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60), max_size=8))
def test_frames_are_counted_whatever_the_chunking(points: list[int]) -> None:
    data = b"".join(message(i) for i in range(4))
    bounds = [0, *sorted({p * 3 for p in points if 0 < p * 3 < len(data)}), len(data)]
    chunks = [(0.0, data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    pieces = list(split_at_frames(chunks, EVENT_STREAM))
    assert b"".join(p.data for p in pieces) == data
    ends = {p.events: sum(len(q.data) for q in pieces[:i + 1])
            for i, p in enumerate(pieces) if p.boundary}
    assert ends == {k + 1: len(message(0)) * (k + 1) for k in range(4)}


def test_drop_after_frame_k_on_an_event_stream() -> None:
    chunks = [(i * 0.1, message(i)) for i in range(5)]
    actions = apply(run_of("drop:after_event=2,how=rst", dialect=EVENT_STREAM), chunks)
    assert botocore_messages(body(actions)) == [b'{"i": 0}', b'{"i": 1}']
    last = actions[-1]
    assert isinstance(last, Ending) and last.outcome is Outcome.RESET
    assert last.due == pytest.approx(0.1)


@pytest.mark.parametrize("mode", ["crc", "truncate"])
def test_corrupt_frame_k_breaks_it_for_botocore(mode: str) -> None:
    """A truncated message makes botocore read the next one's bytes as its rest: a CRC
    mismatch too."""
    chunks = [(i * 0.1, message(i)) for i in range(4)]
    data = body(apply(run_of(f"corrupt:mode={mode},at_event=3", dialect=EVENT_STREAM), chunks))
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages = iter(buffer)
    assert [next(messages).payload for _ in range(2)] == [b'{"i": 0}', b'{"i": 1}']
    with pytest.raises(ChecksumMismatch):
        list(messages)


def test_corrupt_json_keeps_the_crcs_valid() -> None:
    chunks = [(i * 0.1, message(i)) for i in range(3)]
    data = body(apply(run_of("corrupt:mode=json,at_event=2", dialect=EVENT_STREAM), chunks))
    assert botocore_messages(data) == [b'{"i": 0}', b'!{"i": 1}', b'{"i": 2}']


def test_corrupt_ndjson_line_and_a_mode_that_means_nothing_here() -> None:
    run = run_of("corrupt:mode=json,at_event=2", dialect=NDJSON)
    assert body(apply(run, lines(3))).split(b"\r\n")[1] == b'!{"i": 1}'
    run = run_of("corrupt:mode=crc,at_event=2", dialect=NDJSON)
    assert body(apply(run, lines(3))) == b"".join(d for _, d in lines(3))
    assert run.log[0]["applied"] is False


def test_inject_vendor_frames() -> None:
    run = run_of("inject:after_event=1,shape=bedrock-throttling", dialect=EVENT_STREAM)
    frames = EventStreamParser().feed(body(apply(run, [(0.0, message(0)), (0.1, message(1))])))
    assert [(f.kind, f.type) for f in frames] == [
        (FRAME, "chunk"), (ERROR, "throttlingException"), (FRAME, "chunk")]
    run = run_of("inject:after_event=2,shape=ollama-error", dialect=NDJSON)
    out = body(apply(run, lines(3))).splitlines()
    assert json.loads(out[2]) == json.loads(FRAME_SHAPES["ollama-error"])


def test_adversarial_rechunk_splits_preludes_and_crlf_but_not_the_bytes() -> None:
    data = message(0) + message(1)
    actions = apply(run_of("rechunk:mode=adversarial", dialect=EVENT_STREAM), [(0.0, data)])
    sizes = [len(a.data) for a in actions if isinstance(a, Piece)]
    assert body(actions) == data and sizes[:3] == [1, 3, 4]  # inside the first prelude
    actions = apply(run_of("rechunk:mode=adversarial", dialect=NDJSON), lines(2))
    writes = [a.data for a in actions if isinstance(a, Piece)]
    assert any(w.endswith(b"\r") for w in writes) and body(actions) == b"".join(
        d for _, d in lines(2))


def head(ctype: str, **extra: str) -> ResponseHead:
    return ResponseHead(200, "OK", (("Content-Type", ctype), *extra.items()))


@pytest.mark.parametrize(("response", "method", "streamed"), [
    (head("application/json", **{"Content-Length": "20"}), "GET", False),  # small JSON
    (head("application/json", **{"Content-Length": str(2 << 20)}), "GET", True),  # large
    (head("application/json", **{"Transfer-Encoding": "chunked"}), "GET", True),
    (head("application/json"), "GET", True),  # HTTP/1.1 close-delimited
    (head("application/x-ndjson", **{"Content-Length": "20"}), "GET", True),
    (head("application/vnd.amazon.eventstream", **{"Content-Length": "9"}), "GET", True),
    (head("text/event-stream", **{"Content-Length": "9"}), "GET", True),
    (head("application/x-ndjson", **{"Transfer-Encoding": "chunked"}), "HEAD", False),
])
def test_the_stream_decision(response: ResponseHead, method: str, streamed: bool) -> None:
    assert streams(response, method) is streamed


def test_more_stream_types_can_be_configured() -> None:
    small = head("application/x-protobuf", **{"Content-Length": "20"})
    assert not streams(small, "GET")
    assert streams(small, "GET", StreamPolicy().with_types(["Application/X-Protobuf "]))


def stored(dialect: Dialect, chunks: list[bytes], rules: RedactionRules | None = None
           ) -> tuple[list[bytes], list[tuple[str, str | None, str, int, int]]]:
    """What the recorder's body step stores: chunks fed one batch each, then the end."""
    body = Body(7, (rules or RedactionRules()).scrubber(), False, [], dialect)
    batches = []
    for i, data in enumerate(chunks):
        batch = WriteBatch()
        body.feed([i * 1000], [data], batch)
        batches.append(batch)
    batch = WriteBatch()
    body.finish(batch)
    batches.append(batch)
    rows = [c for b in batches for c in b.all_chunks()]
    deriver = Deriver(False, (), dialect)
    for _, seq, ns, data in rows:
        deriver.feed(Chunk(seq, ns, data))
    events = deriver.finish()
    assert [r[1] for r in rows] == list(range(len(rows)))
    return [r[3] for r in rows], [(e.kind, e.type, e.data, e.first_chunk, e.last_chunk)
                                  for e in events]


def test_frames_are_stored_with_the_chunks_they_span() -> None:
    first, second = message(0), message(1)
    chunks, frames = stored(EVENT_STREAM, [first[:5], first[5:] + second[:20], second[20:]])
    assert b"".join(chunks) == first + second and len(chunks) == 3
    assert frames == [(FRAME, "chunk", '{"i": 0}', 0, 1), (FRAME, "chunk", '{"i": 1}', 1, 2)]


def test_a_whole_frame_is_stored_before_the_stream_ends() -> None:
    body = Body(1, RedactionRules().scrubber(), False, [], NDJSON)
    batch = WriteBatch()
    body.feed([0, 5], [b'{"a":1}\n{"b"', b':2}\n'], batch)
    assert [c[3] for c in batch.all_chunks()] == [b'{"a":1}\n{"b"', b":2}\n"]
    assert body.events == 2  # frames as received, for the line `record` prints


def test_redaction_reencodes_an_event_stream_message() -> None:
    secret = eventstream.encode([(":event-type", "chunk")], b'{"api_key":"sk-123456789"}')
    chunks, frames = stored(EVENT_STREAM, [message(0), secret[:9], secret[9:]])
    data = b"".join(chunks)
    assert b"sk-123456789" not in data and len(chunks) == 3
    payloads = botocore_messages(data)  # lengths and CRCs follow the redacted payload
    assert payloads[0] == b'{"i": 0}' and b"REDACTED" in payloads[1]
    assert [f[0] for f in frames] == [FRAME, FRAME]


def test_json_array_and_invalid_frames_are_stored() -> None:
    _, frames = stored(JSON, [b'[{"a":1}', b',\r\n{"error":{"code":429}}]'])
    assert [(f[0], f[2]) for f in frames] == [(FRAME, '{"a":1}'), (ERROR, '{"error":{"code":429}}')]
    _, frames = stored(EVENT_STREAM, [message(0)[:-1] + b"\x00"])
    assert [f[0] for f in frames] == [INVALID]

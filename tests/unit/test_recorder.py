"""Unit tests for `RecordingSession` (sse_recorder.record.session) against real cassettes,
and for the per-body event/chunk mapping (sse_recorder.record.body)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.errors import CassetteError
from sse_recorder.framing.derive import Deriver
from sse_recorder.model import (
    Chunk,
    Headers,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)
from sse_recorder.record import body as body_module
from sse_recorder.record import session as session_module
from sse_recorder.record import writer as writer_module
from sse_recorder.record.body import Body
from sse_recorder.record.items import ACK, RUN, Commit
from sse_recorder.record.redact import MARKER, RedactionRules
from sse_recorder.record.session import Recorded, RecorderConfig, RecordingSession
from sse_recorder.record.writer import Writer
from sse_recorder.sse import Comment, Event, Item, parse
from sse_recorder.store.cassette import Cassette, WriteBatch
from tests.helpers import task_session

SSE_HEAD = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),))
JSON_HEAD = ResponseHead(200, "OK", (("Content-Type", "application/json"),))
GET = RecordedRequest("GET", "https://api.example.com/v1/stream", (("Accept", "*/*"),))


@dataclass
class ReadBack:
    interactions: list[Interaction]
    chunks: dict[int, list[Chunk]]
    events: dict[int, list[RecordedEvent]]


async def read_back(path: Path) -> ReadBack:
    """Everything in a cassette, through a fresh read-only `Cassette.open`."""
    async with await Cassette.open(path) as cassette:
        interactions = await cassette.interactions()
        chunks = {i.id: [c async for c in cassette.chunks(i.id)] for i in interactions}
        events = {i.id: await cassette.events(i.id) for i in interactions}
    return ReadBack(interactions, chunks, events)


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[RecordingSession]:
    recording = task_session(str(tmp_path / "rec.cassette"))
    await recording.start()
    try:
        yield recording
    finally:
        await recording.close()


def feed(session: RecordingSession, iid: int, chunks: list[bytes], step: int = 1000) -> None:
    for i, data in enumerate(chunks):
        session.chunk(iid, (i + 1) * step, data)


def ev(
    seq: int, data: str, first: int, last: int, *, type: str = "message", id: str | None = None,
    offset: int | None = None,
) -> RecordedEvent:
    """An expected event; chunk k arrives at (k + 1) * 1000 ns in these tests."""
    ns = (last + 1) * 1000 if offset is None else offset
    return RecordedEvent(seq, "event", type, data, id, None, ns, first, last)


def comment(seq: int, text: str, chunk: int) -> RecordedEvent:
    return RecordedEvent(seq, "comment", None, text, None, None, (chunk + 1) * 1000, chunk, chunk)


# --------------------------------------------------------------------------------------------
# the basic flow


async def test_begin_head_chunk_end_flow(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(GET, started_at=1700000000.5)
    assert iid == 1
    assert session.head(iid, SSE_HEAD, 500) is True
    feed(session, iid, [b"data: one\n\n", b"data: two\n\n"])
    session.end(iid, Outcome.CLEAN, 5000)
    await session.close()
    assert session.chunks_written == 2

    got = await read_back(path)
    (interaction,) = got.interactions
    assert interaction == Interaction(
        id=1,
        started_at=1700000000.5,
        request=GET,
        response=SSE_HEAD,
        head_offset_ns=500,
        is_sse=True,
        complete=True,
        outcome=Outcome.CLEAN,
        end_offset_ns=5000,
        error=None,
        chunk_count=2,
        body_size=22,
        event_count=2,
    )
    assert got.chunks[1] == [Chunk(0, 1000, b"data: one\n\n"), Chunk(1, 2000, b"data: two\n\n")]
    assert got.events[1] == [ev(0, "one", 0, 0), ev(1, "two", 1, 1)]


async def test_interleaved_streams_in_one_batch_stay_apart(tmp_path: Path) -> None:
    """The writer feeds each body's chunks of a batch together; interleaving (and an end
    arriving while the other stream goes on) must not mix or reorder anything."""
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    a, b = session.begin(GET, 1.0), session.begin(GET, 2.0)
    session.head(a, SSE_HEAD, 10)
    session.head(b, SSE_HEAD, 20)
    for i in range(6):  # queued back to back: they reach the writer as one batch
        if i < 4:
            session.chunk(a, 100 + i, b"data: a%d\n\n" % i)
        session.chunk(b, 200 + i, b"data: b" if i % 2 == 0 else b"%d\n\n" % i)
        if i == 3:
            session.end(a, Outcome.CLEAN, 150)
    session.end(b, Outcome.CLEAN, 300)
    await session.close()
    got = await read_back(path)
    assert [c.data for c in got.chunks[a]] == [b"data: a%d\n\n" % i for i in range(4)]
    assert [c.offset_ns for c in got.chunks[b]] == [200 + i for i in range(6)]
    assert [(e.data, e.first_chunk, e.last_chunk) for e in got.events[b]] == [
        ("b1", 0, 1), ("b3", 2, 3), ("b5", 4, 5)
    ]
    assert [e.data for e in got.events[a]] == ["a0", "a1", "a2", "a3"]


async def test_head_reports_whether_the_body_is_an_event_stream(
    session: RecordingSession,
) -> None:
    iid = session.begin(GET, 1.0)
    assert session.head(iid, JSON_HEAD, 1) is False
    other = session.begin(GET, 1.0)
    head = ResponseHead(200, "OK", (("content-type", "Text/Event-Stream; charset=utf-8"),))
    assert session.head(other, head, 1) is True


async def test_events_spanning_chunks_and_several_events_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    feed(session, iid, [
        b"event: greet\nid: 1\ndata: he",  # 0: event starts
        b"",  # 1: an empty chunk in the middle of an event
        b"llo\n",  # 2
        b"\ndata: a\n\n: ping\n\ndata: b\n\n",  # 3: ends "hello", then a, a comment, b
        b"data: c",  # 4: starts c ...
        b"\n\n",  # 5: ... which ends here
        b": bye\n",  # 6: a comment alone
    ])
    session.end(iid, Outcome.CLEAN, 10_000)
    await session.close()

    got = await read_back(path)
    assert got.events[iid] == [
        ev(0, "hello", 0, 3, type="greet", id="1"),
        ev(1, "a", 3, 3),
        comment(2, "ping", 3),
        ev(3, "b", 3, 3),
        ev(4, "c", 4, 5),
        comment(5, "bye", 6),
    ]
    assert got.interactions[0].event_count == 4  # comments are kept but not counted
    assert [c.seq for c in got.chunks[iid]] == list(range(7))
    assert got.chunks[iid][1] == Chunk(1, 2000, b"")


async def test_non_sse_body_is_stored_as_given_without_events(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(GET, 1.0)
    assert session.head(iid, JSON_HEAD, 1) is False
    body = b'{"choices": [{"text": "data: not an event\\n\\n"}]}\n\ndata: x\n\n'
    session.chunk(iid, 2000, body)
    session.end(iid, Outcome.CLEAN, 3000)
    await session.close()

    got = await read_back(path)
    assert got.interactions[0].is_sse is False
    assert got.interactions[0].complete is True
    assert got.chunks[iid] == [Chunk(0, 2000, body)]
    assert got.events[iid] == []


# --------------------------------------------------------------------------------------------
# redaction


async def test_redaction_of_request_response_headers_chunks_and_events(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    rules = RedactionRules.with_extra(headers=["X-Custom-Auth"], json_fields=["sessionKey"])
    session = task_session(str(path), RecorderConfig(redaction=rules))
    await session.start()
    request = RecordedRequest(
        method="POST",
        url="https://api.example.com/v1/chat?api_key=QK-SECRET-1&model=m",
        headers=(
            ("Authorization", "Bearer HDR-SECRET-2"),
            ("Content-Type", "application/json"),
            ("X-Custom-Auth", "HDR-SECRET-3"),
        ),
        body=b'{"model": "m", "password": "BODY-SECRET-4", "n": 1}',
    )
    iid = session.begin(request, 1.0)
    head = ResponseHead(
        200, "OK",
        (("Content-Type", "text/event-stream"), ("Set-Cookie", "sid=COOKIE-SECRET-5; Secure")),
    )
    session.head(iid, head, 1)
    feed(session, iid, [
        b'data: {"access_token": "SSE-SEC',  # a secret cut across chunks
        b'RET-6", "sessionKey": "SSE-SECRET-7"}\n\n',
        b'data: {\ndata:   "refreshToken": "SSE-SECRET-8",\ndata:   "ok": true\ndata: }\n\n',
    ])
    session.end(iid, Outcome.CLEAN, 9)
    form = session.begin(
        RecordedRequest(
            "POST", "https://auth.example.com/token",
            (("Content-Type", "application/x-www-form-urlencoded"),),
            b"grant_type=password&password=FORM-SECRET-9",
        ),
        2.0,
    )
    session.head(form, JSON_HEAD, 1)
    session.chunk(form, 2, b'{"access_token": "JSON-SECRET-10", "expires_in": 60}')
    session.end(form, Outcome.CLEAN, 3)
    await session.close()

    raw = path.read_bytes()
    for n in range(1, 11):
        assert f"SECRET-{n}".encode() not in raw  # nowhere in the file, in any form
    got = await read_back(path)
    stored = got.interactions[0]
    assert stored.request.url == f"https://api.example.com/v1/chat?api_key={MARKER}&model=m"
    assert stored.request.headers == (
        ("Authorization", MARKER),
        ("Content-Type", "application/json"),
        ("X-Custom-Auth", MARKER),
    )
    assert stored.request.body == f'{{"model": "m", "password": "{MARKER}", "n": 1}}'.encode()
    assert stored.response is not None
    assert stored.response.headers == (
        ("Content-Type", "text/event-stream"),
        ("Set-Cookie", MARKER),
    )
    assert [c.offset_ns for c in got.chunks[iid]] == [1000, 2000, 3000]  # boundaries kept
    events = got.events[iid]
    assert events[0].data == f'{{"access_token": "{MARKER}", "sessionKey": "{MARKER}"}}'
    assert events[1].data == f'{{\n  "refreshToken": "{MARKER}",\n  "ok": true\n}}'
    assert (events[0].first_chunk, events[0].last_chunk) == (0, 1)
    # the stored chunks still parse to the stored events
    body = b"".join(c.data for c in got.chunks[iid])
    assert [item.data for item in parse(body) if not isinstance(item, Comment)] == [
        e.data for e in events
    ]
    form_stored = got.interactions[1]
    assert form_stored.request.body == f"grant_type=password&password={MARKER}".encode()
    assert got.chunks[form] == [
        Chunk(0, 2, f'{{"access_token": "{MARKER}", "expires_in": 60}}'.encode())
    ]


# --------------------------------------------------------------------------------------------
# regressions: each of these was stored in clear (issue 9)

SECRET = "S3KR1T-VALUE-42"


def _all_bytes(path: Path) -> bytes:
    """The cassette and its WAL files, byte for byte."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def _record_one(
    tmp_path: Path, request: RecordedRequest, head: ResponseHead, pieces: list[bytes],
    rules: RedactionRules | None = None, *, batch_between: bool = True,
) -> ReadBack:
    """Record one interaction; with `batch_between`, each piece lands in its own writer
    batch. The secret must be nowhere, in the files even while recording."""
    path = tmp_path / "rec.cassette"
    session = task_session(str(path), RecorderConfig(redaction=rules or RedactionRules()))
    await session.start()
    iid = session.begin(request, 1.0)
    session.head(iid, head, 1)
    for n, piece in enumerate(pieces):
        session.chunk(iid, (n + 1) * 1000, piece)
        if batch_between:
            await session.flush()
    session.end(iid, Outcome.CLEAN, 99_000)
    await session.flush()
    assert SECRET.encode() not in _all_bytes(path)
    await session.close()
    assert SECRET.encode() not in path.read_bytes()
    return await read_back(path)


async def test_event_completed_in_a_later_batch_than_its_secret_line(tmp_path: Path) -> None:
    """The reproduction: `data: {"newToken":"S"}\n`, then the blank line 80 ms later."""
    got = await _record_one(tmp_path, GET, SSE_HEAD,
                            [b'data: {"newToken":"%s"}\n' % SECRET.encode(), b"\n"])
    (event,) = got.events[1]
    assert event.data == f'{{"newToken":"{MARKER}"}}'
    assert (event.first_chunk, event.last_chunk) == (0, 1)
    assert [c.offset_ns for c in got.chunks[1]] == [1000, 2000]


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("https://h/v1/stream", (("X-Custom-Auth", SECRET),)),
        ("https://h/v1/stream", (("Referer", f"https://app/?api_key={SECRET}&x=1"),)),
        (f"https://h/v1/keys/api_key/{SECRET}/stream", ()),
        (f"https://h/v1/stream?a=1;api_key={SECRET};b=2", ()),
        (f"https://h/v1/stream;token={SECRET}", ()),
    ],
)
async def test_request_credentials(tmp_path: Path, url: str, headers: Headers) -> None:
    got = await _record_one(tmp_path, RecordedRequest("GET", url, headers), SSE_HEAD,
                            [b"data: x\n\n"])
    assert MARKER in got.interactions[0].request.url + str(got.interactions[0].request.headers)


@pytest.mark.parametrize(
    "data",
    [
        f'{{"token": "{SECRET}"}}',
        f'{{"password": {{"value": "{SECRET}", "n": [1, 2]}}}}',
        f'{{"arguments": "{{\\"api_key\\": \\"{SECRET}\\"}}"}}',  # escaped key
        f'{{"refresh_token": "{SECRET[:6]}\ndata: {SECRET[6:]}"}}',  # wrapped over 2 lines
        f'{{"password":\ndata: "{SECRET}"}}',  # key and value on different lines
    ],
)
async def test_event_data_credentials(tmp_path: Path, data: str) -> None:
    stream = f"data: {data}\n\n".encode()
    cut = stream.find(SECRET[:6].encode()) + 3  # the secret split across chunks and batches
    got = await _record_one(tmp_path, GET, SSE_HEAD, [stream[:cut], stream[cut:]])
    (event,) = got.events[1]
    assert MARKER in event.data
    assert [e.data for e in got.events[1]] == [  # the stored chunks parse to the stored event
        item.data for item in parse(b"".join(c.data for c in got.chunks[1]))
        if not isinstance(item, Comment)
    ]


async def test_an_upstream_echoing_the_request(tmp_path: Path) -> None:
    request = RecordedRequest(
        "POST", "https://h/echo", (("Authorization", f"Bearer {SECRET}"),),
        b'{"text": "hi"}')
    echo = json.dumps({"headers": {"authorization-copy": f"Bearer {SECRET}"},
                       "plain": SECRET}).encode()
    got = await _record_one(tmp_path, request, JSON_HEAD, [echo])
    assert json.loads(got.chunks[1][0].data)["plain"] == MARKER


async def test_value_scrub_everywhere(tmp_path: Path) -> None:
    """--redact-value: in a comment, an id, an event name, plain data, base64."""
    rules = RedactionRules.with_extra(values=[SECRET])
    b64 = base64.b64encode(b"user:" + SECRET.encode()).decode()
    stream = (f": {SECRET}\nid: {SECRET}\nevent: {SECRET}\ndata: a {SECRET} b\n"
              f"data: {b64}\n\n").encode()
    got = await _record_one(tmp_path, RecordedRequest("GET", f"https://h/{SECRET}", ()),
                            SSE_HEAD, [stream[:20], stream[20:]], rules)
    assert got.interactions[0].request.url == f"https://h/{MARKER}"
    assert base64.b64encode(SECRET.encode()[3:9]) not in b"".join(
        c.data for c in got.chunks[1])


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_compressed_bodies_are_decoded_to_be_redacted(tmp_path: Path, coding: str
                                                            ) -> None:
    body = json.dumps({"access_token": SECRET, "expires_in": 60}).encode()
    encode = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[coding]
    head = ResponseHead(200, "OK", (("Content-Type", "application/json"),
                                    ("Content-Encoding", coding), ("Content-Length", "999")))
    got = await _record_one(tmp_path, GET, head, [encode(body)])
    stored = got.chunks[1][0].data
    assert json.loads(stored) == {"access_token": MARKER, "expires_in": 60}
    response = got.interactions[0].response
    assert response is not None  # stored decoded, so the head says so
    assert response.headers == (("Content-Type", "application/json"),
                                ("Content-Length", str(len(stored))))


async def test_a_compressed_body_without_secrets_is_stored_as_received(tmp_path: Path) -> None:
    raw = gzip.compress(b'{"n": 1}')
    head = ResponseHead(200, "OK", (("Content-Encoding", "gzip"),))
    got = await _record_one(tmp_path, GET, head, [raw])
    assert got.chunks[1][0].data == raw
    assert got.interactions[0].response == head


async def test_a_compressed_event_stream_is_stored_decoded(tmp_path: Path) -> None:
    stream = b'data: {"token": "%s"}\n\ndata: two\n\n' % SECRET.encode()
    compressor = zlib.compressobj(wbits=31)
    pieces = [compressor.compress(stream[:25]) + compressor.flush(zlib.Z_SYNC_FLUSH),
              compressor.compress(stream[25:]) + compressor.flush()]
    head = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),
                                    ("Content-Encoding", "gzip")))
    got = await _record_one(tmp_path, GET, head, pieces)
    assert [e.data for e in got.events[1]] == [f'{{"token": "{MARKER}"}}', "two"]
    assert got.interactions[0].response is not None
    assert got.interactions[0].response.headers == (("Content-Type", "text/event-stream"),)
    assert len(got.chunks[1]) == 2


async def test_a_gzip_header_sent_alone_is_no_stored_chunk(tmp_path: Path) -> None:
    """It decodes to nothing: stored, it was a chunk `ls` counted and a replay could not
    send (an empty HTTP chunk ends a body), so the counts disagreed (an audit found it)."""
    stream = b"data: one\n\ndata: two\n\n"
    compressor = zlib.compressobj(wbits=31)
    header = compressor.compress(b"") + compressor.flush(zlib.Z_SYNC_FLUSH)
    first = compressor.compress(stream[:11]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    rest = compressor.compress(stream[11:]) + compressor.flush()
    assert not zlib.decompressobj(31).decompress(header[:10])  # the header alone: nothing
    head = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),
                                    ("Content-Encoding", "gzip")))
    got = await _record_one(tmp_path, GET, head, [header[:10], header[10:] + first, rest])
    assert [c.data for c in got.chunks[1]] == [stream[:11], stream[11:]]
    assert [e.data for e in got.events[1]] == ["one", "two"]


async def test_a_compressed_request_body(tmp_path: Path) -> None:
    request = RecordedRequest("POST", "https://h/x", (("Content-Encoding", "gzip"),),
                              gzip.compress(b'{"password": "%s"}' % SECRET.encode()))
    got = await _record_one(tmp_path, request, JSON_HEAD, [b"{}"])
    stored = got.interactions[0].request
    assert json.loads(stored.body) == {"password": MARKER}
    assert stored.headers == ()  # decoded: no Content-Encoding any more


async def test_error_text_is_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(RecordedRequest("GET", f"https://h/?api_key={SECRET}", ()), 1.0)
    session.end(iid, Outcome.PROXY_ERROR, 5, f"cannot connect to https://h/?api_key={SECRET}")
    await session.close()
    (interaction,) = (await read_back(path)).interactions
    assert interaction.error == f"cannot connect to https://h/?api_key={MARKER}"
    assert SECRET.encode() not in path.read_bytes()


# --------------------------------------------------------------------------------------------
# how interactions end


@pytest.mark.parametrize(
    ("chunks", "check", "reason", "complete"),
    [
        ([b"data: a\n\n", b"data: b"], True, Outcome.CLOSED, False),  # mid-line
        ([b"data: a\n\n", b"data: b\n"], True, Outcome.CLOSED, False),  # no blank line
        ([b"data: a\n\n", b"data: b\n\n"], True, Outcome.CLEAN, True),
        ([b"data: a\n\n: ping\n"], True, Outcome.CLEAN, True),  # a complete comment line
        ([], True, Outcome.CLEAN, True),  # an empty body
        ([b"data: a\n\n", b"data: b"], False, Outcome.CLEAN, True),  # framing is trusted
    ],
)
async def test_truncation_check(
    tmp_path: Path, chunks: list[bytes], check: bool, reason: Outcome, complete: bool
) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    feed(session, iid, chunks)
    session.end(iid, Outcome.CLEAN, 99, check_truncation=check)
    await session.close()

    got = await read_back(path)
    (interaction,) = got.interactions
    assert (interaction.outcome, interaction.complete) == (reason, complete)
    assert (interaction.error is None) == complete
    assert [c.data for c in got.chunks[iid]] == chunks  # a held partial line is still stored


async def test_truncation_check_keeps_an_error_reason(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    feed(session, iid, [b"data: a"])
    session.end(iid, Outcome.CLIENT_GONE, 5, "Client disconnected.", check_truncation=True)
    session.end(iid, Outcome.CLEAN, 6)  # a second end is ignored
    await session.close()
    (interaction,) = (await read_back(path)).interactions
    assert interaction.outcome is Outcome.CLIENT_GONE
    assert (interaction.error, interaction.end_offset_ns) == ("Client disconnected.", 5)


async def test_close_marks_open_interactions_recording_stopped(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    done = session.begin(GET, 1.0)
    session.head(done, SSE_HEAD, 1)
    feed(session, done, [b"data: x\n\n"])
    session.end(done, Outcome.CLEAN, 2000)
    still_open = session.begin(GET, 2.0)
    session.head(still_open, SSE_HEAD, 1)
    feed(session, still_open, [b"data: 1\n\n", b"data: 2\n\ndata: par"])  # ends mid-line
    no_head = session.begin(GET, 3.0)
    await session.close()
    await session.close()  # closing twice is harmless

    got = await read_back(path)
    by_id = {i.id: i for i in got.interactions}
    assert by_id[done].outcome is Outcome.CLEAN
    for iid in (still_open, no_head):
        assert by_id[iid].outcome is Outcome.STOPPED
        assert by_id[iid].complete is False
        assert by_id[iid].error == "recording stopped"
    assert [c.data for c in got.chunks[still_open]] == [b"data: 1\n\n", b"data: 2\n\ndata: par"]
    assert [e.data for e in got.events[still_open]] == ["1", "2"]
    assert by_id[no_head].response is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.cassette"]  # WAL folded back


# --------------------------------------------------------------------------------------------
# on_recorded: one report per interaction, after its end is committed


async def test_on_recorded_reports_each_interaction_after_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rec.cassette"
    log: list[tuple[str, int]] = []  # ("committed", id) per end written, ("recorded", id)
    reports: list[Recorded] = []

    def on_recorded(recorded: Recorded) -> None:
        reports.append(recorded)
        log.append(("recorded", recorded.id))

    session = task_session(str(path), RecorderConfig(on_recorded=on_recorded))
    await session.start()
    assert session._channel.cassette is not None
    write = session._channel.cassette.write

    async def logged_write(batch: WriteBatch) -> None:
        await write(batch)
        log.extend(("committed", end.id) for end in batch.ends)

    monkeypatch.setattr(session._channel.cassette, "write", logged_write)
    stream = session.begin(
        RecordedRequest("GET", "https://api.example.com/s?api_key=QK-1&x=1", ()), 1.0
    )
    session.head(stream, SSE_HEAD, 5)
    body = [b"data: a\n\n: ping\n", b"data: b\n\ndata: c\n\n"]
    feed(session, stream, body)
    failed = session.begin(GET, 2.0)
    still_open = session.begin(GET, 3.0)
    await session.flush()
    assert reports == []  # nothing has ended yet
    session.end(stream, Outcome.CLEAN, 7000)
    session.end(failed, Outcome.PROXY_ERROR, 900, "connection refused")
    await wait_until(lambda: len(reports) == 2)
    await session.close()

    assert reports == [
        Recorded(
            id=stream, method="GET", url=f"https://api.example.com/s?api_key={MARKER}&x=1",
            status=200, events=3, chunks=2, body_size=len(b"".join(body)), duration_ns=7000,
            outcome=Outcome.CLEAN, error=None,
        ),
        Recorded(
            id=failed, method="GET", url=GET.url, status=None, events=0, chunks=0,
            body_size=0, duration_ns=900, outcome=Outcome.PROXY_ERROR,
            error="connection refused",
        ),
        Recorded(
            id=still_open, method="GET", url=GET.url, status=None, events=0, chunks=0,
            body_size=0, duration_ns=None, outcome=Outcome.STOPPED, error="recording stopped",
        ),
    ]
    for iid in (stream, failed, still_open):  # each reported only after its end committed
        assert log.index(("committed", iid)) < log.index(("recorded", iid))
    stored = {i.id: i for i in (await read_back(path)).interactions}
    assert [(r.events, r.chunks, r.body_size) for r in reports] == [
        (stored[r.id].event_count, stored[r.id].chunk_count, stored[r.id].body_size)
        for r in reports
    ]


async def test_on_recorded_counts_match_the_cassette_and_a_failing_hook_is_harmless(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rec.cassette"
    seen: list[Recorded] = []

    def on_recorded(recorded: Recorded) -> None:
        seen.append(recorded)
        raise RuntimeError("display broke")

    session = task_session(str(path), RecorderConfig(on_recorded=on_recorded))
    await session.start()
    for n in range(3):
        iid = session.begin(GET, float(n))
        session.head(iid, JSON_HEAD if n == 1 else SSE_HEAD, 1)
        feed(session, iid, [b'data: {"token": "T-%d"}\n\n' % n] * (n + 1))
        session.end(iid, Outcome.CLEAN, 10 + n)
    await session.close()
    got = await read_back(path)
    assert [(r.id, r.events, r.chunks, r.body_size, r.status) for r in seen] == [
        (i.id, i.event_count, i.chunk_count, i.body_size, 200) for i in got.interactions
    ]


async def test_on_recorded_is_not_called_after_a_storage_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Recorded] = []
    session = task_session(
        str(tmp_path / "rec.cassette"), RecorderConfig(on_recorded=seen.append)
    )
    await session.start()
    assert session._channel.cassette is not None

    async def broken_write(batch: WriteBatch) -> None:
        raise CassetteError("rec.cassette: write failed: disk I/O error")

    monkeypatch.setattr(session._channel.cassette, "write", broken_write)
    iid = session.begin(GET, 1.0)
    session.end(iid, Outcome.CLEAN, 4)
    await wait_until(lambda: session.failure is not None)
    await session.close()
    assert seen == []


# --------------------------------------------------------------------------------------------
# storage failure and promptness


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def test_storage_failure_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[Exception] = []
    session = task_session(str(tmp_path / "rec.cassette"), on_failure=failures.append)
    await session.start()
    assert session._channel.cassette is not None
    calls = 0

    async def broken_write(batch: WriteBatch) -> None:
        nonlocal calls
        calls += 1
        raise CassetteError("rec.cassette: write failed: disk I/O error")

    monkeypatch.setattr(session._channel.cassette, "write", broken_write)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    session.chunk(iid, 2, b"data: 1\n\n")
    await wait_until(lambda: session.failure is not None)
    assert len(failures) == 1 and failures[0] is session.failure
    assert isinstance(session.failure, CassetteError)

    # later traffic is not written again and not reported again
    session.chunk(iid, 3, b"data: 2\n\n")
    other = session.begin(GET, 2.0)
    session.end(other, Outcome.CLEAN, 4)
    await session.close()
    assert len(failures) == 1
    assert calls == 1
    assert session.chunks_written == 0


async def test_chunks_are_committed_promptly(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    session = task_session(str(path))
    await session.start()
    try:
        warm = await read_back(path)  # pay the reader's first-open costs outside the clock
        assert warm.interactions == []
        iid = session.begin(GET, 1.0)
        session.head(iid, SSE_HEAD, 1)
        feed(session, iid, [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"])
        fed_at = time.monotonic()
        deadline = fed_at + 0.25
        seen: ReadBack | None = None
        while time.monotonic() < deadline:
            got = await read_back(path)  # a second, independent connection
            if len(got.chunks.get(iid, [])) == 3:
                seen = got
                break
            await asyncio.sleep(0.005)
        assert seen is not None, "chunks not visible to a reader within 250 ms"
        assert [e.data for e in seen.events[iid]] == ["1", "2", "3"]
        assert seen.interactions[0].outcome is Outcome.STOPPED  # not ended yet
    finally:
        await session.close()


async def test_a_young_batch_waits_for_more_frames_unless_something_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction costs the writer about as much as 400 small chunks, so frames that
    arrive within BATCH_DELAY_S of a batch's first one join it; an END (someone waits on
    the interaction's line) or a flush is written at once, with what came before it."""
    monkeypatch.setattr(writer_module, "BATCH_DELAY_S", 30.0)  # only an END may cut it
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    assert session._channel.cassette is not None
    write = session._channel.cassette.write
    batches: list[int] = []
    written = asyncio.Event()

    async def counting_write(batch: WriteBatch) -> None:
        await write(batch)
        batches.append(len(list(batch.all_chunks())))
        written.set()

    monkeypatch.setattr(session._channel.cassette, "write", counting_write)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    for n in range(5):  # five frames, each sent on its own as a timer would
        session.chunk(iid, n + 2, b"data: %d\n\n" % n)
        session._send()
        await asyncio.sleep(0)  # the writer task runs, sees a young batch, waits
    assert batches == []
    session.end(iid, Outcome.CLEAN, 99)
    session._send()
    await written.wait()
    assert batches == [5]  # one transaction: the five frames and the end
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    assert [e.data for e in got.events[iid]] == ["0", "1", "2", "3", "4"]
    assert got.interactions[0].outcome is Outcome.CLEAN


def commit_event(session: RecordingSession, *, with_chunks: bool = False) -> asyncio.Event:
    """Set by the task writer's next commit (one that stored chunks, with `with_chunks`)."""
    committed = asyncio.Event()
    writer = session._channel._writer  # type: ignore[attr-defined]
    tell_session = writer.on_commit

    def on_commit(commit: Commit) -> None:
        tell_session(commit)
        if commit.chunks or not with_chunks:
            committed.set()

    writer.on_commit = on_commit
    return committed


def whole_event(size: int) -> bytes:
    return b"data: " + b"x" * (size - 8) + b"\n\n"


@pytest.mark.parametrize(("chunks", "worth_it"), [
    ([b"data: %d\n\n" % n for n in range(writer_module.BATCH_WAIT_ITEMS - 1)], False),
    ([b"data: %d\n\n" % n for n in range(writer_module.BATCH_WAIT_ITEMS)], True),
    ([whole_event(writer_module.BATCH_WAIT_BYTES - 1)], False),
    ([whole_event(writer_module.BATCH_WAIT_BYTES)], True),
], ids=["items-1", "items", "bytes-1", "bytes"])
async def test_a_batch_of_a_flood_is_written_without_waiting(
    chunks: list[bytes], worth_it: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of BATCH_WAIT_ITEMS chunks or BATCH_WAIT_BYTES (a flood's) is worth its
    transaction: written as it comes; one chunk or byte less waits for more frames."""
    monkeypatch.setattr(writer_module, "BATCH_DELAY_S", 30.0)
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    committed = commit_event(session, with_chunks=True)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    await session.flush()  # the start is written: the next batch holds the chunks alone
    for n, data in enumerate(chunks):
        session.chunk(iid, n + 2, data)
    session._send()
    queued = len(chunks)
    if not worth_it:
        with pytest.raises(TimeoutError):  # the writer waits for more (30 s here)
            await asyncio.wait_for(committed.wait(), 0.3)
    else:
        await asyncio.wait_for(committed.wait(), 10)
    assert session.chunks_written == (queued if committed.is_set() else 0)
    await session.close()


async def test_a_young_batch_is_written_once_its_delay_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "BATCH_DELAY_S", 0.05)
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    committed = commit_event(session)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    session.chunk(iid, 2, b"data: 1\n\n")
    session._send()
    sent = time.monotonic()
    await committed.wait()
    waited = time.monotonic() - sent
    assert 0.04 <= waited < 1.0  # the delay, then the commit (generous: a shared machine)
    assert session.backlog_since_ns == session_module.NO_BACKLOG
    await session.close()


# --------------------------------------------------------------------------------------------
# loss bounded by time: batches cut by size, congestion reported


async def test_a_chunk_after_its_end_is_not_stored_before_it(tmp_path: Path) -> None:
    """Chunks join their response's run in the outbox; one that comes after the response's
    end must not join the run queued before that end (the writer drops it)."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    record = session.chunk_forwarder(iid, 0, lambda: None, [])
    record(b"data: 1\n\n")
    session.end(iid, Outcome.CLEAN, 99)
    for _ in range(3):  # the proxy's closure keeps nothing it will never send
        assert record(b"data: late\n\n") == b"data: late\n\n"  # forwarded all the same
    cells = dict(zip(record.__code__.co_freevars, record.__closure__ or (), strict=True))
    held = [cells[name].cell_contents for name in ("offsets", "datas")]
    assert all(len(column) <= 1 for column in held)
    session.chunk(iid, 100, b"data: later\n\n")
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    assert [c.data for c in got.chunks[iid]] == [b"data: 1\n\n"]


async def test_batches_are_cut_by_body_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_BATCH_BYTES", 250)
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    assert session._channel.cassette is not None
    write = session._channel.cassette.write
    sizes: list[int] = []

    async def counting_write(batch: WriteBatch) -> None:
        sizes.append(sum(len(c[3]) for c in batch.all_chunks()))
        await write(batch)

    monkeypatch.setattr(session._channel.cassette, "write", counting_write)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    feed(session, iid, [b"data: %s\n\n" % (b"x" * 92)] * 10)  # 100 bytes each
    session.end(iid, Outcome.CLEAN, 99)
    await session.close()
    assert sum(sizes) == 1000
    assert max(sizes) <= 300  # a batch stops once it holds 250 bytes or more


async def test_the_backlog_age_is_kept_and_congestion_cleared_by_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backlog_since_ns` bounds how old uncommitted data is: it stays at the first queued
    item while a write is stuck, advances as batches commit, and is reset once all is."""
    monkeypatch.setattr(writer_module, "MAX_BATCH", 2)  # leave items queued behind a batch
    changes: list[bool] = []
    session = task_session(str(tmp_path / "rec.cassette"), on_congestion=changes.append)
    await session.start()
    assert session._channel.cassette is not None
    write = session._channel.cassette.write
    gate, writing = asyncio.Event(), asyncio.Event()

    async def gated_write(batch: WriteBatch) -> None:
        writing.set()
        await gate.wait()
        await write(batch)

    assert session.backlog_since_ns == session_module.NO_BACKLOG
    monkeypatch.setattr(session._channel.cassette, "write", gated_write)
    before = time.monotonic_ns()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    feed(session, iid, [b"data: %d\n\n" % n for n in range(6)])
    after = time.monotonic_ns()
    await writing.wait()  # the first batch is being written, the rest waits
    stamped = session.backlog_since_ns
    assert before <= stamped <= after  # the first item's arrival
    session.congested = True  # as the proxy marks it when the lag passes LAG_HIGH_NS
    gate.set()
    await session.flush()
    assert session.backlog_since_ns == session_module.NO_BACKLOG
    assert changes == [False] and not session.congested  # the commit cleared it
    assert session.max_lag_ns > 0
    await session.close()


async def test_the_chunk_forwarder_stamps_queues_and_says_when_the_writer_is_behind(
    tmp_path: Path,
) -> None:
    """The proxy's per-chunk closure: each chunk forwarded untouched and stored with its
    offset from the response's anchor, `at_end` for the empty call (nothing stored), and
    `on_behind` called (with `congested` set) once the oldest uncommitted item is older than
    LAG_HIGH_NS: the chunk that finds the deadline asks for the writer's answers to be read
    at the end of the loop turn and goes on; the next one, still behind, brakes."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    iid = session.begin(GET, 1.0)
    anchor = time.monotonic_ns()
    session.head(iid, SSE_HEAD, 1)
    behind: list[int] = []
    end_marker: list[bytes] = []
    forward = session.chunk_forwarder(iid, anchor, lambda: behind.append(1), end_marker)
    pieces = [b"data: %d\n\n" % n for n in range(7)]
    assert [forward(piece) for piece in pieces] == pieces
    assert forward(b"") is end_marker
    after = time.monotonic_ns() - anchor
    assert not behind and not session.congested
    session.backlog_since_ns = time.monotonic_ns() - 2 * session_module.LAG_HIGH_NS
    session._update_due()
    assert forward(b": behind\n") == b": behind\n"
    assert not behind and not session.congested  # not judged before the answers are read
    await asyncio.sleep(0)  # the end of the loop turn: read (nothing came)
    assert forward(b": still\n") == b": still\n"
    assert behind == [1] and session.congested
    await session.flush()
    session.end(iid, Outcome.CLEAN, after)
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    stored = got.chunks[iid]
    assert [c.data for c in stored] == [*pieces, b": behind\n", b": still\n"]
    offsets = [c.offset_ns for c in stored]
    assert offsets == sorted(offsets) and 0 <= offsets[0] and offsets[6] <= after


async def test_a_turn_that_does_not_end_reads_the_answers_from_the_closure(
    tmp_path: Path,
) -> None:
    """A flood's chunks come in one long callback: the read asked for at the end of the turn
    cannot run, so once ANSWERS_GRACE_NS has passed the closure reads the writer's answers
    itself and brakes if the writer is still behind."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    behind: list[int] = []
    forward = session.chunk_forwarder(iid, 0, lambda: behind.append(1), [])
    session.backlog_since_ns = time.monotonic_ns() - 2 * session_module.LAG_HIGH_NS
    session._update_due()
    forward(b"data: 1\n\n")
    assert session._answers_read is not None and not behind  # asked for, not read yet
    forward(b"data: 2\n\n")  # the same turn, within the grace: no check, no read
    assert session._answers_read is not None and not behind
    session._answers_asked_ns -= session_module.ANSWERS_GRACE_NS  # the turn goes on
    session._update_due()
    forward(b"data: 3\n\n")
    assert session._answers_read is None and behind == [1] and session.congested
    await session.close()


async def test_a_failing_chunk_forwarder_still_forwards(tmp_path: Path) -> None:
    """Whatever goes wrong in recording a chunk (here: the pause hook raising), the chunk
    still goes to the client: raising would break mitmproxy's stream."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)

    def broken_pause() -> None:
        raise RuntimeError("no transport")

    forward = session.chunk_forwarder(iid, 0, broken_pause, [])
    session.backlog_since_ns = time.monotonic_ns() - 2 * session_module.LAG_HIGH_NS
    session._update_due()
    assert forward(b"data: 1\n\n") == b"data: 1\n\n"
    await asyncio.sleep(0)  # the writer's answers read: still behind
    assert forward(b"data: 2\n\n") == b"data: 2\n\n"  # the pause raised, forwarded anyway
    assert session.congested
    await session.close()


async def test_the_closure_sends_a_frame_whose_timer_the_busy_loop_cannot_run(
    tmp_path: Path,
) -> None:
    """mitmproxy hands over the ~2,000 chunks of one 64 KiB read of a flood in one callback
    (~75 ms): the frame's timer cannot run meanwhile, so the closure sends the frame itself
    once it is FRAME_DELAY_S old (it went 75-136 ms late, and the data it held met the
    LAG_HIGH_NS brake before the writer ever saw it). A younger frame keeps waiting. So does
    a riding frame (a flood that starts after a quiet spell) once QUIET_FRAME_DELAY_S old."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    await session.flush()
    frames = session._frame
    session._last_frame_ns = time.monotonic_ns()  # busy: the next frame waits on its timer
    behind: list[int] = []
    record = session.chunk_forwarder(iid, time.monotonic_ns(), lambda: behind.append(1), [])
    record(b"data: 1\n\n")
    record(b"data: 2\n\n")
    assert session._frame == frames and session._timer is not None  # young: it waits
    # the loop has been busy since the frame began (no await in between): age it
    session._outbox_since -= session_module.FRAME_DELAY_NS
    session._update_due()
    record(b"data: 3\n\n")  # sent by the closure, no brake
    assert session._frame == frames + 1 and session._timer is None
    assert not session.congested and not behind
    record(b"data: 4\n\n")  # starts the next frame, on its timer again
    assert not behind
    assert session._frame == frames + 1 and session._timer is not None
    await session.flush()
    frames = session._frame
    session._last_frame_ns -= session_module.QUIET_GAP_NS  # quiet: the next chunks ride
    record(b"data: 5\n\n")
    assert session._ride_ns != session_module.NO_BACKLOG
    session._outbox_since -= session_module.QUIET_FRAME_DELAY_NS  # one long turn
    session._ride_ns -= session_module.QUIET_FRAME_DELAY_NS
    session._update_due()
    record(b"data: 6\n\n")
    assert session._frame == frames + 1 and session._timer is None and not behind
    session.end(iid, Outcome.CLEAN, 10)
    await session.close()
    stored = (await read_back(tmp_path / "rec.cassette")).chunks[iid]
    assert [c.data for c in stored] == [b"data: %d\n\n" % n for n in range(1, 7)]


async def test_frames_wait_while_busy_and_chunks_ride_along_after_a_quiet_spell(
    tmp_path: Path,
) -> None:
    """Within QUIET_GAP_S of the last frame, or after a full one (busy traffic), a new frame
    waits FRAME_DELAY_S for more items (fewer pipe writes in a flood). After a quiet spell (a
    small frame, QUIET_GAP_S ago) an item other than a chunk goes at the end of its loop
    turn, and chunks ride along: their frame goes at the end of the turn of the first chunk
    QUIET_RIDE_NS after it began, with the writer's answers read in that turn; an item other
    than a chunk ends the ride at the end of its turn, and a stream that stops is sent by
    timer, QUIET_FRAME_DELAY_S after its first chunk."""
    session = task_session(str(tmp_path / "rec.cassette"))
    await session.start()
    loop = asyncio.get_running_loop()
    iid = session.begin(GET, 1.0)

    def pending_delay() -> float | None:
        """Seconds until the pending frame's send; None: at the end of this loop turn."""
        timer = session._timer
        assert timer is not None
        return timer.when() - loop.time() if isinstance(timer, asyncio.TimerHandle) else None

    assert pending_delay() is None  # the first frame ever: nothing was sent before
    session.head(iid, SSE_HEAD, 1)
    await session.flush()
    session._last_frame_ns = time.monotonic_ns()  # as if a frame had just gone: busy
    record = session.chunk_forwarder(iid, 0, lambda: None, [])
    record(b"data: x\n\n")
    delay = pending_delay()
    assert delay is not None
    assert session_module.QUIET_GAP_S < delay <= session_module.FRAME_DELAY_S
    await session.flush()
    frames = session._frame
    session._last_frame_ns -= session_module.QUIET_GAP_NS  # as if QUIET_GAP_S went by
    record(b"data: y1\n\n")  # rides: a frame of chunks, on a timer that rarely fires
    delay = pending_delay()
    assert delay is not None
    assert session_module.FRAME_DELAY_S < delay <= session_module.QUIET_FRAME_DELAY_S
    record(b"data: y2\n\n")  # before QUIET_RIDE_NS: rides on
    assert session._frame == frames and pending_delay() is not None
    read_before = session._answers_read_ns
    session._ride_ns -= session_module.QUIET_RIDE_NS  # as if QUIET_RIDE_NS went by
    session._update_due()
    record(b"data: y3\n\n")  # the ride ends with this chunk's turn
    assert pending_delay() is None and session._frame == frames
    await asyncio.sleep(0)  # the end of this loop turn: the frame is out, answers read
    assert session._timer is None and session._frame == frames + 1
    assert session._answers_read_ns > read_before
    session._last_frame_ns -= session_module.QUIET_GAP_NS
    record(b"data: z\n\n")
    assert pending_delay() is not None
    session.end(iid, Outcome.CLEAN, 99)  # not a chunk: ends the ride at the end of the turn
    assert pending_delay() is None
    await session.flush()
    iid2 = session.begin(GET, 2.0)
    session.head(iid2, SSE_HEAD, 1)
    await session.flush()
    full = [b"data: %d\n\n" % n for n in range(session_module.QUIET_FRAME_ITEMS)]
    feed(session, iid2, full)
    await session.flush()  # a full frame: even after a gap, traffic counts as busy
    session._last_frame_ns -= session_module.QUIET_GAP_NS
    feed(session, iid2, [b"data: w\n\n"])
    delay = pending_delay()
    assert delay is not None and delay <= session_module.FRAME_DELAY_S
    await session.flush()
    frames = session._frame
    session._last_frame_ns -= session_module.QUIET_GAP_NS
    feed(session, iid2, [b"data: last\n\n"])  # rides, and the stream stops: the timer sends
    async with asyncio.timeout(5):
        while session._frame == frames:
            await asyncio.sleep(0.005)
    session.end(iid2, Outcome.CLEAN, 99)
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    assert [c.data for c in got.chunks[iid]] == [
        b"data: x\n\n", b"data: y1\n\n", b"data: y2\n\n", b"data: y3\n\n", b"data: z\n\n"]
    assert [c.data for c in got.chunks[iid2]] == [*full, b"data: w\n\n", b"data: last\n\n"]


# --------------------------------------------------------------------------------------------
# runs of chunks: cut by frames and batches anywhere, nothing lost, moved or left unredacted

RUN_PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@RUN_PROPERTY
@given(
    runs=st.lists(st.tuples(st.integers(1, 3), st.lists(st.integers(0, 90), min_size=1,
                                                         max_size=12)),
                  min_size=1, max_size=8),
    max_batch=st.integers(1, 8),
    max_bytes=st.integers(1, 300),
)
def test_a_batch_is_cut_at_either_limit_and_keeps_the_runs_in_order(
    runs: list[tuple[int, list[int]]], max_batch: int, max_bytes: int
) -> None:
    """`Writer._take` cuts a run of chunks where a batch reaches MAX_BATCH items or
    MAX_BATCH_BYTES (the chunk that reaches it included); the runs come out whole and in
    order, and each frame's ACK is reported by the batch that passes it."""
    writer = Writer(cast(Cassette, None), RedactionRules(), lambda _: None, lambda _: None)
    frames = [[(RUN, token, [n * 10 + k for k in range(len(sizes))],
                [bytes([65 + k % 26]) * size for k, size in enumerate(sizes)]), (ACK, n)]
              for n, (token, sizes) in enumerate(runs)]
    for frame in frames:
        writer.feed(frame)
    taken: list[tuple[int, int, bytes]] = []
    acked: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_module, "MAX_BATCH", max_batch)
        patch.setattr(writer_module, "MAX_BATCH_BYTES", max_bytes)
        while writer.queue:
            items, commit, stopping = writer._take()
            assert not stopping
            sizes = [len(data) for item in items for data in item[3]]
            assert len(sizes) <= max_batch
            assert sum(sizes[:-1]) < max_bytes  # only the last chunk may reach the limit
            taken += [(item[1], ns, data) for item in items
                      for ns, data in zip(item[2], item[3], strict=True)]
            if commit.acked is not None:
                acked.append(commit.acked)
    assert taken == [(frame[0][1], ns, data) for frame in frames
                     for ns, data in zip(frame[0][2], frame[0][3], strict=True)]
    assert acked == sorted(acked) and acked[-1] == len(frames) - 1


NDJSON_HEAD = ResponseHead(200, "OK", (("Content-Type", "application/x-ndjson"),))
FRAMINGS = {  # head, and how one JSON object is framed in the stream
    "sse": (SSE_HEAD, lambda obj: b"data: %s\n\n" % obj),
    "ndjson": (NDJSON_HEAD, lambda obj: b"%s\n" % obj),
}


@RUN_PROPERTY
@given(data=st.data(), framing=st.sampled_from(sorted(FRAMINGS)))
def test_secret_events_survive_any_frame_and_batch_cuts(data: st.DataObject, framing: str
                                                         ) -> None:
    """Two interleaved streams, one through the proxy's chunk closure and one through
    `chunk`, cut into chunks anywhere, with frames and batches cut anywhere (tiny limits,
    and frames sent at any point):
    each stream is stored with its own chunks and times, and the secret, wherever the cuts
    fall around it, is never stored. SSE is redacted a run of whole events at a time,
    NDJSON a run of whole lines."""
    head, frame = FRAMINGS[framing]
    events = [frame(b'{"n": %d}' % n) for n in range(4)]
    secret_at = data.draw(st.integers(0, 4), label="secret event position")
    events.insert(secret_at, frame(b'{"api_key": "%s"}' % SECRET.encode()))
    stream = b"".join(events)
    expected = stream.replace(SECRET.encode(), MARKER.encode())

    def cut(label: str) -> list[bytes]:
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=10),
                                    label=label)))
        bounds = [0, *cuts, len(stream)]
        return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    pieces = {"closure": cut("closure cuts"), "chunk": cut("chunk cuts")}
    order = data.draw(st.permutations(["closure"] * len(pieces["closure"])
                                      + ["chunk"] * len(pieces["chunk"])), label="order")
    flushes = data.draw(st.sets(st.integers(0, len(order))), label="flush points")
    # the closure counts nothing: its frames go by time (here: sent at these points)
    sends = data.draw(st.sets(st.integers(0, len(order))), label="frame send points")
    limits = (data.draw(st.integers(1, 5), label="frame items"),
              data.draw(st.integers(1, 6), label="batch items"),
              data.draw(st.integers(1, 120), label="batch bytes"))

    async def record(path: Path) -> ReadBack:
        session = task_session(str(path))
        await session.start()
        ids = {name: session.begin(GET, 1.0) for name in pieces}
        for iid in ids.values():
            session.head(iid, head, 1)
        closure = session.chunk_forwarder(ids["closure"], 0, lambda: None, [])
        given_at: list[int] = []
        sent = {name: 0 for name in pieces}
        for step, name in enumerate(order):
            if step in flushes:
                await session.flush()
            if step in sends:
                session._send()
            piece = pieces[name][sent[name]]
            sent[name] += 1
            if name == "closure":
                closure(piece)
            else:
                given_at.append(step)
                session.chunk(ids[name], step, piece)
        for iid in ids.values():
            session.end(iid, Outcome.CLEAN, len(order))
        await session.close()
        assert SECRET.encode() not in path.read_bytes()
        got = await read_back(path)
        stored = {name: got.chunks[iid] for name, iid in ids.items()}
        for name, chunks in stored.items():
            assert len(chunks) == len(pieces[name])  # redaction keeps the chunk count
            assert b"".join(c.data for c in chunks) == expected
            assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert [c.offset_ns for c in stored["chunk"]] == given_at
        derived = [e.data for e in got.events[ids["closure"]]]
        assert len(derived) == len(events)  # one event (or frame) per object, both streams
        assert derived == [e.data for e in got.events[ids["chunk"]]]
        return got

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(session_module, "FRAME_ITEMS", limits[0])
        patch.setattr(writer_module, "MAX_BATCH", limits[1])
        patch.setattr(writer_module, "MAX_BATCH_BYTES", limits[2])
        asyncio.run(record(Path(tmp) / "rec.cassette"))


# --------------------------------------------------------------------------------------------
# event-to-chunk attribution for any chunking (the writer's per-body state, without I/O)

HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
line = st.text("abc xyz:", max_size=6)
block = st.one_of(
    st.builds(lambda d: f"data: {d}\n\n", line),
    st.builds(lambda d, e: f"event: {e}\ndata: {d}\r\ndata: {d}\r\r", line, line),
    st.builds(lambda d: f": {d}\n", line),
    st.builds(lambda d: f"id: 7\ndata:{d}\ndata\n\n", line),
    st.just("\n"),
    st.just("retry: 10\n\n"),
)


@HYPOTHESIS
@given(
    bom=st.booleans(),
    blocks=st.lists(block, min_size=1, max_size=8),
    data=st.data(),
)
def test_event_chunk_attribution_for_any_chunking(
    bom: bool, blocks: list[str], data: st.DataObject
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + "".join(blocks).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    body = Body(1, RedactionRules().scrubber(), is_sse=True)
    batch = WriteBatch()
    group = data.draw(st.integers(1, 4), label="chunks fed per call (the writer batches)")
    offsets = [seq * 10 for seq in range(len(chunks))]
    for start in range(0, len(chunks), group):
        body.feed(offsets[start : start + group], chunks[start : start + group], batch)
    body.finish(batch)

    def chunk_holding(position: int) -> int:
        """Index of the non-empty chunk that holds the byte at `position`."""
        for seq, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            if a <= position < b:
                return seq
        raise AssertionError(position)

    expected = parse(stream)
    got = sse_events(batch)
    assert body.events == sum(isinstance(item, Event) for item in expected)
    assert [(e.kind, e.data) for e in got] == [_summary(item) for item in expected]
    for event, item in zip(got, expected, strict=True):
        assert event.first_chunk == chunk_holding(item.start)
        assert event.last_chunk == chunk_holding(item.end - 1)
        assert event.offset_ns == event.last_chunk * 10
    assert [(c[1], c[3]) for c in batch.all_chunks()] == list(enumerate(chunks))


LONG_SHAPES = {  # how the credential sits in an event longer than MAX_HELD
    "one line": lambda pad, name, secret: b'data: {"pad": "%s", "%s": "%s", "z": 1}\n\n'
    % (pad, name, secret),
    "value on the next line": lambda pad, name, secret: b'data: {"pad": "%s", "%s":\ndata: '
    b'"%s"}\n\n' % (pad, name, secret),
    "pad lines first": lambda pad, name, secret: b"".join(
        b"data: %s\n" % pad[i:i + 40] for i in range(0, len(pad), 40))
    + b'data: {"%s": "%s"}\n\n' % (name, secret),
}


@HYPOTHESIS
@given(data=st.data(), shape=st.sampled_from(sorted(LONG_SHAPES)),
       name=st.sampled_from([b"api_key", b"token", b"client_secret"]))
def test_a_secret_in_an_event_longer_than_max_held_is_redacted_across_any_cut(
    data: st.DataObject, shape: str, name: bytes
) -> None:
    """An event past MAX_HELD is released before its end: the credential's key and its value
    can then fall on either side of a release (limits scaled down: 300 bytes held at most,
    60 of lookahead, 120 of carry). Neither the named value nor a value given by itself
    (`--redact-value`) is stored, whatever the chunking, and the stream keeps its events."""
    secret = b"sk-" + data.draw(st.binary(min_size=8, max_size=24), label="s").hex().encode()
    by_value = b"VAL-" + data.draw(st.text("0123456789", min_size=6, max_size=12),
                                   label="v").encode()
    pad = data.draw(st.integers(300, 900), label="pad") * b"a"
    at = data.draw(st.integers(0, len(pad)), label="value position")
    pad = pad[:at] + by_value + pad[at:]
    stream = (b"data: before\n\n" + LONG_SHAPES[shape](pad, name, secret)
              + b"data: after\n\n")
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=40),
                                label="cuts")))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    group = data.draw(st.integers(1, 3), label="chunks fed per call")
    rules = RedactionRules.with_extra(values=[by_value.decode()])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body_module, "MAX_HELD", 300)
        patch.setattr(body_module, "LOOKAHEAD", 60)
        patch.setattr(body_module, "CARRY", 120)
        body = Body(1, rules.scrubber(), is_sse=True)
        batch = WriteBatch()
        for start in range(0, len(chunks), group):
            body.feed(list(range(start, start + group)), chunks[start:start + group], batch)
        body.finish(batch)
    stored = b"".join(c[3] for c in batch.all_chunks())
    assert secret not in stored and by_value not in stored
    assert len(batch.all_chunks()) == len(chunks)  # redaction keeps the chunk count
    assert body.events == 3
    events = [e.data for e in sse_events(batch)]
    assert events[0] == "before" and events[2] == "after" and MARKER in events[1]
    assert stored.count(b"\n") == stream.count(b"\n")  # no line gained or lost


TEXT_SHAPES = {  # a body of another type (chunked, no content coding) and its secret
    "log line": lambda pad, secret: b"%s\nGET /x?token=%s 200\n%s\n" % (pad, secret, pad),
    "pretty json": lambda pad, secret: b'{\n  "pad": "%s",\n  "api_key":\n    "%s"\n}\n'
    % (pad, secret),
    "long json line": lambda pad, secret: b'{"pad": "%s", "client_secret": "%s"}' % (pad,
                                                                                    secret),
}


@HYPOTHESIS
@given(data=st.data(), shape=st.sampled_from(sorted(TEXT_SHAPES)))
def test_a_text_body_is_stored_as_it_comes_and_its_secret_never(
    data: st.DataObject, shape: str
) -> None:
    """A streamed body of another type (a log, chunked JSON) was held whole until its end
    (found by a stranger's audit: a CI log's chunks never reached the cassette while it
    streamed). It goes a run of whole lines at a time now (past MAX_HELD: all but LOOKAHEAD;
    limits scaled down here), each run redacted after the tail of the one before: the
    secret is found wherever the cuts fall, and every chunk ending a line is stored
    before the body ends."""
    secret = b"S3CR3T" + data.draw(st.binary(min_size=4, max_size=12), label="s").hex().encode()
    pad = data.draw(st.integers(0, 700), label="pad") * b"p"
    stream = TEXT_SHAPES[shape](pad, secret)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=30),
                                label="cuts")))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    head = ResponseHead(200, "OK", (("Content-Type", "text/plain"),))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body_module, "MAX_HELD", 300)
        patch.setattr(body_module, "LOOKAHEAD", 60)
        patch.setattr(body_module, "CARRY", 120)
        patch.setattr(body_module, "LINE_CARRY", 120)
        body = Body(1, RedactionRules().scrubber(), is_sse=False)
        assert head.headers  # (a text/plain head: no dialect, no coding)
        batch = WriteBatch()
        for seq, chunk in enumerate(chunks):
            body.feed([seq], [chunk], batch)
        before_end = len(batch.all_chunks())
        body.finish(batch)
    stored = b"".join(c[3] for c in batch.all_chunks())
    assert secret not in stored and MARKER.encode() in stored
    assert [c[1] for c in batch.all_chunks()] == list(range(len(chunks)))
    assert stored.count(b"\n") == stream.count(b"\n")
    last_line_end = max((i + 1 for i, c in enumerate(chunks) if c.endswith(b"\n")), default=0)
    assert before_end >= last_line_end  # stored as it came, not at the end
    fed = len(stream) - len(chunks[-1])  # held before the last chunk came, at most
    if fed > 300 and any(end <= fed - 60 for end in bounds[1:-1]):  # past MAX_HELD then
        assert before_end > 0


def test_writer_state_stays_bounded_on_a_long_stream() -> None:
    body = Body(1, RedactionRules().scrubber(), is_sse=True)
    batch = WriteBatch()
    for seq in range(2000):
        body.feed([seq], [b"data: %d\n\n" % seq if seq % 2 else b"data: half"], batch)
        body.feed([seq], [b" done\n\n" if seq % 2 == 0 else b""], batch)
    assert body.events == 2000
    assert len(body._held) <= 1  # nothing but a trailing empty chunk waits
    assert body.counter is not None and body.counter._parser is None  # counted by the regex
    events = sse_events(batch)
    assert events[-2].first_chunk == 3996 and events[-2].last_chunk == 3997


def _summary(item: Item) -> tuple[str, str]:
    return ("comment", item.text) if isinstance(item, Comment) else ("event", item.data)


def sse_events(batch: WriteBatch) -> list[RecordedEvent]:
    """The events a reader derives from the chunks in `batch`."""
    deriver = Deriver(True, ())
    for _, seq, ns, data in batch.all_chunks():
        deriver.feed(Chunk(seq, ns, data))
    return deriver.finish()

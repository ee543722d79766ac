"""Hostile and careless HTTP/1.1 against a real replay server on 127.0.0.1.

Every request here goes over a real socket to a real `ReplayServer` (running on an event
loop of its own thread, so that blocking clients, the SDKs and hypothesis can drive it);
the server's log, its loop's exception handler and its records are watched, and no test
passes if a handler raised, logged a traceback or stopped serving. Timeouts are configured
short (`ReplayOptions.limits`), never waited out at their defaults.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.faults import FaultPlan
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.replay.records import Answer, BackgroundLog, Served
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import ReplayOptions, ReplayServer
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)
from sse_recorder.wire.requests import Limits
from tests.helpers import SSE_RECORDER

pytestmark = pytest.mark.integration

T = TypeVar("T")
UP = "http://upstream.test"
SSE = (("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"))
STREAM = [b"id: 1\ndata: a\n\n", "id: \u03a9\ndata: b\n\n".encode(), b"id: 5\n\n",
          b"data: c\n\n"]
GOOD = b"good"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
               "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
               "message": {"role": "assistant", "content": "hello"}}]}
MESSAGE = {"model": "claude-3-5-haiku-latest", "max_tokens": 64,
           "messages": [{"role": "user", "content": "hi"}]}


def _json_head(body: bytes) -> ResponseHead:
    return ResponseHead(200, "OK", (("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body)))))


RECORDINGS: list[tuple[RecordedRequest, ResponseHead, list[bytes]]] = [
    (RecordedRequest("GET", f"{UP}/stream", ()), ResponseHead(200, "OK", SSE), STREAM),
    (RecordedRequest("GET", f"{UP}/good", ()),
     ResponseHead(200, "OK", (("Content-Type", "text/plain"), ("Content-Length", "4"))),
     [GOOD]),
    (RecordedRequest("POST", f"{UP}/v1/chat/completions", (), json.dumps(CHAT).encode()),
     _json_head(json.dumps(CHAT_ANSWER).encode()), [json.dumps(CHAT_ANSWER).encode()]),
    (RecordedRequest("POST", f"{UP}/v1/messages", (), json.dumps(MESSAGE).encode()),
     _json_head(b"{}"), [b"{}"]),
    # as mitmproxy records curl's `?q=한국어`: the query as typed
    (RecordedRequest("GET", f"{UP}/search?q=한국어", ()),
     ResponseHead(200, "OK", (("Content-Type", "text/plain"), ("Content-Length", "5"))),
     [b"found"]),
]


async def write_cassette(path: Path) -> None:
    """The recordings above, written through the store as the recorder writes them."""
    cassette = await Cassette.open_for_recording(path)
    try:
        for request, head, chunks in RECORDINGS:
            iid = cassette.allocate_id()
            await cassette.write(WriteBatch(
                starts=[InteractionStart(iid, time.time(), request)],
                heads=[HeadUpdate(iid, head, 1000, head.headers == SSE)],
                chunks=[(iid, seq, 2000 + seq * 1000, data) for seq, data in enumerate(chunks)],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, 9000, None)],
            ))
        await cassette.finish_recording()
    finally:
        await cassette.close()


# -- a real server on a thread of its own, watched -----------------------------------------


class _Watch(logging.Handler):
    """Every warning or error logged anywhere while the server runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Running:
    server: ReplayServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    watch: _Watch = field(default_factory=_Watch)

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def records(self) -> list[Served]:
        self.run(asyncio.sleep(0))  # what the loop has done so far is recorded by now
        return list(self.server.served)

    def assert_healthy(self) -> None:
        """No handler raised, nothing logged a traceback, no request met the guard."""
        assert self.loop_errors == []
        assert [r.getMessage() for r in self.watch.records] == []
        assert [s for s in self.records() if s.answer is Answer.ERROR] == []
        assert status_of(exchange(self.port, GET_GOOD)) == 200  # still serving


@pytest.fixture
def cassette(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.sqlite"
    asyncio.run(write_cassette(path))
    return path


def serve(path: Path, options: ReplayOptions | None = None) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="replay", daemon=True)
    thread.start()
    options = options or ReplayOptions(Timing(instant=True), limits=FAST, linger=0.5)
    server = asyncio.run_coroutine_threadsafe(
        ReplayServer.open(str(path), options), loop).result(30)
    running = Running(server, loop, thread)
    loop.set_exception_handler(lambda _, context: running.loop_errors.append(context))
    logging.getLogger().addHandler(running.watch)
    running.run(server.start("127.0.0.1", 0))
    try:
        yield running
    finally:
        logging.getLogger().removeHandler(running.watch)
        running.run(server.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


FAST = Limits(head=2.0, body_idle=2.0, idle=5.0, max_body=1 << 20)


@pytest.fixture
def replay(cassette: Path) -> Iterator[Running]:
    yield from serve(cassette)


# -- a raw client ----------------------------------------------------------------------------

GET_GOOD = b"GET /good HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n"


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset ends it too)."""
    received = bytearray()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    return bytes(received)


def exchange(port: int, raw: bytes, shut: bool = True, timeout: float = 10) -> bytes:
    """Send `raw` (then our FIN, with `shut`) and read until the server closes."""
    with connect(port, timeout) as sock:
        try:
            sock.sendall(raw)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking it all
            pass
        return read_all(sock)


STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


def status_of(response: bytes) -> int:
    """The final status of the first response (past any `100 Continue`)."""
    rest = response
    while True:
        found = STATUS.match(rest)
        assert found is not None, response[:300]
        if found.group(1) != b"100":
            return int(found.group(1))
        rest = rest[rest.index(b"\r\n\r\n") + 4:]


def split_response(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def is_closed_by_server(sock: socket.socket) -> bool:
    """The server sent its FIN (we never sent ours)."""
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- regressions: each reproduction from the issue -----------------------------------------


@pytest.mark.parametrize(("target", "host"), [
    ("//[", "upstream.test"),
    ("http://[::1/x", "upstream.test"),
    ("http://a]b/", "upstream.test"),
    ("/nothing", "http://[::1/x"),
    ("/nothing", "[::1"),
])
def test_brackets_in_targets_and_hosts_are_a_404(
    replay: Running, target: str, host: str
) -> None:
    """`GET //[` raised `ValueError: Invalid IPv6 URL` in matching: no response at all."""
    response = exchange(replay.port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status, fields, body = split_response(response)
    assert status == 404 and b"no recorded interaction matches" in body
    replay.assert_healthy()


def test_json_nested_5000_deep_is_a_404_that_explains(replay: Running) -> None:
    """A POST body of 5,000 `[` raised RecursionError in the JSON comparison."""
    body = b"[" * 5000
    response = exchange(replay.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
                        b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    status, fields, answer = split_response(response)
    assert status == 404 and fields["content-type"] == "application/json"
    assert "differ" in json.loads(answer)["error"]["message"]
    replay.assert_healthy()


def test_content_length_with_transfer_encoding_is_a_400_and_nothing_more_is_served(
    replay: Running,
) -> None:
    """h11 read it as chunked and served the rest as a second request (a smuggling shape)."""
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /good HTTP/1.1\r\nHost: a\r\n\r\n")
    with connect(replay.port) as sock:
        sock.sendall(raw)
        response = read_all(sock)  # the server closes: we never send our FIN
    assert len(STATUS.findall(response)) == 1
    status, fields, body = split_response(response)
    assert status == 400 and fields["connection"] == "close"
    assert b"Transfer-Encoding" in body and body.endswith(b"\n") and body.count(b"\n") == 1
    assert [(s.status, s.answer) for s in replay.records()] == [(400, Answer.BAD_REQUEST)]
    replay.assert_healthy()


@pytest.mark.parametrize("raw", [
    b"GET /good HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    b"POST /good HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
    b"POST /good HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n",
    b"POST /good HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"f" * 30 + b"\r\n",
], ids=["obs-fold", "negative-chunk", "0x-chunk", "overflowing-chunk"])
def test_what_rfc_9112_rejects_is_a_400_and_the_close(replay: Running, raw: bytes) -> None:
    with connect(replay.port) as sock:
        sock.sendall(raw)
        response = read_all(sock)
    status, fields, _ = split_response(response)
    assert status == 400 and fields["connection"] == "close"
    replay.assert_healthy()


def test_a_version_this_server_does_not_speak_is_a_505(replay: Running) -> None:
    """llhttp reads any HTTP/x.y; an HTTP/2.0 request line over this HTTP/1.1 connection
    was answered 200 as if it were 1.1 (an audit found it)."""
    with connect(replay.port) as sock:
        sock.sendall(b"GET /good HTTP/2.0\r\nHost: a\r\n\r\n")
        response = read_all(sock)
    status, fields, body = split_response(response)
    assert status == 505 and fields["connection"] == "close"
    assert b"is not supported" in body
    record = replay.records()[-1]
    assert (record.method, record.target, record.status) == ("GET", "/good", 505)
    replay.assert_healthy()


@pytest.mark.parametrize(("raw", "method", "target", "status"), [
    (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", "BREW", "?", 501),
    (b"GET /good HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET", "/good", 400),
])
def test_a_refused_request_is_recorded_as_far_as_it_was_read(
    replay: Running, raw: bytes, method: str, target: str, status: int
) -> None:
    """Every refused request was recorded as `? ?`, even when its line had been read (an
    audit found it)."""
    with connect(replay.port) as sock:
        sock.sendall(raw)
        assert status_of(read_all(sock)) == status
    record = replay.records()[-1]
    assert (record.method, record.target, record.answer) == (method, target,
                                                              Answer.BAD_REQUEST)
    replay.assert_healthy()


def test_http_1_0_gets_no_chunked_body_and_the_close(replay: Running) -> None:
    with connect(replay.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        response = read_all(sock)  # ends because the server closes: the body's end
    status, fields, body = split_response(response)
    assert status == 200 and "transfer-encoding" not in fields
    assert fields["connection"] == "close"
    assert body == b"".join(STREAM)  # close-delimited: the recorded bytes, no chunk framing
    replay.assert_healthy()


def test_each_http_version_gets_its_own_framing_of_one_recording(replay: Running) -> None:
    """The server keeps a recording's body writer per HTTP version: a 1.0 client after a
    1.1 one (and a 1.1 one after that) still gets the framing its version can take."""
    framed = []
    for version in (b"1.1", b"1.0", b"1.1"):
        response = exchange(replay.port, b"GET /stream HTTP/%b\r\nHost: a\r\n"
                            b"Connection: close\r\n\r\n" % version)
        _, fields, body = split_response(response)
        framed.append((fields.get("transfer-encoding"), body == b"".join(STREAM)))
    assert framed == [("chunked", False), (None, True), ("chunked", False)]
    replay.assert_healthy()


def test_http_1_0_keep_alive_is_kept_where_the_framing_allows(replay: Running) -> None:
    request = b"GET /good HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with connect(replay.port) as sock:
        for _ in range(2):  # the same connection carries both
            sock.sendall(request)
            response = b""
            while not response.endswith(GOOD):
                data = sock.recv(65536)
                assert data, response
                response += data
            status, fields, _ = split_response(response)
            assert status == 200 and fields["connection"] == "keep-alive"
    replay.assert_healthy()


@pytest.mark.parametrize("raw", [
    b"GET /missing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",  # a 404
    b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",  # a recording
    b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close\r\n\r\n",  # chunked
    b"GET /missing HTTP/1.0\r\n\r\n",  # HTTP/1.0 without keep-alive
])
def test_connection_close_is_said_and_done_on_every_response(
    replay: Running, raw: bytes
) -> None:
    with connect(replay.port) as sock:
        sock.sendall(raw)
        response = read_all(sock)  # the server closes: we never send our FIN
    status, fields, _ = split_response(response)
    assert fields.get("connection") == "close", response[:300]
    replay.assert_healthy()


def test_connection_close_on_a_fault_answer(cassette: Path) -> None:
    options = ReplayOptions(Timing(instant=True), faults=FaultPlan.load(("http:status=503",),
                                                                        None, 0))
    for running in serve(cassette, options):
        with connect(running.port) as sock:
            sock.sendall(b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            response = read_all(sock)
        status, fields, _ = split_response(response)
        assert status == 503 and fields["connection"] == "close"


def test_expect_100_continue_is_answered_before_the_body(replay: Running) -> None:
    body = json.dumps(CHAT).encode()
    with connect(replay.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nExpect: 100-continue"
                     b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        interim = b""
        while b"\r\n\r\n" not in interim:  # nothing of the body sent yet
            data = sock.recv(65536)
            assert data, interim
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = split_response(read_all(sock))
    assert status == 200 and json.loads(answer) == CHAT_ANSWER
    replay.assert_healthy()


# -- time and memory limits ----------------------------------------------------------------


def test_a_head_sent_one_byte_at_a_time_is_cut_off(cassette: Path) -> None:
    """A client that sends its head a byte at a time holds nothing for long: 408, close."""
    limits = Limits(head=0.5, body_idle=5, idle=5)
    for running in serve(cassette, ReplayOptions(Timing(instant=True), limits=limits)):
        head = b"GET /good HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"z" * 200
        with connect(running.port) as sock:
            start = time.monotonic()
            for byte in head:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if select_readable(sock, 0.02):
                    break  # the answer came
            response = read_all(sock)
            elapsed = time.monotonic() - start
        status, fields, body = split_response(response)
        assert status == 408 and fields["connection"] == "close" and b"head" in body
        assert 0.4 < elapsed < 3.0, elapsed
        running.assert_healthy()


def select_readable(sock: socket.socket, timeout: float) -> bool:
    import select

    return bool(select.select([sock], [], [], timeout)[0])


def test_a_body_that_stalls_is_cut_off(cassette: Path) -> None:
    limits = Limits(head=5, body_idle=0.3, idle=5)
    for running in serve(cassette, ReplayOptions(Timing(instant=True), limits=limits)):
        with connect(running.port) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n"
                         b"\r\n{\"model\"")
            start = time.monotonic()
            response = read_all(sock)
            elapsed = time.monotonic() - start
        status, _, body = split_response(response)
        assert status == 408 and b"body" in body
        assert 0.25 < elapsed < 3.0, elapsed
        running.assert_healthy()


def test_an_idle_kept_alive_connection_is_closed_quietly(cassette: Path) -> None:
    limits = Limits(head=5, body_idle=5, idle=0.3)
    for running in serve(cassette, ReplayOptions(Timing(instant=True), limits=limits)):
        with connect(running.port) as sock:
            start = time.monotonic()
            assert read_all(sock) == b""  # no answer to nothing: just the close
            assert 0.25 < time.monotonic() - start < 3.0
        running.assert_healthy()


def test_buffered_request_bytes_are_capped_across_connections(cassette: Path) -> None:
    """Two big uploads at once: the second is refused (503) while the first holds the
    budget, a body over the per-request cap is a 413, and the budget comes back."""
    options = ReplayOptions(Timing(instant=True), limits=Limits(max_body=600_000),
                            max_buffered=800_000)
    for running in serve(cassette, options):
        body = b"x" * 500_000
        head = b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
        with connect(running.port) as first:
            first.sendall(head % len(body) + body[:-1])  # all but a byte: held
            deadline = time.monotonic() + 10
            while running.run(_used(running.server)) < len(body) - 1:
                assert time.monotonic() < deadline
            second = exchange(running.port, head % len(body) + body)
            assert status_of(second) == 503
            first.sendall(body[-1:])
            first.shutdown(socket.SHUT_WR)
            assert status_of(read_all(first)) == 404  # whole, matched (no such body)
        assert running.run(_used(running.server)) == 0
        too_big = exchange(running.port, head % 700_000)
        assert status_of(too_big) == 413
        assert status_of(exchange(running.port, head % len(body) + body)) == 404
        running.assert_healthy()


async def _used(server: ReplayServer) -> int:
    return server.budget.used


# -- a client that reads as fast as the server writes --------------------------------------

BIG = [b"data: %06d %s\n\n" % (i, b"x" * 90) for i in range(40_000)]  # 4.2 MB, cached


async def _write_big(path: Path) -> None:
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        await cassette.write(WriteBatch(
            starts=[InteractionStart(iid, time.time(), RecordedRequest("GET", f"{UP}/big", ()))],
            heads=[HeadUpdate(iid, ResponseHead(200, "OK", SSE), 1000, True)],
            chunks=[(iid, seq, 2000 + seq, data) for seq, data in enumerate(BIG)],
            ends=[EndUpdate(iid, True, Outcome.CLEAN, 90_000, None)],
        ))
        await cassette.finish_recording()
    finally:
        await cassette.close()


def test_an_instant_stream_playing_alone_still_lets_the_next_client_in(
    tmp_path: Path,
) -> None:
    """A lone `--instant` stream to a client that reads as fast as it can takes fewer turns,
    but still some: a second client's request is read and answered while the first still
    plays, and from then on the two take turns."""
    path = tmp_path / "big.sqlite"
    asyncio.run(_write_big(path))
    request = b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    serving = serve(path)
    running = next(serving)
    try:
        with connect(running.port) as first, connect(running.port) as second:
            playing = threading.Event()
            done: list[float] = []
            received = bytearray()

            def read_first() -> None:
                while data := first.recv(1 << 20):
                    received.extend(data)
                    if len(received) > 65536:
                        playing.set()
                done.append(time.monotonic())

            reader = threading.Thread(target=read_first)
            first.sendall(request)
            reader.start()
            assert playing.wait(10)
            second.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += second.recv(65536)
            answered = time.monotonic()
            reader.join(30)
            rest = read_all(second)
        assert bytes(received).endswith(b"0\r\n\r\n") and len(received) > 4_000_000
        assert head.startswith(b"HTTP/1.1 200") and (head + rest).endswith(b"0\r\n\r\n")
        assert answered < done[0]  # while the first was still playing
        assert [s.outcome for s in running.records()] == [Outcome.CLEAN, Outcome.CLEAN]
    finally:
        serving.close()


# -- resume -------------------------------------------------------------------------------


@pytest.mark.parametrize(("last_id", "rest"), [
    ("\u03a9".encode(), STREAM[2:]),  # UTF-8 on the wire, as browsers send it
    (b"5", STREAM[3:]),  # set by a block without data
    (b"1", STREAM[1:]),
    (b"unknown", STREAM),  # replayed from the start
])
def test_last_event_id_resumes_after_the_block_that_set_it(
    replay: Running, last_id: bytes, rest: list[bytes]
) -> None:
    response = exchange(replay.port, b"GET /stream HTTP/1.0\r\nLast-Event-ID: %b\r\n\r\n"
                        % last_id)
    status, _, body = split_response(response)
    assert status == 200 and body == b"".join(rest)


# -- the server's own failures -------------------------------------------------------------


def test_a_damaged_cassette_value_is_a_500_that_explains(cassette: Path) -> None:
    """Damage met while serving (the store screens a file when it opens it; this one is
    damaged after): a 500 naming it, one record, and the server goes on."""
    for running in serve(cassette):
        with sqlite3.connect(cassette) as db:  # a chunk stored as TEXT: SQLite cannot tell
            db.execute("UPDATE chunks SET data = 'not bytes' WHERE interaction_id = "
                       "(SELECT id FROM interactions WHERE url LIKE '%/good')")
        db.close()
        response = exchange(running.port, b"GET /good HTTP/1.1\r\nHost: a\r\n\r\n")
        status, fields, body = split_response(response)
        assert status == 500 and fields["connection"] == "close"
        assert body.startswith(b"sse-recorder: cannot answer GET /good: ")
        assert body.count(b"\n") <= 1 and b"Traceback" not in body
        [served] = running.records()
        assert (served.status, served.answer) == (500, Answer.ERROR)
        assert running.loop_errors == [] and running.watch.records == []
        stream = exchange(running.port, b"GET /stream HTTP/1.0\r\n\r\n")  # others still play
        assert split_response(stream)[2] == b"".join(STREAM)


# -- memory: the served ring, the log --------------------------------------------------------


def test_served_keeps_the_last_n_and_counts_all(cassette: Path) -> None:
    options = ReplayOptions(Timing(instant=True), served_kept=3)
    for running in serve(cassette, options):
        for i in range(7):
            exchange(running.port, b"GET /missing/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        records = running.records()
        assert [s.target for s in records] == ["/missing/4", "/missing/5", "/missing/6"]
        assert running.server.counts == {Answer.UNMATCHED: 7}


def test_the_log_never_blocks_on_a_pipe_nobody_reads() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    log = BackgroundLog(stream, size=50, flush_timeout=0.2)
    line = "x" * 1000
    start = time.monotonic()
    for _ in range(1000):  # 1 MB: far more than a pipe holds
        log(line)
    assert time.monotonic() - start < 1.0
    assert log.dropped > 0
    received = b""
    os.set_blocking(read_end, False)
    deadline = time.monotonic() + 10
    while b"log lines dropped" not in received:  # reading lets the thread go on
        assert time.monotonic() < deadline
        try:
            received += os.read(read_end, 1 << 20)
        except BlockingIOError:
            select_fd(read_end)
        else:
            log("after")
    log.close()
    stream.close()
    os.close(read_end)


def select_fd(fd: int) -> None:
    import select

    select.select([fd], [], [], 0.1)


def test_a_replay_process_with_an_unread_stderr_keeps_serving(cassette: Path) -> None:
    """It froze after about 1,390 requests when each log line was written in line."""
    process = subprocess.Popen([SSE_RECORDER, "replay", str(cassette), "--instant"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().strip()
        target = "/" + "m" * 400  # long lines fill the pipe after ~160 requests
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(2500):
                assert client.get(f"{target}?i={i}").status_code == 404
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lines = stderr.decode().splitlines()
    assert sum(target in line for line in lines) == 2500  # the queue held them all
    assert "Traceback" not in stderr.decode()


# -- issue 10: the mismatch answer an SDK can show ------------------------------------------


def test_openai_sdk_shows_the_nearest_recording(replay: Running) -> None:
    client = openai.OpenAI(base_url=f"{replay.server.base_url}/v1", api_key="test",
                           max_retries=2)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4.1", messages=[
            {"role": "user", "content": "hi"}])
    message = str(caught.value)
    assert "nearest recording: #3 POST http://upstream.test/v1/chat/completions" in message
    assert 'differs in body field model: recorded "gpt-4o-mini", got "gpt-4.1"' in message
    assert len(replay.records()) == 1  # x-should-retry: false, so no retries


def test_anthropic_sdk_shows_the_nearest_recording(replay: Running) -> None:
    client = anthropic.Anthropic(base_url=replay.server.base_url, api_key="test",
                                 max_retries=2)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-3-5-haiku-latest", max_tokens=32,
                               messages=[{"role": "user", "content": "hi"}])
    message = str(caught.value)
    assert "nearest recording: #4 POST http://upstream.test/v1/messages" in message
    assert "differs in body field max_tokens: recorded 64, got 32" in message
    assert len(replay.records()) == 1


@pytest.mark.parametrize(("path", "headers", "vendor"), [
    ("/v1/responses", {}, "openai"),
    ("/openai/deployments/x/chat/completions", {}, "openai"),
    ("/anything", {"anthropic-version": "2023-06-01"}, "anthropic"),
    ("/v1/messages/count_tokens", {}, "anthropic"),
    ("/api/stream", {}, None),
])
def test_the_answer_is_shaped_like_the_vendors_error(
    replay: Running, path: str, headers: dict[str, str], vendor: str | None
) -> None:
    response = httpx.post(replay.server.base_url + path, json={"x": 1}, headers=headers)
    assert response.status_code == 404 and response.headers["x-should-retry"] == "false"
    if vendor is None:
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.startswith("sse-recorder: no recorded interaction matches")
        return
    body = response.json()
    error = body["error"]
    assert error["message"].startswith("sse-recorder: no recorded interaction matches")
    assert (body.get("type") == "error") == (vendor == "anthropic")


# -- the fuzz: malformed everything, a 4xx for each, and the server goes on ----------------

METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "BREW",
                           "get", "G\x00T", "POST /x"]) | st.text(
    st.characters(codec="latin-1", exclude_characters="\r\n"), min_size=1, max_size=8)
TARGETS = st.sampled_from([
    "//[", "http://[::1/x", "http://a]b/", "/%zz", "/?a=%%&b", "*", "/a#b", "/\x7f",
    "http://user@[fe80::1%25eth0]:99999/x", "/" + "a" * 5000, "", "/v1/chat/completions",
    "/v1/messages?x=[", "/\u03a9", "http://upstream.test:bad/good?",
]) | st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40).map(
    lambda t: "/" + t)
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "", "http/1.1",
                            "HTTP/1.1 extra", "HTTP/0.9"])
HEADER_LINES = st.sampled_from([
    "Host: upstream.test", "Host: [::1", "Host: http://[::1/x", "Host:", "Host: a b",
    "Content-Length: -1", "Content-Length: abc", "Content-Length: 1, 2",
    "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip", "Transfer-Encoding: chunked, chunked", "Expect: 100-continue",
    "Expect: 200-ok", "Connection: close", "Connection: keep-alive, Upgrade",
    "Last-Event-ID: \u03a9", "Last-Event-ID: \xff\xfe", "anthropic-version: 2023-06-01",
    " folded continuation", "\tfolded", "NoColon", ": empty-name", "Bad Name: x",
    "X-Null: a\x00b", "Content-Type: application/json",
]) | st.tuples(
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=12),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30),
).map(lambda kv: f"{kv[0]}: {kv[1]}")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:  # deeply nested, closed or not
        depth = draw(st.integers(1, 20_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + closer * draw(st.integers(0, depth))).encode()
    if choice == 1:
        value = draw(st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20))
        return json.dumps(value).encode()
    if choice == 2:  # almost the recorded one
        return json.dumps({**CHAT, "model": draw(st.text(max_size=10))}).encode()
    return draw(st.binary(max_size=300))


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(["\r\n", "\n", "\r\n"]))
    line = f"{draw(METHODS)} {draw(TARGETS)} {draw(VERSIONS)}"
    headers = draw(st.lists(HEADER_LINES, max_size=6))
    body = draw(json_bodies() | st.just(b""))
    framing = draw(st.sampled_from(["length", "none", "wrong-length", "chunked-garbage"]))
    if framing == "length":
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "wrong-length":
        headers.append(f"Content-Length: {len(body) + draw(st.integers(1, 50))}")
    elif framing == "chunked-garbage":
        headers.append("Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + draw(st.sampled_from([b"", b"\r\n0\r\n\r\n",
                                                                     b"zz\r\n"]))
    head = eol.join([line, *headers]) + eol + eol
    return head.encode("utf-8", "surrogateescape") + body


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite"
    asyncio.run(write_cassette(path))
    yield from serve(path)


@settings(max_examples=int(os.environ.get("SSE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=hostile_requests())
def test_fuzz_every_malformed_request_gets_a_4xx_and_the_server_goes_on(
    fuzzed: Running, raw: bytes
) -> None:
    before = len(fuzzed.records())
    response = exchange(fuzzed.port, raw)
    status = status_of(response)
    if status == 200:  # hypothesis wrote a request that matches a recording: fine, rare
        assert fuzzed.records()[before].answer is Answer.RECORDED
    elif status == 501:  # a transfer coding (RFC 9112 §6.1) or a method (RFC 9110 §9.1)
        assert b"Transfer-Encoding" in response or b"is not supported" in response
    elif status == 505:  # an HTTP version llhttp reads but this server does not speak
        assert b"is not supported: this server speaks HTTP/1.1" in response
    else:
        assert 400 <= status < 500, response[:300]
    fuzzed.assert_healthy()


def test_fuzz_cases_that_found_bugs(fuzzed: Running) -> None:
    """Pinned examples: each crashed a handler, or got no answer, before the fix."""
    for raw in [b"GET //[ HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: http://[::1/x\r\n\r\n",
                b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n"
                + b"[" * 5000,
                b"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n"]:
        assert 400 <= status_of(exchange(fuzzed.port, raw)) < 500
    fuzzed.assert_healthy()



# -- pipelined requests, cut anywhere on the way --------------------------------------------

CHAT_BODY = json.dumps(CHAT).encode()
PIPELINED = [  # (request bytes, status, target)
    (b"GET /good HTTP/1.1\r\nHost: a\r\n\r\n", 200, "/good"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b"
     % (len(CHAT_BODY), CHAT_BODY), 200, "/v1/chat/completions"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (7, CHAT_BODY[:7], len(CHAT_BODY) - 7,
                                            CHAT_BODY[7:]), 200, "/v1/chat/completions"),
    (b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n", 404, "/missing"),
]
LAST = (b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, "/good")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.sampled_from(range(len(PIPELINED))), max_size=5), data=st.data())
def test_pipelined_requests_cut_anywhere_are_answered_in_order(
    fuzzed: Running, order: list[int], data: st.DataObject
) -> None:
    """Every request of a pipeline, sent in pieces cut anywhere (one send each, no delay),
    is answered once, in order, and the last one's close ends the connection."""
    requests = [PIPELINED[i] for i in order] + [LAST]
    wire = b"".join(raw for raw, _, _ in requests)
    cuts = data.draw(st.lists(st.integers(1, len(wire) - 1), unique=True, max_size=8))
    bounds = [0, *sorted(cuts), len(wire)]
    before = len(fuzzed.records())
    with connect(fuzzed.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in itertools.pairwise(bounds):
            sock.sendall(wire[start:end])
        answers = read_all(sock)
    assert [int(m[1]) for m in STATUS.finditer(answers)] == [s for _, s, _ in requests]
    assert [r.target for r in fuzzed.records()[before:]] == [t for _, _, t in requests]


def test_a_query_sent_as_curl_sends_it_matches_its_recording(replay: Running) -> None:
    """curl 7.88 sends a query as typed (raw UTF-8) and only the path percent-encoded: the
    exact bytes it wrote for `curl 'http://HOST/search?q=한국어'`."""
    raw = "GET /search?q=한국어 HTTP/1.1\r\nHost: upstream.test\r\nUser-Agent: curl/7.88.1\r\n" \
          "Accept: */*\r\nConnection: close\r\n\r\n"
    status, _, body = split_response(exchange(replay.port, raw.encode()))
    assert (status, body) == (200, b"found")
    [served] = replay.records()
    assert served.target == "/search?q=%ED%95%9C%EA%B5%AD%EC%96%B4" and served.status == 200

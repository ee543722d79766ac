"""`wire.requests.RequestReader`: the one request reader of the replay and its control API.

The reader takes an asyncio StreamReader; these tests feed one directly (bytes in, requests
or an error out), and the servers' integration tests cover it on real sockets.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_recorder.wire.requests import (
    MAX_HEAD,
    READ_SIZE,
    BadRequest,
    Budget,
    Limits,
    Request,
    RequestReader,
)


def reader_of(*pieces: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for piece in pieces:
        reader.feed_data(piece)
    if eof:
        reader.feed_eof()
    return reader


async def read_request(reader: asyncio.StreamReader, limits: Limits | None = None,
                       budget: Budget | None = None) -> Request | None:
    """The first request of a new connection."""
    return await RequestReader().read(reader, limits or Limits(), budget)


async def read_all(reader: asyncio.StreamReader) -> list[Request]:
    """Every request of a connection, in order, until the client closes."""
    requests = RequestReader()
    got = []
    while (request := await requests.read(reader)) is not None:
        got.append(request)
    return got


POST = (b"POST /v1/chat?stream=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: 13\r\n\r\n{\"model\":\"x\"}")


async def test_a_request_comes_back_whole() -> None:
    request = await read_request(reader_of(POST))
    assert request == Request("POST", "/v1/chat?stream=1", (
        ("host", "127.0.0.1"), ("content-type", "application/json"), ("content-length", "13"),
    ), b'{"model":"x"}', "1.1")


async def test_chunked_request_body_is_joined() -> None:
    raw = (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    request = await read_request(reader_of(raw))
    assert request is not None and request.body == b"abcde"


async def test_idle_close_is_a_clean_end() -> None:
    assert await read_request(reader_of()) is None


async def test_close_in_the_middle_of_a_head_is_bad() -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(b"GET /x HTTP/1.1\r\nHost:"))
    assert caught.value.status == 400


@pytest.mark.parametrize("raw", [
    b"GET\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
])
async def test_malformed_requests_raise_with_a_status(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(raw))
    assert 400 <= caught.value.status < 500 and str(caught.value)


async def test_a_body_over_the_cap_is_413() -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(raw), Limits(max_body=10))
    assert caught.value.status == 413


async def test_pipelined_requests_come_one_read_at_a_time_in_order() -> None:
    requests = RequestReader()
    reader = reader_of(POST + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
    first = await requests.read(reader)
    assert first is not None and first.target == "/v1/chat?stream=1"
    second = await requests.read(reader)
    assert second is not None and second.target == "/second" and second.body == b""
    assert await requests.read(reader) is None


@given(st.lists(st.integers(min_value=1, max_value=len(POST) - 1), unique=True, max_size=8))
def test_any_split_of_the_bytes_reads_the_same_request(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(POST)]
    pieces = [POST[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    async def read() -> Request | None:
        return await read_request(reader_of(*pieces))

    request = asyncio.run(read())
    assert request is not None and request.body == b'{"model":"x"}'
    assert request.method == "POST" and request.target == "/v1/chat?stream=1"


# -- what RFC 9112 says to reject -----------------------------------------------------------


@pytest.mark.parametrize("raw", [
    # both framings: one hop reads it as chunked, a front end reading Content-Length not
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
    b"0\r\n\r\n",
    # obsolete line folding (a header value continued on a line starting with SP or HT)
    b"GET /x HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",
    b"GET /x HTTP/1.1\nHost: a\nX-Long: one\n\ttwo\n\n",
    # bad chunk sizes: a sign, a prefix, whitespace first, not hex, too many digits, none
    *(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + size
      + b"\r\nabc\r\n0\r\n\r\n"
      for size in (b"-3", b"+3", b"0x3", b" 3", b"g", b"1" * 25, b"")),
])
async def test_what_rfc_9112_rejects_is_a_400(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(raw))
    assert caught.value.status == 400 and str(caught.value)


async def test_folding_is_looked_for_in_the_head_only() -> None:
    """A body (or a pipelined request) that has a line starting with a space is fine."""
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nline\r\n x"
    request = await read_request(reader_of(raw))
    assert request is not None and request.body == b"line\r\n x"


async def test_a_declared_body_over_the_cap_is_refused_before_it_is_read() -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
    with pytest.raises(BadRequest) as caught:  # no body follows, and no wait for it
        await read_request(reader_of(raw, eof=False), Limits(max_body=10))
    assert caught.value.status == 413


async def test_http_1_0_is_reported() -> None:
    request = await read_request(reader_of(b"GET /x HTTP/1.0\r\n\r\n"))
    assert request is not None and request.http_version == "1.0"


# -- time limits ----------------------------------------------------------------------------


async def test_a_head_that_trickles_in_is_cut_off_with_a_408() -> None:
    reader = reader_of(b"GET /x HTTP/1.1\r\nHo", eof=False)
    start = time.monotonic()
    with pytest.raises(BadRequest) as caught:
        await read_request(reader, Limits(head=0.2))
    assert caught.value.status == 408 and "head" in str(caught.value)
    assert 0.15 < time.monotonic() - start < 2.0


async def test_the_head_limit_counts_from_its_first_byte_not_per_read() -> None:
    """One byte every 50 ms never leaves the reader idle for long, yet the head's time runs."""
    reader = asyncio.StreamReader()

    async def trickle() -> None:
        for byte in b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"z" * 100:
            reader.feed_data(bytes([byte]))
            await asyncio.sleep(0.01)

    feeding = asyncio.create_task(trickle())
    start = time.monotonic()
    try:
        with pytest.raises(BadRequest) as caught:
            await read_request(reader, Limits(head=0.3, body_idle=5, idle=5))
    finally:
        feeding.cancel()
    assert caught.value.status == 408
    assert 0.25 < time.monotonic() - start < 2.0


async def test_a_stalled_body_is_cut_off_with_a_408() -> None:
    reader = reader_of(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
                       eof=False)
    with pytest.raises(BadRequest) as caught:
        await read_request(reader, Limits(body_idle=0.2))
    assert caught.value.status == 408 and "body" in str(caught.value)


async def test_an_idle_connection_past_its_limit_is_a_clean_end() -> None:
    start = time.monotonic()
    assert await read_request(reader_of(eof=False), Limits(idle=0.2)) is None
    assert 0.15 < time.monotonic() - start < 2.0


async def test_the_idle_limit_counts_from_the_last_request_not_the_first() -> None:
    """Four requests 0.15 s apart under a 0.25 s idle limit: the connection outlives the
    limit several times over, then ends one limit after the last request."""
    reader = asyncio.StreamReader()
    requests = RequestReader()
    limits = Limits(idle=0.25)

    async def send() -> None:
        for _ in range(3):
            await asyncio.sleep(0.15)
            reader.feed_data(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")

    reader.feed_data(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    sending = asyncio.create_task(send())
    start = time.monotonic()
    got = [await requests.read(reader, limits) for _ in range(4)]
    last = time.monotonic()
    assert all(r is not None and r.target == "/x" for r in got)
    assert last - start > 0.4  # past the limit from the first request
    assert await requests.read(reader, limits) is None
    assert 0.2 < time.monotonic() - last < 2.0
    await sending


async def test_time_spent_answering_is_not_idle_time() -> None:
    """The limit runs only while the reader waits: a connection busy for longer than it
    (a long stream) reads its next request, then its limit runs again."""
    reader = reader_of(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", eof=False)
    requests = RequestReader()
    limits = Limits(idle=0.1)
    assert (await requests.read(reader, limits)) is not None
    await asyncio.sleep(0.3)  # answering: three limits long
    reader.feed_data(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    second = await requests.read(reader, limits)
    assert second is not None and second.target == "/b"
    start = time.monotonic()
    assert await requests.read(reader, limits) is None
    assert 0.05 < time.monotonic() - start < 2.0


async def test_a_closed_reader_leaves_no_timer_behind() -> None:
    """`close` stops the read timer: nothing keeps the reader alive for its idle limit."""
    requests = RequestReader()
    assert await requests.read(reader_of(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", eof=False),
                               Limits(idle=60)) is not None
    requests.close()
    gc.collect()
    assert not [r for r in gc.get_referrers(requests) if isinstance(r, types.MethodType)]


async def test_a_cancelled_read_is_cancelled_not_timed_out() -> None:
    """The server stopping cancels a read; the reader's own timer must not turn that into
    an answer."""
    requests = RequestReader()
    reading = asyncio.create_task(requests.read(reader_of(eof=False), Limits(idle=0.05)))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


# -- the server-wide budget -----------------------------------------------------------------


async def test_the_budget_is_shared_and_given_back() -> None:
    budget = Budget(100)
    body = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 80\r\n\r\n" + b"x" * 80
    slow = reader_of(body[:-10], eof=False)  # a first request holding 70 bytes, unfinished
    holder = asyncio.create_task(read_request(slow, budget=budget))
    while budget.used < 70:
        await asyncio.sleep(0)
    with pytest.raises(BadRequest) as caught:  # declared 80 > 30 left: refused before reading
        await read_request(reader_of(body), budget=budget)
    assert caught.value.status == 503
    slow.feed_data(body[-10:])
    first = await holder
    assert first is not None and len(first.body) == 80
    assert budget.used == 0  # given back once the request is whole
    second = await read_request(reader_of(body), budget=budget)
    assert second is not None and budget.used == 0


async def test_a_chunked_body_over_the_budget_is_a_503_and_gives_back_what_it_took() -> None:
    budget = Budget(10)
    raw = (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(raw), budget=budget)
    assert caught.value.status == 503 and budget.used == 0


# -- what llhttp leaves to the reader ------------------------------------------------------------


@pytest.mark.parametrize(("raw", "status"), [
    (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 501),  # a token, not a method llhttp knows
    (b"G\x00T /x HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # not a token at all
    (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # RFC 9112 §3.2: exactly one
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"z" * MAX_HEAD, 431),
])
async def test_what_the_reader_checks_itself_has_its_status(raw: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(reader_of(raw, eof=False))
    assert caught.value.status == status and str(caught.value)


@settings(max_examples=60, deadline=None)
@given(over=st.integers(-40, 40), cuts=st.lists(st.integers(1, MAX_HEAD + 100), max_size=4))
def test_a_head_over_max_head_is_a_431_however_it_arrives(over: int, cuts: list[int]
                                                          ) -> None:
    """The limit holds on either side of a read: a head over MAX_HEAD bytes completed within
    one read was let through (65,536-byte reads, a 66,000-byte head: 200)."""
    start = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: "
    end = b"\r\n\r\n"
    raw = start + b"z" * (MAX_HEAD + over - len(start) - len(end)) + end
    assert len(raw) == MAX_HEAD + over
    bounds = [0, *sorted(c for c in set(cuts) if c < len(raw)), len(raw)]

    async def read() -> int:
        pieces = [raw[i:min(i + READ_SIZE, b)] for a, b in zip(bounds, bounds[1:], strict=False)
                  for i in range(a, b, READ_SIZE)]  # no read returns more than it asks
        reader = Pieces(pieces)
        try:
            await read_request(reader)  # type: ignore[arg-type]
        except BadRequest as exc:
            return exc.status
        return 200

    assert asyncio.run(read()) == (431 if over > 0 else 200)


async def test_an_unknown_method_after_a_good_request_is_named_right() -> None:
    requests = RequestReader()
    reader = reader_of(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nBREW /b HTTP/1.1\r\nHost: a\r\n\r\n")
    first = await requests.read(reader)
    assert first is not None and first.target == "/a"
    with pytest.raises(BadRequest) as caught:
        await requests.read(reader)
    assert caught.value.status == 400  # not "GET is not supported": the method is unknown here


async def test_http_1_0_needs_no_host_and_values_lose_their_trailing_whitespace() -> None:
    request = await read_request(reader_of(b"GET /x HTTP/1.0\r\nX-Pad:  v \t\r\n\r\n"))
    assert request is not None and request.headers == (("x-pad", "v"),)


async def test_a_chunked_body_s_trailer_is_not_a_header() -> None:
    raw = (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
    request = await read_request(reader_of(raw))
    assert request is not None and request.body == b"abc"
    assert [name for name, _ in request.headers] == ["host", "transfer-encoding"]


async def test_an_upgrade_request_is_read_as_a_request_and_what_follows_as_the_next() -> None:
    raw = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
           b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.target for r in await read_all(reader_of(raw))] == ["/ws", "/after"]


async def test_close_gives_back_what_a_request_cut_short_holds() -> None:
    budget = Budget(100)
    requests = RequestReader()
    reader = reader_of(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\n\r\nab",
                       eof=False)
    reading = asyncio.create_task(requests.read(reader, budget=budget))
    while budget.used < 60:
        await asyncio.sleep(0)
    reading.cancel()  # the server stops: the connection's task is cancelled
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert budget.used == 0
    requests.close()
    assert budget.used == 0


async def test_a_pipelined_request_holds_its_share_until_the_connection_closes() -> None:
    """The next request's head came with the first: its declared body is reserved then, and
    a connection that ends without reading it gives it back at `close`."""
    budget = Budget(100)
    requests = RequestReader()
    reader = reader_of(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                       b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n", eof=False)
    first = await requests.read(reader, budget=budget)
    assert first is not None and budget.used == 50
    requests.close()
    assert budget.used == 0


# -- request boundaries against read boundaries ---------------------------------------------------


PIPELINE = [
    (b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n", "/one", b""),
    (POST, "/v1/chat?stream=1", b'{"model":"x"}'),
    (b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", "/chunked", b"abc"),
    (b"\r\nHEAD /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "/h", b""),  # CRLF first: allowed
]


@given(st.lists(st.sampled_from(range(len(PIPELINE))), min_size=1, max_size=5),
       st.data())
def test_pipelined_requests_read_the_same_however_the_bytes_are_cut(
    order: list[int], data: st.DataObject
) -> None:
    """Cuts land anywhere: inside heads, bodies, chunk sizes, trailers, and on the very byte
    where one request ends and the next begins."""
    wire = b"".join(PIPELINE[i][0] for i in order)
    ends = list(itertools.accumulate(len(PIPELINE[i][0]) for i in order))[:-1]
    cuts = data.draw(st.lists(st.sampled_from(range(1, len(wire))), unique=True, max_size=10)
                     | st.just(ends))  # or exactly on every boundary between requests
    bounds = [0, *sorted(cuts), len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]

    got = asyncio.run(read_all(Pieces(pieces)))  # type: ignore[arg-type]
    assert [(r.target, r.body) for r in got] == [PIPELINE[i][1:] for i in order]


class Pieces:
    """A reader whose every read returns the next piece, as a socket's may, then the close."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = iter(pieces)

    async def read(self, size: int) -> bytes:
        return next(self._pieces, b"")


# -- a request line as curl sends a query -------------------------------------------------------


async def test_a_raw_utf8_query_is_read_percent_encoded_and_the_body_as_sent() -> None:
    """curl sends `?q=한국어` as typed (it encodes only the path); llhttp refuses raw bytes
    over 0x7F in a target, so the reader encodes them, and the matcher decodes both."""
    body = "{\"q\": \"한국어\"}".encode()
    raw = (f"POST /search?q=한국어 HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n"
           .encode() + body)
    request = await read_request(reader_of(raw))
    assert request is not None
    assert request.target == "/search?q=%ED%95%9C%EA%B5%AD%EC%96%B4"
    assert request.body == body  # only the request line is touched


async def test_a_raw_byte_in_a_request_line_split_across_reads_is_still_a_400() -> None:
    with pytest.raises(BadRequest) as caught:
        await RequestReader().read(Pieces([b"GET /s?q=", "한 HTTP/1.1\r\nHost: a\r\n\r\n"
                                           .encode()]))  # type: ignore[arg-type]
    assert caught.value.status == 400

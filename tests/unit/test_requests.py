"""`wire.requests.read_request`: one h11 reader for the replay server and the demo upstream.

The reader takes an asyncio StreamReader; these tests feed one directly (bytes in, a
request or an error out), and the servers' integration tests cover it on real sockets.
"""

from __future__ import annotations

import asyncio

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.wire.requests import BadRequest, Request, read_request


def reader_of(*pieces: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for piece in pieces:
        reader.feed_data(piece)
    if eof:
        reader.feed_eof()
    return reader


def server() -> h11.Connection:
    return h11.Connection(h11.SERVER)


POST = (b"POST /v1/chat?stream=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: 13\r\n\r\n{\"model\":\"x\"}")


async def test_a_request_comes_back_whole() -> None:
    request = await read_request(server(), reader_of(POST))
    assert request == Request("POST", "/v1/chat?stream=1", (
        ("host", "127.0.0.1"), ("content-type", "application/json"), ("content-length", "13"),
    ), b'{"model":"x"}')


async def test_chunked_request_body_is_joined() -> None:
    raw = (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    request = await read_request(server(), reader_of(raw))
    assert request is not None and request.body == b"abcde"


async def test_idle_close_is_a_clean_end() -> None:
    assert await read_request(server(), reader_of()) is None


async def test_close_in_the_middle_of_a_head_is_bad() -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(server(), reader_of(b"GET /x HTTP/1.1\r\nHost:"))
    assert caught.value.status == 400


@pytest.mark.parametrize("raw", [
    b"GET\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
])
async def test_malformed_requests_raise_with_a_status(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        await read_request(server(), reader_of(raw))
    assert 400 <= caught.value.status < 500 and str(caught.value)


async def test_a_body_over_the_cap_is_413() -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    with pytest.raises(BadRequest) as caught:
        await read_request(server(), reader_of(raw), max_body=10)
    assert caught.value.status == 413


async def test_pipelined_requests_stay_in_the_connection() -> None:
    conn = server()
    reader = reader_of(POST + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
    first = await read_request(conn, reader)
    assert first is not None and first.target == "/v1/chat?stream=1"
    leftover, _ = conn.trailing_data
    assert bytes(leftover).startswith(b"GET /second")


@given(st.lists(st.integers(min_value=1, max_value=len(POST) - 1), unique=True, max_size=8))
def test_any_split_of_the_bytes_reads_the_same_request(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(POST)]
    pieces = [POST[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    async def read() -> Request | None:
        return await read_request(server(), reader_of(*pieces))

    request = asyncio.run(read())
    assert request is not None and request.body == b'{"model":"x"}'
    assert request.method == "POST" and request.target == "/v1/chat?stream=1"

"""`body_framing`: how a recorded response body was delimited, by RFC 9112 §6.3."""

from __future__ import annotations

import pytest

from sse_recorder.model import Framing, Headers, ResponseHead, body_framing

CHUNKED: Headers = (("Transfer-Encoding", "chunked"),)
LENGTH: Headers = (("Content-Length", "12"),)
BOTH: Headers = (("Content-Length", "12"), ("Transfer-Encoding", "chunked"))
SSE: Headers = (("Content-Type", "text/event-stream"),)

CASES: list[tuple[str, int, Headers, str, str, Framing]] = [
    # (id, status, headers, HTTP version, request method, framing)
    ("chunked", 200, CHUNKED, "HTTP/1.1", "GET", Framing.CHUNKED),
    ("chunked-any-case", 200, (("transfer-encoding", "Chunked"),), "HTTP/1.1", "POST",
     Framing.CHUNKED),
    ("chunked-final-coding", 200, (("Transfer-Encoding", "gzip, chunked"),), "HTTP/1.1", "GET",
     Framing.CHUNKED),
    ("codings-over-two-fields", 200,
     (("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")), "HTTP/1.1", "GET",
     Framing.CHUNKED),
    ("chunked-not-final-is-close", 200, (("Transfer-Encoding", "chunked, gzip"),), "HTTP/1.1",
     "GET", Framing.CLOSE),
    ("coding-without-chunked-is-close", 200, (("Transfer-Encoding", "gzip"),), "HTTP/1.1",
     "GET", Framing.CLOSE),
    ("transfer-encoding-wins-over-length", 200, BOTH, "HTTP/1.1", "GET", Framing.CHUNKED),
    ("length", 200, LENGTH, "HTTP/1.1", "GET", Framing.LENGTH),
    ("length-zero", 200, (("content-length", "0"),), "HTTP/1.1", "GET", Framing.LENGTH),
    ("length-on-an-error", 500, LENGTH, "HTTP/1.1", "POST", Framing.LENGTH),
    ("close-delimited", 200, SSE, "HTTP/1.1", "GET", Framing.CLOSE),
    ("close-delimited-http-1.0", 200, (), "HTTP/1.0", "GET", Framing.CLOSE),
    ("http2-has-no-framing-headers", 200, SSE, "HTTP/2.0", "GET", Framing.CHUNKED),
    ("http2-length", 200, LENGTH, "HTTP/2.0", "GET", Framing.LENGTH),
    # No body, whatever the headers say: HEAD, 1xx, 204, 304, a 2xx to CONNECT.
    ("head-with-length", 200, LENGTH, "HTTP/1.1", "HEAD", Framing.NONE),
    ("head-with-chunked", 200, CHUNKED, "HTTP/1.1", "HEAD", Framing.NONE),
    ("head-lower-case", 200, (), "HTTP/1.1", "head", Framing.NONE),
    ("head-http2", 200, SSE, "HTTP/2.0", "HEAD", Framing.NONE),
    ("100-continue", 100, (), "HTTP/1.1", "GET", Framing.NONE),
    ("101-switching", 101, (("Upgrade", "websocket"),), "HTTP/1.1", "GET", Framing.NONE),
    ("204", 204, (), "HTTP/1.1", "DELETE", Framing.NONE),
    ("204-with-chunked", 204, CHUNKED, "HTTP/1.1", "GET", Framing.NONE),
    ("304", 304, LENGTH, "HTTP/1.1", "GET", Framing.NONE),
    ("304-http2", 304, (), "HTTP/2.0", "GET", Framing.NONE),
    ("connect-2xx-is-a-tunnel", 200, (), "HTTP/1.1", "CONNECT", Framing.NONE),
    ("connect-refused-has-a-body", 407, LENGTH, "HTTP/1.1", "CONNECT", Framing.LENGTH),
    ("205-has-a-body", 205, LENGTH, "HTTP/1.1", "GET", Framing.LENGTH),
    ("post-is-not-head", 200, CHUNKED, "HTTP/1.1", "POST", Framing.CHUNKED),
]


@pytest.mark.parametrize(("status", "headers", "version", "method", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_body_framing(status: int, headers: Headers, version: str, method: str,
                      expected: Framing) -> None:
    assert body_framing(ResponseHead(status, "", headers, version), method) is expected


def test_the_method_defaults_to_get() -> None:
    assert body_framing(ResponseHead(200, "OK", LENGTH)) is Framing.LENGTH
    assert body_framing(ResponseHead(204, "No Content", ())) is Framing.NONE


def test_framing_compares_as_its_name() -> None:
    """The recorder compares with plain strings ("close"): a StrEnum keeps that working."""
    assert body_framing(ResponseHead(200, "OK", SSE)) == "close"
    assert [str(f) for f in Framing] == ["chunked", "length", "close", "none"]

"""Response bytes written by hand, so that the wire shows exactly what was recorded.

Rules:
- a recorded head keeps its own fields, in order, minus the hop-by-hop ones (and HTTP/2
  pseudo-headers); one framing field is added, as the body writer says;
- a body goes out through the writer for its framing, from `WRITERS` (one per
  `Framing`, like h11's `_writers.py`): how a piece is framed, what ends the body cleanly,
  whether the close is the end (so the connection cannot carry another response) and
  whether there is a body at all;
- a `frame` of None means pieces go out as they are, so the hot loops make no call for them;
- whole responses (explanations, injected errors, 400s) always carry a Content-Length;
- the Connection field says what happens after the response (`connection_field`): `close`
  whenever the server closes after it, `keep-alive` to an HTTP/1.0 client it keeps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

from sse_recorder.model import Framing, ResponseHead
from sse_recorder.wire.connections import HOP_BY_HOP

TEXT = "text/plain; charset=utf-8"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True)
class BodyWriter:
    """How one body framing puts a body on the wire and ends it."""

    field: str | None  # the framing field of the head; `{length}` is the body's length
    frame: Callable[[bytes], bytes] | None  # a piece's wire bytes; None: the piece as is
    end: bytes  # written after the last piece of a complete body
    closes: bool  # the close is the body's end: the connection carries nothing after it
    has_body: bool = True  # False: a head alone, whatever was recorded after it

    def head_field(self, length: int) -> str | None:
        return None if self.field is None else self.field.format(length=length)


def _nothing(data: bytes) -> bytes:
    """A bodiless response sends no piece, whatever a recording or a fault has."""
    return b""


WRITERS: dict[Framing, BodyWriter] = {
    Framing.CHUNKED: BodyWriter("Transfer-Encoding: chunked", chunk, b"0\r\n\r\n", False),
    Framing.LENGTH: BodyWriter("Content-Length: {length}", None, b"", False),
    Framing.CLOSE: BodyWriter("Connection: close", None, b"", True),
    Framing.NONE: BodyWriter(None, _nothing, b"", False, has_body=False),
}


def connection_field(keep_alive: bool, http_version: str, closes: bool = False) -> str | None:
    """The Connection field of a response (RFC 9112 §9.3, §9.6): `close` when the server
    closes after it (unless the framing field already says so), `keep-alive` for an HTTP/1.0
    client whose connection persists (it assumes a close otherwise), else none."""
    if closes:
        return None
    if not keep_alive:
        return "Connection: close"
    return "Connection: keep-alive" if http_version == "1.0" else None


@functools.lru_cache(maxsize=1024)  # the same few heads, once per response served
def head(response: ResponseHead, *fields: str | None) -> bytes:
    """A recorded response head as replayed, with `fields` (the framing field, the
    Connection field; None: absent) last."""
    lines = [f"HTTP/1.1 {response.status} {response.reason or 'OK'}"]
    lines += [f"{k}: {v}" for k, v in response.headers
              if k.lower() not in HOP_BY_HOP and not k.startswith(":")]
    lines += [f for f in fields if f is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole(
    status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes,
    connection: str | None = None, bodiless: bool = False,
) -> bytes:
    """A complete response with a Content-Length (and `connection`, a Connection field);
    `bodiless` (the answer to a HEAD) says the length and sends no body."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    if connection is not None:
        lines.append(connection)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if bodiless else body)


# Statuses vendors use that the RFCs do not name (Anthropic's 529 when it is overloaded)
VENDOR_REASONS = {529: "Overloaded"}


def reason_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return VENDOR_REASONS.get(status, "Error")


def bad_request(status: int, message: str) -> bytes:
    """The answer to a request the reader rejected; the connection closes after it."""
    body = f"sse-recorder: malformed HTTP request: {message}\n".encode()
    return whole(status, reason_of(status), [("Content-Type", TEXT)], body, "Connection: close")

"""Response bytes written by hand, so that the wire shows exactly what was recorded.

Rules:
- a recorded head keeps its own fields, in order, minus the hop-by-hop ones (and HTTP/2
  pseudo-headers); one framing field is added, as the body writer says;
- a body goes out through the writer for its framing, from `WRITERS` (one per
  `Framing`, like h11's `_writers.py`): how a piece is framed, what ends the body cleanly,
  whether the close is the end (so the connection cannot carry another response) and
  whether there is a body at all;
- a `frame` of None means pieces go out as they are, so the hot loops make no call for them;
- whole responses (explanations, injected errors, 400s) always carry a Content-Length.
"""

from __future__ import annotations

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


def head(response: ResponseHead, framing_field: str | None) -> bytes:
    """A recorded response head as replayed, with `framing_field` (if any) last."""
    lines = [f"HTTP/1.1 {response.status} {response.reason or 'OK'}"]
    lines += [f"{k}: {v}" for k, v in response.headers
              if k.lower() not in HOP_BY_HOP and not k.startswith(":")]
    if framing_field is not None:
        lines.append(framing_field)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole(
    status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes,
    close: bool = False,
) -> bytes:
    """A complete response with a Content-Length (and `Connection: close` when `close`)."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def bad_request(status: int, message: str) -> bytes:
    """The answer to a request h11 rejected; the connection closes after it."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Bad Request"
    body = f"sse-recorder: malformed HTTP request: {message}\n".encode()
    return whole(status, reason, [("Content-Type", TEXT)], body, close=True)


UNMATCHED: dict[bool, tuple[int, str]] = {False: (404, "Not Found"), True: (409, "Conflict")}


def unmatched(explanation: str, exhausted: bool) -> tuple[int, bytes]:
    """The answer when no recording matches (404) or all were used up (409), and its status."""
    status, reason = UNMATCHED[exhausted]
    headers = [("Content-Type", TEXT), ("X-SSE-Recorder", "unmatched")]
    return status, whole(status, reason, headers, explanation.encode())

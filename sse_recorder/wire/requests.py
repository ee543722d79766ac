"""Reading one HTTP/1.1 request off a connection: the one h11 reader every server here uses.

Rules:
- a request comes back whole (head and body) or not at all;
- the client closing an idle connection (nothing of a next request received), or staying
  silent past `Limits.idle`, is a clean end: None, not an error;
- anything else h11 rejects, and what RFC 9112 says to reject that h11 lets through (a
  request with both Content-Length and Transfer-Encoding, §6.1: the smuggling shape;
  obsolete line folding, §5.2), raises `BadRequest` with the status to answer (400, 408,
  413, 431, 501, 503...); the caller answers it and closes the connection;
- time is bounded: the head must arrive whole within `Limits.head` of its first byte, and
  a body may not stall longer than `Limits.body_idle` between reads;
- memory is bounded: a body over `Limits.max_body` is a 413 (before it is read, when its
  Content-Length says so), and every reader of a server shares one `Budget` of buffered
  body bytes, a 503 for the request that would go over it (a declared length is reserved
  whole when the head arrives, so concurrent uploads are refused before they are read);
- `Expect: 100-continue` is answered with `100 Continue` (through h11, so a caller that
  sends its responses through h11 stays consistent) before the body is read;
- the caller owns the h11.Connection: it sends responses through it or not, and starts the
  next cycle (or makes a new one) before reading the next request.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import h11

from sse_recorder.model import Headers
from sse_recorder.wire.connections import decode_headers

MAX_REQUEST_BODY = 64 << 20
# All request bodies being received at once: one of MAX_REQUEST_BODY fits, two do not.
MAX_BUFFERED = 96 << 20
READ_SIZE = 65536
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\n[ \t]")  # a header line that starts with whitespace: obs-fold
_BUSY = "too many request body bytes buffered by this server right now; retry later"


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how much one request may take. Seconds; None: no limit."""

    head: float | None = 10.0  # the whole head, from its first byte
    body_idle: float | None = 30.0  # longest silence while a body is being received
    idle: float | None = 75.0  # a kept-alive connection waiting for its next request
    max_body: int = MAX_REQUEST_BODY


@dataclass(frozen=True, slots=True)
class Request:
    """A request as received: header names lower-case (h11's), bytes decoded as latin-1."""

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"


class BadRequest(Exception):
    """The client sent something that is not an acceptable HTTP/1.1 request."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # the status to answer with (h11's error_status_hint or ours)


class Budget:
    """Request body bytes buffered by every reader of one server, capped as a whole: the
    per-request cap alone lets N concurrent uploads take N times as much."""

    def __init__(self, limit: int = MAX_BUFFERED) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


async def read_request(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    limits: Limits = Limits(),
    budget: Budget | None = None,
    writer: asyncio.StreamWriter | None = None,
) -> Request | None:
    """The next request on `conn` with its whole body, or None once the client has closed
    (or left an idle connection silent past `limits.idle`). With `writer`, a client waiting
    for `100 Continue` gets it; `budget` is held only while the body is being received."""
    head: h11.Request | None = None
    fields: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []
    size = 0
    held = 0
    raw = bytearray(conn.trailing_data[0])  # the head's bytes, for the checks h11 skips
    head_deadline = time.monotonic() + limits.head if raw and limits.head else None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if head is not None and writer is not None and (
                        conn.they_are_waiting_for_100_continue):
                    writer.write(conn.send(h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue")))
                data = await _read(reader, head, bool(raw), head_deadline, limits)
                if data is None:
                    return None  # idle past the limit: a clean end, like a close
                if not data and head is None and not conn.trailing_data[0]:
                    return None  # the client closed an idle (keep-alive) connection
                if head is None:
                    if not raw and limits.head:
                        head_deadline = time.monotonic() + limits.head
                    raw += data
                conn.receive_data(data)  # b"": end of stream, which h11 judges
            elif isinstance(event, h11.Request):
                head = event
                fields = list(head.headers)  # h11's Headers iterate slowly: once, here
                declared = _check_head(fields, bytes(raw), limits)
                raw.clear()
                if budget is not None and declared:  # reserved whole, before it arrives
                    if not budget.take(declared):
                        raise BadRequest(_BUSY, 503)
                    held = declared
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limits.max_body:
                    raise BadRequest(f"request body over {limits.max_body} bytes", 413)
                if budget is not None and size > held:  # a chunked body: taken as it comes
                    if not budget.take(size - held):
                        raise BadRequest(_BUSY, 503)
                    held = size
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(head.method.decode("ascii"), head.target.decode("latin-1"),
                               decode_headers(fields), b"".join(parts),
                               head.http_version.decode("ascii"))
            else:  # ConnectionClosed (PAUSED cannot happen: callers start a new cycle)
                return None
    except h11.RemoteProtocolError as exc:
        raise BadRequest(str(exc), exc.error_status_hint) from None
    finally:
        if budget is not None:
            budget.give(held)


async def _read(
    reader: asyncio.StreamReader, head: h11.Request | None, started: bool,
    head_deadline: float | None, limits: Limits,
) -> bytes | None:
    """The next bytes, within the time the request's stage allows; None: idle too long."""
    if head is not None:
        deadline, why = _after(limits.body_idle), f"no request body bytes for {limits.body_idle} s"
    elif started:
        deadline, why = head_deadline, f"request head not complete within {limits.head} s"
    else:
        deadline, why = _after(limits.idle), ""
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            return await reader.read(READ_SIZE)
    except TimeoutError:
        if not why:
            return None
        raise BadRequest(why, 408) from None


def _after(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def _loop_time(deadline: float | None) -> float | None:
    """A `time.monotonic()` deadline on the running loop's clock (uvloop's differs)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _check_head(fields: list[tuple[bytes, bytes]], raw: bytes, limits: Limits) -> int:
    """What RFC 9112 says to reject that h11 accepts in a head with these `fields` (and
    `raw` bytes), and a body declared too large; returns the declared Content-Length (0 when
    none)."""
    names = {name for name, _ in fields}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise BadRequest("both Content-Length and Transfer-Encoding (RFC 9112 §6.1: "
                         "a request smuggling shape)")
    region = raw.lstrip(b"\r\n")
    end = _BLANK_LINE.search(region)
    if _FOLD.search(region[:end.start() if end else len(region)]):
        raise BadRequest("obsolete line folding in a header (RFC 9112 §5.2)")
    declared = next((int(v) for k, v in fields if k == b"content-length"), 0)
    if declared > limits.max_body:
        raise BadRequest(f"request body over {limits.max_body} bytes", 413)
    return declared

"""Plain values that every layer shares: what a cassette holds, free of any I/O library.

Headers are `(name, value)` pairs in wire order, decoded as latin-1 so that every byte
round-trips. Offsets are nanoseconds from a monotonic clock, measured from the moment the
request was handed to the upstream connection, so the time to first byte is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

Headers = tuple[tuple[str, str], ...]


class Outcome(StrEnum):
    """How a response ended: the one vocabulary of the recorder, the cassette, the replay
    server, the faults, the probe and every log. The cassette spells three of these its own
    way on disk (see `sse_recorder.store.schema`), so that files stay readable both ways."""

    CLEAN = "clean"  # the body ended as its framing says it should
    CLOSED = "closed"  # the connection closed (FIN) before the body was complete
    RESET = "reset"  # the connection was reset (TCP RST, HTTP/2 stream reset)
    STALLED = "stalled"  # held open and silent until the client left (a fault)
    CLIENT_GONE = "client-gone"  # the client went away first
    PROXY_ERROR = "proxy-error"  # the proxy failed (TLS, connect, killed flow...)
    STOPPED = "stopped"  # still open when recording stopped (or the recorder died)

    @property
    def as_replayed(self) -> Outcome:
        """What a client of the replay sees: a reset stays a reset, a clean end stays clean,
        and every other ending is a close before the body's end."""
        return self if self in (Outcome.CLEAN, Outcome.RESET) else Outcome.CLOSED


def header_value(headers: Headers, name: str) -> str | None:
    """First value of a header, case-insensitively."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def content_codings_named(headers: Headers) -> list[str]:
    """The body's content codings in the order applied, lower-cased ([] for identity)."""
    return [c.strip().lower() for k, v in headers if k.lower() == "content-encoding"
            for c in v.split(",") if c.strip() and c.strip().lower() != "identity"]


class Framing(StrEnum):
    """How a response body is delimited on an HTTP/1.1 connection (RFC 9112 §6.3)."""

    CHUNKED = "chunked"  # Transfer-Encoding: chunked; a zero-size chunk ends it
    LENGTH = "length"  # Content-Length bytes
    CLOSE = "close"  # everything until the connection closes
    NONE = "none"  # no body at all: HEAD, 1xx, 204, 304 (and a tunnel after CONNECT)


def body_framing(head: ResponseHead, request_method: str = "GET") -> Framing:
    """How a response body is delimited: the recorder needs it to see truncation the
    framing hides (close), the replay server to send the body framed as recorded.

    RFC 9112 §6.3, in its order: no body after HEAD, 1xx, 204, 304 or a 2xx to CONNECT,
    whatever the headers say; Transfer-Encoding overrides Content-Length and is chunked
    only when chunked is its final coding (otherwise the close ends the body); then
    Content-Length; then the close. HTTP/2 has no framing headers: chunked keeps each DATA
    frame apart."""
    method = request_method.upper()
    if (method == "HEAD" or head.status < 200 or head.status in (204, 304)
            or (method == "CONNECT" and 200 <= head.status < 300)):
        return Framing.NONE
    codings = [c.strip().lower() for k, v in head.headers if k.lower() == "transfer-encoding"
               for c in v.split(",") if c.strip()]
    if codings:
        return Framing.CHUNKED if codings[-1] == "chunked" else Framing.CLOSE
    if header_value(head.headers, "content-length") is not None:
        return Framing.LENGTH
    if head.http_version.startswith("HTTP/1"):
        return Framing.CLOSE
    return Framing.CHUNKED


def is_event_stream(headers: Headers) -> bool:
    content_type = header_value(headers, "content-type") or ""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    url: str
    headers: Headers
    body: bytes = b""
    http_version: str = "HTTP/1.1"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers
    http_version: str = "HTTP/1.1"


class Chunk(NamedTuple):
    """One body piece exactly as it came off the wire (a tuple: cheap to make by the 100k)."""

    seq: int
    offset_ns: int
    data: bytes


EventKind = Literal["event", "comment", "frame", "error", "invalid"]  # the last three: framing/


class RecordedEvent(NamedTuple):
    """A parsed SSE event or comment, or a frame of another stream type, with where and when
    it completed (a tuple, and so also the row the cassette stores after the interaction
    id)."""

    seq: int
    kind: EventKind
    type: str | None  # None for comments
    data: str  # the event's data, or the comment's text
    id: str | None
    retry: int | None
    offset_ns: int  # arrival of the chunk that completed it
    first_chunk: int
    last_chunk: int


@dataclass(frozen=True, slots=True)
class Interaction:
    """One request and its response head, with summary figures of the body."""

    id: int
    started_at: float  # wall clock (time.time()) when the request went upstream
    request: RecordedRequest
    response: ResponseHead | None  # None when it failed before a response head
    head_offset_ns: int | None
    is_sse: bool
    complete: bool
    outcome: Outcome
    end_offset_ns: int | None
    error: str | None
    chunk_count: int = 0
    body_size: int = 0
    event_count: int = 0

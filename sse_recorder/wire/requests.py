"""Reading one HTTP/1.1 request off a connection: the one h11 reader every server here uses.

Rules:
- a request comes back whole (head and body) or not at all;
- the client closing an idle connection (nothing of a next request received) is a clean
  end: None, not an error;
- anything else h11 rejects, or a body over `max_body`, raises `BadRequest` carrying h11's
  status hint (400, 413, 431...); the caller answers it and closes the connection;
- the caller owns the h11.Connection: it sends responses through it or not, and starts the
  next cycle (or makes a new one) before reading the next request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11

from sse_recorder.model import Headers
from sse_recorder.wire.connections import decode_headers

MAX_REQUEST_BODY = 64 << 20
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Request:
    """A request as received: header names lower-case (h11's), bytes decoded as latin-1."""

    method: str
    target: str
    headers: Headers
    body: bytes = b""


class BadRequest(Exception):
    """The client sent something that is not an acceptable HTTP/1.1 request."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # h11's error_status_hint: the status to answer with


async def read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, max_body: int = MAX_REQUEST_BODY
) -> Request | None:
    """The next request on `conn` with its whole body, or None once the client has closed."""
    head: h11.Request | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if not data and head is None and not conn.trailing_data[0]:
                    return None  # the client closed an idle (keep-alive) connection
                conn.receive_data(data)  # b"": end of stream, which h11 judges
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    raise BadRequest("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(head.method.decode("ascii"), head.target.decode("latin-1"),
                               decode_headers(head.headers), bytes(body))
            else:  # ConnectionClosed (PAUSED cannot happen: callers start a new cycle)
                return None
    except h11.RemoteProtocolError as exc:
        raise BadRequest(str(exc), exc.error_status_hint) from None

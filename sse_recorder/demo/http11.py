"""How the demo upstreams read a request: through h11, which then writes their responses.

The demo upstreams stand in for ordinary servers, so h11 runs both directions there: it
frames their responses (chunked, or close-delimited for an HTTP/1.0 client) and says when a
connection can carry another request. Servers of this package's own (the replay and its
control API) read with `sse_recorder.wire.requests`, which is strict and faster.
"""

from __future__ import annotations

import asyncio

import h11

from sse_recorder.wire.connections import decode_headers
from sse_recorder.wire.requests import MAX_REQUEST_BODY, READ_SIZE, BadRequest, Request


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    """The next request on `conn` with its whole body, or None once the client has closed
    between requests; what h11 rejects raises `BadRequest` with h11's status, and so does a
    body over MAX_REQUEST_BODY (a 413: the demo holds bodies whole)."""
    head: h11.Request | None = None
    body: list[bytes] = []
    size = 0
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_SIZE))  # b"": the close, judged
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REQUEST_BODY:
                    raise BadRequest(f"request body over {MAX_REQUEST_BODY} bytes", 413)
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(head.method.decode("ascii"), head.target.decode("latin-1"),
                               decode_headers(head.headers), b"".join(body),
                               head.http_version.decode("ascii"))
            else:  # ConnectionClosed (PAUSED cannot happen: callers start a new cycle)
                return None
    except h11.RemoteProtocolError as exc:
        raise BadRequest(str(exc), exc.error_status_hint) from None

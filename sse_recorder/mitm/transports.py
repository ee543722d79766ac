"""What both addons need from mitmproxy beyond its public flow API.

mitmproxy does not say whether an upstream *reset* (rather than closed) the connection, nor
hand out the client's socket; both live on its asyncio transports, found here through
internal attributes and used with care (every lookup tolerates their absence).
"""

from __future__ import annotations

import weakref
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.connection import Client, Server
from mitmproxy.proxy import server_hooks

from sse_recorder.model import Headers
from sse_recorder.wire.connections import decode_headers, reset


def headers_of(message: http.Message) -> Headers:
    """A mitmproxy request's or response's headers as a cassette holds them."""
    return decode_headers(message.headers.fields)


# Flow metadata key: this flow was answered from the cassette (`record --replay-matched`),
# so the recorder leaves it out.
REPLAYED = "sse_recorder_replayed"


class Transports:
    """Finds mitmproxy's asyncio transports for a connection (internal API).

    An addon forwards its `server_connected` hook here, so the upstream's StreamReader is
    remembered while it still exists: it keeps the ConnectionResetError that tells a reset.
    """

    def __init__(self) -> None:
        self._readers: weakref.WeakKeyDictionary[Server, Any] = weakref.WeakKeyDictionary()

    def io_of(self, connection: Client | Server) -> Any:
        """mitmproxy's reader/writer pair for a live connection, or None once it is gone."""
        proxyserver = ctx.master.addons.get("proxyserver")
        for handler in list(getattr(proxyserver, "connections", {}).values()):
            transport = getattr(handler, "transports", {}).get(connection)
            if transport is not None:
                return transport
        return None

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        io = self.io_of(data.server)
        if io is not None:
            self._readers[data.server] = io.reader

    def upstream_was_reset(self, server: Server) -> bool:
        reader = self._readers.get(server)
        exception = reader.exception() if reader is not None else None
        return isinstance(exception, ConnectionResetError)

    def reset_client(self, client: Client) -> None:
        """Abort the client's TCP connection with an RST (if its transport is still there)."""
        writer = getattr(self.io_of(client), "writer", None)
        if writer is not None:
            reset(writer)

"""Small facts about HTTP/1.1 connections that every server and client here shares.

Header bytes are decoded as latin-1 so that every byte round-trips (RFC 9110 §5.5 allows
obs-text); a reset is SO_LINGER {on, 0} then close, which makes the kernel send RST
instead of FIN, the only way to reproduce an upstream reset on a plain socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable

from sse_recorder.model import Headers

# RFC 9110 §7.6.1 and RFC 9112: connection-specific fields a hop re-writes for itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                        "proxy-connection", "upgrade", "te", "trailer"})


def decode_headers(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """h11's or mitmproxy's header bytes as the `(name, value)` strings a cassette holds."""
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in fields)


def base_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST: SO_LINGER {on, 0}, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

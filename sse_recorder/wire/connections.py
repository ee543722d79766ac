"""Small facts about HTTP/1.1 connections that every server and client here shares.

Header bytes are decoded as latin-1 so that every byte round-trips (RFC 9110 §5.5 allows
obs-text); a reset is SO_LINGER {on, 0} then close, which makes the kernel send RST
instead of FIN, the only way to reproduce an upstream reset on a plain socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence

from sse_recorder.model import Headers

# RFC 9110 §7.6.1 and RFC 9112: connection-specific fields a hop re-writes for itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                        "proxy-connection", "upgrade", "te", "trailer"})


def decode_headers(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """h11's or mitmproxy's header bytes as the `(name, value)` strings a cassette holds."""
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in fields)


def call_at_monotonic(deadline: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
    """`callback` at a `time.monotonic()` deadline on the running loop, whose clock is not
    time.monotonic() on uvloop."""
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + (deadline - time.monotonic()), callback)


def base_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def stop_serving(servers: Sequence[asyncio.Server],
                       connections: set[asyncio.Task[None]]) -> None:
    """Stop listening (a server per listening socket) and end every connection handler
    still running (the servers keep their handlers' tasks in `connections`)."""
    for server in servers:
        server.close()
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST: SO_LINGER {on, 0}, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def keeps_alive(http_version: str, headers: Headers) -> bool:
    """Whether the client lets the connection carry another request (RFC 9112 §9.3): an
    HTTP/1.1 one unless it sent `Connection: close`, an HTTP/1.0 one only when it asked
    for `keep-alive`. Connection is a token list: `keep-alive, Upgrade` counts."""
    tokens = {token.strip().lower() for name, value in headers if name.lower() == "connection"
              for token in value.split(",")}
    return "close" not in tokens and (http_version != "1.0" or "keep-alive" in tokens)


async def close_after_error(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: float = 2.0
) -> None:
    """Close after an error answer without losing it. Closing with request bytes still
    unread makes the kernel send an RST, which can discard the answer before the client
    reads it: so send our FIN first, read what the client still sends (for at most
    `linger` seconds), then close."""
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(linger):
            while await reader.read(65536):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()

"""A raw HTTP/1.1 client that sees what is on the wire: chunk boundaries, times, the ending.

Used by the demo to compare recordings with replays, and by tests and benchmarks as the
"raw-socket probe". HTTP/1.1 chunks are reassembled exactly (h11's `chunk_start` /
`chunk_end` flags), so a chunk that arrived in two reads is still one chunk, timed at its
last byte. Close-delimited and Content-Length bodies are timed per socket read.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from sse_recorder.model import Outcome
from sse_recorder.wire.connections import decode_headers


@dataclass
class ProbeResult:
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    sent_at_ns: int = 0  # time.monotonic_ns() when the request was sent
    head_ns: int = 0  # response head arrival, from the request being sent
    chunks: list[tuple[int, bytes]] = field(default_factory=list)  # (arrival ns, bytes)
    outcome: Outcome = Outcome.CLEAN  # CLEAN, CLOSED early (EOF) or RESET (RST)

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)

    def gaps_ms(self) -> list[float]:
        times = [t for t, _ in self.chunks]
        return [(b - a) / 1e6 for a, b in zip(times, times[1:], strict=False)]


async def probe(
    url: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
    proxy: str | None = None,
) -> ProbeResult:
    """Send one request (directly, or through a plain-HTTP proxy) and record the response."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_headers = [("Host", f"{host}:{port}"), ("Connection", "close")]
    request_headers += headers or []
    if body:
        request_headers.append(("Content-Length", str(len(body))))
    if proxy is not None:
        proxy_parts = urlsplit(proxy)
        host, port = proxy_parts.hostname or "127.0.0.1", proxy_parts.port or 8080
        target = f"http://{parts.netloc}{target}"  # absolute form, as proxies expect
    return await asyncio.wait_for(
        _exchange(host, port, method, target, request_headers, body), timeout
    )


async def _exchange(
    host: str, port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> ProbeResult:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h11.Connection(h11.CLIENT)
    result = ProbeResult()
    try:
        writer.write(conn.send(h11.Request(method=method, target=target, headers=headers)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        start = result.sent_at_ns = time.monotonic_ns()
        await writer.drain()
        pending = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:  # EOF before the framing said the body ended
                result.outcome = Outcome.CLOSED
                break
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await reader.read(65536))  # b"" at EOF
                except ConnectionResetError:
                    result.outcome = Outcome.RESET
                    break
                continue
            now = time.monotonic_ns() - start
            if isinstance(event, h11.Response):
                result.status = event.status_code
                result.reason = event.reason.decode("latin-1")
                result.headers = list(decode_headers(event.headers))
                result.head_ns = now
            elif isinstance(event, h11.Data):
                if event.chunk_start or pending:
                    pending += event.data
                    if event.chunk_end:
                        result.chunks.append((now, bytes(pending)))
                        pending.clear()
                else:
                    result.chunks.append((now, bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if pending:
            result.chunks.append((time.monotonic_ns() - start, bytes(pending)))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return result


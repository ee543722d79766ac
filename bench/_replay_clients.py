"""Client worker for bench/replay_bench.py: many raw HTTP/1.1 connections in one process.

Why: 1,000 streams of 100 events/s each must not be limited by the client, so each worker is
its own process holding hundreds of connections, with a bare `asyncio.Protocol` (on uvloop
when installed) that only timestamps what arrives; the driver checks the client is not the
bottleneck by looking at the raw baseline's lateness. Garbage collection is off while
streams run, so a GC pause does not read as server lateness.

One JSON command per stdin line, one JSON reply per stdout line ({"error": str} on failure):
  {"op": "run", "port", "path", "conns", "start_ns", "timeout"[, "ramp_s"]}
     Connect `conns` connections, send every request at `start_ns` (CLOCK_MONOTONIC is shared
     by all processes), or with `ramp_s`, one every ramp_s / conns seconds from then; read
     each response to its end, close.
     -> {"streams": [[sent_ns, head_ns, [event_ns, ...], complete], ...]}
  {"op": "hold", "port", "path", "conns", "timeout"}
     Connect and request; reply once every stream has its first event, keeping them open.
     -> {"held": n, "failed": n}
  {"op": "release"} -> {"released": n}: close the held connections.
An event is counted when the read holding its blank line (`\\n\\n`) arrives; the response
ends with the terminating chunk `0\\r\\n\\r\\n` (the benchmark's streams are LF-only SSE).
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import socket
import sys
import time
from typing import Any, cast

END = b"0\r\n\r\n"
CONNECTING = 64  # connects in flight per worker: keeps the server's accept queue short


class Stream(asyncio.Protocol):
    """One connection: when the request went, when the head and each event came."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        self.sent = 0
        self.head = 0
        self.times: list[int] = []
        self.buffer = b""  # the head until complete; then the last bytes seen (ends span reads)
        self.in_body = False
        self.complete = False
        self.first = loop.create_future()  # the first event arrived
        self.done = loop.create_future()  # the response ended or the connection closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.in_body:
            data = self.buffer + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            self.head, self.in_body, self.buffer = now, True, b""
            data = data[end + 4:]
        seen = self.buffer + data
        count = (self.buffer[-1:] + data).count(b"\n\n")
        if count:
            self.times += [now] * count
            if not self.first.done():
                self.first.set_result(None)
        self.buffer = seen[-len(END):]
        if self.buffer == END:
            self.complete = True
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.first, self.done):
            if not future.done():
                future.set_result(None)


async def connect(port: int, count: int) -> tuple[list[Stream], int]:
    """`count` connections to 127.0.0.1:port, at most CONNECTING at a time; and the failures."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECTING)

    async def one() -> Stream | None:
        async with gate:
            try:
                _, stream = await loop.create_connection(lambda: Stream(loop), "127.0.0.1", port)
            except OSError:
                return None
            return stream

    made = await asyncio.gather(*(one() for _ in range(count)))
    streams = [s for s in made if s is not None]
    return streams, count - len(streams)


def request(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n" \
        .encode()


def send(stream: Stream, wire: bytes) -> None:
    assert stream.transport is not None
    stream.sent = time.monotonic_ns()
    stream.transport.write(wire)


async def run(command: dict[str, Any]) -> dict[str, Any]:
    streams, failed = await connect(command["port"], command["conns"])
    if failed:
        raise ConnectionError(f"{failed} of {command['conns']} connections failed")
    wire = request(command["path"], command["port"])
    delay = (command.get("start_ns", 0) - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    ramp = command.get("ramp_s", 0.0)
    if ramp:  # one request every ramp / conns seconds, on an absolute schedule
        begin = time.monotonic()
        for i, stream in enumerate(streams):
            due = begin + ramp * i / len(streams)
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            send(stream, wire)
    else:
        for stream in streams:
            send(stream, wire)
    await asyncio.wait([s.done for s in streams], timeout=command["timeout"])
    for stream in streams:
        if stream.transport is not None:
            stream.transport.close()
    return {"streams": [[s.sent, s.head, s.times, s.complete] for s in streams]}


HELD: list[Stream] = []


async def hold(command: dict[str, Any]) -> dict[str, Any]:
    streams, failed = await connect(command["port"], command["conns"])
    wire = request(command["path"], command["port"])
    for stream in streams:
        assert stream.transport is not None
        stream.transport.write(wire)
    await asyncio.wait([s.first for s in streams], timeout=command["timeout"])
    HELD.extend(streams)
    return {"held": sum(1 for s in streams if s.times and not s.done.done()), "failed": failed}


async def release() -> dict[str, Any]:
    count = len(HELD)
    for stream in HELD:
        if stream.transport is not None:
            stream.transport.close()
    HELD.clear()
    await asyncio.sleep(0.05)  # let the closes go out before the loop stops
    return {"released": count}


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps({"ready": True, "loop": "uvloop" if factory else "asyncio"}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            gc.collect()
            gc.disable()
            try:
                if command["op"] == "run":
                    reply = runner.run(run(command))
                elif command["op"] == "hold":
                    reply = runner.run(hold(command))
                else:
                    reply = runner.run(release())
            except Exception as exc:  # noqa: BLE001 - report to the driver instead of dying
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                gc.enable()
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()

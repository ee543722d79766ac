"""Benchmark client: a separate process, so its GIL never delays the proxy or the server.

It stays up for the whole benchmark (no interpreter start-up next to a measured stream) and
takes one JSON request per stdin line, answering with one JSON line:
  request: {"url": str, "timeout": float, "stamps": bool}
  reply:   {"status", "outcome", "events", "bytes", "chunks", "sent_at_ns", "head_ns",
            "first_ns", "last_ns", "delays_ns": [...] (with "stamps"), or "error": str}
`sent_at_ns` is `monotonic_ns()` when the request was sent; the other times are ns from it.
A delay is the client's receive `monotonic_ns` minus the server's `monotonic_ns` embedded in
the event (`/ticks?stamp=1`); CLOCK_MONOTONIC is system-wide on Linux, so it is one clock.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
from typing import Any

from sse_recorder.wire.probe import ProbeResult, probe

STAMP = re.compile(rb'"t":\s*(\d+)')


def summarize(result: ProbeResult, stamps: bool) -> dict[str, Any]:
    """Per-event delays (an event arrives with the chunk that completes it) and totals.
    Without stamps, the totals alone, in C: the driver waits for this reply before it looks
    for the stream in the cassette, so a Python step per chunk here (50 ms for a 50,000-event
    flood) would count as the recorder's commit lag."""
    delays: list[int] = []
    body = b"".join(data for _, data in result.chunks)
    events = body.count(b"\n\n")
    size = len(body)
    pending = b""
    for offset, data in result.chunks if stamps else ():
        pending += data
        if b"\n\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n\n")
        arrival = result.sent_at_ns + offset
        for event in complete:
            found = STAMP.search(event)
            if found is not None:
                delays.append(arrival - int(found[1]))
    reply: dict[str, Any] = {
        "status": result.status,
        "outcome": result.outcome,
        "events": events,
        "bytes": size,
        "chunks": len(result.chunks),
        "sent_at_ns": result.sent_at_ns,
        "head_ns": result.head_ns,
        "first_ns": result.chunks[0][0] if result.chunks else None,
        "last_ns": result.chunks[-1][0] if result.chunks else None,
    }
    if stamps:
        reply["delays_ns"] = delays
    return reply


def handle(request: dict[str, Any]) -> dict[str, Any]:
    # No collection while a stream is being timed: a GC pause would read as proxy delay.
    gc.collect()
    gc.disable()
    try:
        result = asyncio.run(probe(request["url"], timeout=float(request.get("timeout", 60))))
    finally:
        gc.enable()
    return summarize(result, bool(request.get("stamps")))


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - report to the driver instead of dying
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()

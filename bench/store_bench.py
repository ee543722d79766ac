"""The shared store: PostgreSQL against SQLite, `python bench/store_bench.py [--quick]`.

1. recording: chunks/s through the whole recorder pipeline (`RecordingSession`: queue,
   redaction, SSE parsing, batches, commits) into a SQLite file and into a PostgreSQL
   cassette, the same interleaved streams; and of the storage layer alone
   (`Cassette.write`, batches of 1,024 chunk rows: executemany against binary COPY);
2. replay: time to first byte of a `ReplayServer` reading from each (every request a
   different interaction, so every one reads its body from the store; instant timing);
3. copy: `store.copy` throughput file -> PostgreSQL and PostgreSQL -> file.
The PostgreSQL server is a throwaway one on 127.0.0.1 (`store.throwaway`), started here.
Figures are printed; there is no pass/fail target (the ratios depend on the box).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sse_recorder.demo.upstream import tick_event
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.record.session import RecordingSession
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import ReplayOptions, ReplayServer
from sse_recorder.store.cassette import InteractionStart, WriteBatch, open_store
from sse_recorder.store.copy import copy
from sse_recorder.store.throwaway import postgres_server
from sse_recorder.wire.probe import probe

HEAD = ResponseHead(200, "OK", (("content-type", "text/event-stream"),))


def request(n: int) -> RecordedRequest:
    return RecordedRequest("GET", f"http://127.0.0.1/ticks?stream={n}", (("host", "127.0.0.1"),))


async def record(target: str, streams: int, per_stream: int) -> float:
    """Chunks/s from the first chunk to `close()` (everything committed)."""
    session = RecordingSession(target)
    await session.start()
    iids = [session.begin(request(n), time.time()) for n in range(streams)]
    for iid in iids:
        session.head(iid, HEAD, 0)
    chunks = [tick_event(i, 100) for i in range(per_stream)]
    started = time.perf_counter()
    for k, data in enumerate(chunks):
        for iid in iids:
            session.chunk(iid, k * 1000, data)
        await asyncio.sleep(0)
    for iid in iids:
        session.end(iid, Outcome.CLEAN, per_stream * 1000)
    await session.close()
    return streams * per_stream / (time.perf_counter() - started)


async def write_rate(target: str, rows: int) -> float:
    """Chunks/s of `Cassette.write` alone, 1,024 chunk rows per batch (one transaction)."""
    cassette = await open_store(target, record=True)
    try:
        iids = [cassette.allocate_id() for _ in range(50)]
        await cassette.write(WriteBatch(starts=[InteractionStart(i, 1.0, request(i))
                                                for i in iids]))
        data = tick_event(0, 100)
        batch = [(iids[k % 50], k // 50, k, data) for k in range(rows)]
        started = time.perf_counter()
        for first in range(0, rows, 1024):
            await cassette.write(WriteBatch(chunks=batch[first:first + 1024]))
        return rows / (time.perf_counter() - started)
    finally:
        await cassette.close()


async def first_bytes_ms(target: str, requests: int) -> list[float]:
    server = await ReplayServer.open(target, ReplayOptions(timing=Timing.parse("instant")))
    await server.start()
    try:
        found = []
        for n in range(requests):
            result = await probe(f"{server.base_url}/ticks?stream={n}")
            assert result.status == 200, result.status
            found.append(result.chunks[0][0] / 1e6)
        return found
    finally:
        await server.close()


async def copy_rate(source: str, destination: str) -> tuple[float, float]:
    started = time.perf_counter()
    done = await copy(source, destination)
    seconds = time.perf_counter() - started
    return (sum(c.chunks for c in done) / seconds,
            sum(c.body_size for c in done) / seconds / 1e6)


async def main(quick: bool) -> None:
    streams, per_stream = (20, 100) if quick else (50, 400)
    requests = 20 if quick else streams
    with postgres_server() as url, tempfile.TemporaryDirectory() as workdir:
        targets = {"SQLite": str(Path(workdir) / "bench.sqlite"),
                   "PostgreSQL": f"{url}?cassette=bench"}
        print(f"recording {streams} streams x {per_stream} chunks of "
              f"{len(tick_event(0, 100))} bytes:")
        for name, target in targets.items():
            print(f"  {name:<11} {await record(target, streams, per_stream):>10,.0f} chunks/s")
        print("storage layer alone (Cassette.write, 1,024 rows a batch):")
        for name, target in targets.items():
            rate = await write_rate(target.replace("bench", "rows"), 20_000 if quick else 200_000)
            print(f"  {name:<11} {rate:>10,.0f} chunks/s")
        print(f"replay, time to first byte over {requests} requests (median / max):")
        for name, target in targets.items():
            found = await first_bytes_ms(target, requests)
            print(f"  {name:<11} {statistics.median(found):6.2f} ms / {max(found):6.2f} ms")
        print("copy (every interaction):")
        for source, destination in (("SQLite", "PostgreSQL"), ("PostgreSQL", "SQLite")):
            into = (f"{url}?cassette=copied" if destination == "PostgreSQL"
                    else str(Path(workdir) / "copied.sqlite"))
            chunks, megabytes = await copy_rate(targets[source], into)
            print(f"  {source} -> {destination}: {chunks:,.0f} chunks/s, {megabytes:.1f} MB/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strict", action="store_true", help="accepted; no targets here")
    asyncio.run(main(parser.parse_args().quick))

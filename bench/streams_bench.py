"""NDJSON beside SSE through the recorder: added latency and flood throughput.

Why this shape: the recorder now streams every streamed body, not only SSE, and an NDJSON
stream goes through the same hot path (the stream callable, the writer, the frame parser
instead of the SSE parser). So each NDJSON figure is printed beside the SSE figure of the
same payload from the same upstream (`python -m sse_recorder.demo.streams`, `/lines`), and
each recorder figure beside the direct one measured in the same run (2 noisy vCPUs).

1. latency: lines 10 ms apart, stamped with the upstream's `time.monotonic_ns()` (one clock
   for the machine); delivery delay = client arrival - stamp; the recorder's cost = recorder
   median/p99 - direct median/p99. Target: NDJSON's added median within 0.2 ms of SSE's.
2. flood: N lines back to back, three times each, interleaved; lines/s through the recorder
   over direct (medians). Target: NDJSON's ratio at least 0.9 x SSE's. Afterwards the
   cassette must hold every byte each recorded flood delivered (a correctness check).

Usage: `python bench/streams_bench.py [--quick] [--strict]`; exit 1 on a lost byte, and with
--strict on any MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Service, Summary, venv_bin  # noqa: E402
from sse_recorder.store.cassette import Cassette  # noqa: E402

FORMATS = ("ndjson", "sse")
REPEATS = 3


def stamps(line: bytes) -> int:
    text = line.removeprefix(b"data: ")
    return int(text.rsplit(b'"t":', 1)[1].rstrip(b"}\r\n"))


def fetch(base: str, fmt: str, n: int, interval_ms: int) -> tuple[list[float], int, float]:
    """(delivery delays in ms, body bytes, seconds) of one /lines stream read line by line."""
    delays: list[float] = []
    size = 0
    started = time.monotonic()
    with httpx.Client(timeout=60) as client, client.stream(
            "GET", f"{base}/lines", params={"n": n, "interval_ms": interval_ms, "format": fmt}
    ) as response:
        for line in response.iter_lines():
            now = time.monotonic_ns()
            size += len(line) + 1  # iter_lines drops the LF (SSE's blank line is a line)
            if line:
                delays.append((now - stamps(line.encode())) / 1e6)
    return delays, size, time.monotonic() - started


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def stored_sizes(path: Path) -> list[tuple[str, int]]:
    cassette = await Cassette.open(path)
    try:
        return [(i.request.url, i.body_size) for i in await cassette.interactions()]
    finally:
        await cassette.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short streams")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any MISS")
    args = parser.parse_args()
    lines, flood = (100, 5_000) if args.quick else (300, 30_000)
    summary = Summary()
    workdir = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    upstream = Service("streams-upstream", [sys.executable, "-m", "sse_recorder.demo.streams"],
                       workdir).start()
    base = upstream.wait_for(r"^(http://\S+)$").group(1)
    cassette = workdir / "cassette.sqlite"
    recorder = Service("recorder", [venv_bin("sse-recorder"), "record", "--cassette",
                                    str(cassette), "--listen-port", "0", "--confdir",
                                    str(workdir / "mitm"), "--upstream", base], workdir).start()
    via = recorder.wait_for(r"^(http://\S+)$").group(1)
    added: dict[str, tuple[float, float]] = {}
    ratio: dict[str, float] = {}
    flood_sizes: list[int] = []
    try:
        fetch(via, "ndjson", 20, 0)  # warm up the proxy's connection
        for fmt in FORMATS:
            direct, _, _ = fetch(base, fmt, lines, 10)
            recorded, _, _ = fetch(via, fmt, lines, 10)
            added[fmt] = (statistics.median(recorded) - statistics.median(direct),
                          p99(recorded) - p99(direct))
            print(f"latency {fmt:6}: direct p50 {statistics.median(direct):.3f} ms "
                  f"p99 {p99(direct):.3f} ms; recorder p50 {statistics.median(recorded):.3f} ms "
                  f"p99 {p99(recorded):.3f} ms")
            direct_runs, recorded_runs = [], []
            for _ in range(REPEATS):  # interleaved; the median of each
                direct_runs.append(fetch(base, fmt, flood, 0)[2])
                _, size, seconds = fetch(via, fmt, flood, 0)
                recorded_runs.append(seconds)
                flood_sizes.append(size)
            direct_s, recorded_s = statistics.median(direct_runs), statistics.median(recorded_runs)
            ratio[fmt] = direct_s / recorded_s
            print(f"flood   {fmt:6}: direct {flood / direct_s:,.0f} lines/s, recorder "
                  f"{flood / recorded_s:,.0f} lines/s ({ratio[fmt]:.2f} of direct)")
    finally:
        recorder.stop()
        upstream.stop()
    sizes = [size for url, size in asyncio.run(stored_sizes(cassette))
             if f"n={flood}" in url]
    if sorted(sizes) != sorted(flood_sizes):
        summary.failed = True
        summary.add("flood bytes stored", f"{sizes} != {flood_sizes}", False)
    else:
        summary.add("flood bytes stored", f"{sum(sizes):,} bytes, all", True)
    for fmt in FORMATS:
        summary.add(f"added latency {fmt}", f"p50 {added[fmt][0]:+.3f} ms, p99 "
                    f"{added[fmt][1]:+.3f} ms", True)
    summary.add("NDJSON added p50 within 0.2 ms of SSE's",
                f"{added['ndjson'][0]:+.3f} vs {added['sse'][0]:+.3f} ms",
                added["ndjson"][0] <= added["sse"][0] + 0.2)
    summary.add("NDJSON flood ratio >= 0.9 x SSE's",
                f"{ratio['ndjson']:.2f} vs {ratio['sse']:.2f}",
                ratio["ndjson"] >= 0.9 * ratio["sse"])
    summary.print()
    missed = any(not ok for _, _, ok in summary.lines)
    return 1 if summary.failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())

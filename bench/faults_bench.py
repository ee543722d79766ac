"""Fault injection on replay: throttle accuracy and the cost of one-byte re-chunking.

Why this shape: the box has 2 noisy vCPUs, so the replay server (`sse-recorder replay`) and the
client (`bench/_client.py`, the raw-socket probe) are separate processes, every figure is a
ratio taken in the same run, and configurations are interleaved so drift hits them alike.
The cassette is recorded first through `sse-recorder record --upstream` from the demo
upstream, like a user's would be.

1. throttle: achieved / requested rate at 1 KB/s, 100 KB/s and 10 MB/s. Each rate replays a
   `/ticks` stream sized to last about 3 s (1 s with --quick) with
   `--instant --fault throttle:rate=R`; achieved = the bytes after the first write divided by
   the time from the first byte to the last. Target: within 10 % of the cap.
2. rechunk: instant-mode events/s of one stream with `--fault rechunk:mode=byte` (every byte
   its own write and HTTP chunk) as a ratio to the same stream with no fault, and with a
   no-op re-chunking (`bytes,size=16777216`: the faulted path, whose body is read and transformed
   up front, with the recorded chunks) to tell that path's cost from the byte writes'.
   Reported, no target: one-byte chunks are meant to be slow.

Usage: `python bench/faults_bench.py [--quick] [--strict]`; loopback only, bounded in time.
Exit status 1 if a run fails (wrong bytes, a bad ending); with --strict, also on a MISS.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    BenchError,
    Client,
    ForeignLoad,
    Service,
    deadline,
    demo_upstream,
    fmt_ratio,
    median,
    ratio,
    table,
    venv_bin,
)

from sse_recorder.demo.upstream import ticks_writes

TOLERANCE = 0.10  # throttle: achieved rate within 10 % of the cap
URL_LINE = r"^(http://\S+)$"  # the first stdout line of `record` and `replay`


@dataclass(frozen=True)
class Rate:
    label: str
    bytes_per_s: int
    event_size: int  # `/ticks?size=`: bytes per event (and per recorded write)

    def events(self, seconds: float) -> int:
        return max(2, round(self.bytes_per_s * seconds / self.event_size))

    def query(self, seconds: float) -> str:
        return f"n={self.events(seconds)}&size={self.event_size}&interval_ms=0"

    def first_write(self, seconds: float) -> int:
        """The throttle writes at most 20 ms worth at a time, never across recorded chunks.
        (mitmproxy may have recorded a large write as several chunks: then this overstates
        the first write, by at most one event in the whole stream, under 0.2 %.)"""
        first = ticks_writes(self.events(seconds), size=self.event_size)[0]
        return min(len(first), max(1, self.bytes_per_s // 50))


RATES = (Rate("1K", 1024, 100), Rate("100K", 100 * 1024, 1024),
         Rate("10M", 10 * 1024 * 1024, 16 * 1024))


@dataclass(frozen=True)
class Plan:
    """How much to run; `--quick` is a CI smoke run."""

    seconds: float  # throttle: how long each stream lasts at its rate
    throttle_reps: int
    rechunk_events: int
    rechunk_reps: int
    bound_s: float  # hard bound on the whole script


FULL = Plan(3.0, 2, 3000, 5, 240)
QUICK = Plan(1.0, 1, 1000, 3, 90)

RECHUNKS = {"none": [], "faulted path": ["--fault", "rechunk:mode=bytes,size=16777216"],
            "byte": ["--fault", "rechunk:mode=byte"]}


def start_url(service: Service) -> str:
    service.start()
    return service.wait_for(URL_LINE, timeout=60)[1]


def fetch(client: Client, url: str, size: int) -> dict[str, Any]:
    reply = client.get(url, timeout=120)
    if reply["status"] != 200 or reply["outcome"] != "clean" or reply["bytes"] != size:
        raise BenchError(f"GET {url}: status {reply['status']}, {reply['ending']} end, "
                         f"{reply['bytes']} of {size} bytes")
    return reply


def record(workdir: Path, base: str, client: Client, targets: list[tuple[str, int]]) -> Path:
    """Record `targets` (path and query, expected body size) through `sse-recorder record`."""
    cassette = workdir / "faults.sqlite"
    recorder = Service("recorder", [venv_bin("sse-recorder"), "record", "--cassette",
                                    str(cassette), "--listen-port", "0", "--confdir",
                                    str(workdir / "conf"), "--upstream", base], workdir)
    try:
        url = start_url(recorder)
        for target, size in targets:
            fetch(client, url + target, size)
    finally:
        code = recorder.stop()
    if code != 0:
        raise BenchError(f"recorder exited with {code}:\n{recorder.output()[-2000:]}")
    return cassette


def replay(name: str, cassette: Path, workdir: Path, options: list[str]) -> tuple[Service, str]:
    service = Service(name, [venv_bin("sse-recorder"), "replay", str(cassette), "--port", "0",
                             "--instant", *options], workdir)
    return service, start_url(service)


def bench_throttle(plan: Plan, cassette: Path, workdir: Path, client: Client,
                   services: list[Service]) -> list[tuple[str, float, bool]]:
    urls: dict[str, str] = {}
    for rate in RATES:
        service, url = replay(f"throttle-{rate.label}", cassette, workdir,
                              ["--fault", f"throttle:rate={rate.bytes_per_s}"])
        services.append(service)
        urls[rate.label] = url
    pids = [s.popen.pid for s in services if s.popen is not None]
    load = ForeignLoad([*pids, client.popen.pid])
    achieved: dict[str, list[float]] = {r.label: [] for r in RATES}
    writes: dict[str, int] = {}
    for _ in range(plan.throttle_reps):
        for rate in random.sample(RATES, len(RATES)):
            size = len(b"".join(ticks_writes(rate.events(plan.seconds), size=rate.event_size)))
            reply = fetch(client, f"{urls[rate.label]}/ticks?{rate.query(plan.seconds)}", size)
            seconds = (reply["last_ns"] - reply["first_ns"]) / 1e9
            achieved[rate.label].append((size - rate.first_write(plan.seconds)) / seconds)
            writes[rate.label] = reply["chunks"]
    rows, results = [], []
    for rate in RATES:
        value = median(achieved[rate.label])
        share = ratio(value, rate.bytes_per_s)
        ok = abs(share - 1) <= TOLERANCE
        stream = len(b"".join(ticks_writes(rate.events(plan.seconds), size=rate.event_size)))
        rows.append([f"{rate.label}B/s", f"{stream:,}", f"{writes[rate.label]:,}",
                     f"{stream / value:.2f}", f"{value:,.0f}", fmt_ratio(share),
                     "PASS" if ok else "MISS"])
        results.append((f"throttle {rate.label}B/s achieved/requested", share, ok))
    print("\n1. throttle accuracy (--instant --fault throttle:rate=R, median of "
          f"{plan.throttle_reps})")
    print(table(["rate", "bytes", "chunks", "s", "achieved B/s", "ratio", ""], rows))
    print(load.describe())
    return results


def bench_rechunk(plan: Plan, cassette: Path, workdir: Path, client: Client,
                  services: list[Service]) -> list[tuple[str, float, bool]]:
    target = f"/ticks?n={plan.rechunk_events}&interval_ms=0"
    size = len(b"".join(ticks_writes(plan.rechunk_events)))
    urls: dict[str, str] = {}
    for name, options in RECHUNKS.items():
        service, url = replay(f"rechunk-{name.replace(' ', '-')}", cassette, workdir, options)
        services.append(service)
        urls[name] = url
        fetch(client, url + target, size)  # warm: the cassette's cache, the server's imports
    load = ForeignLoad([*(s.popen.pid for s in services if s.popen), client.popen.pid])
    rates: dict[str, list[float]] = {name: [] for name in RECHUNKS}
    chunks: dict[str, int] = {}
    for _ in range(plan.rechunk_reps):
        for name in random.sample(list(RECHUNKS), len(RECHUNKS)):
            reply = fetch(client, urls[name] + target, size)
            if reply["events"] != plan.rechunk_events:
                raise BenchError(f"{name}: {reply['events']} of {plan.rechunk_events} events")
            rates[name].append(reply["events"] / (reply["last_ns"] / 1e9))
            chunks[name] = reply["chunks"]
    base = median(rates["none"])
    rows, results = [], []
    for name in RECHUNKS:
        value = median(rates[name])
        rows.append([name, f"{chunks[name]:,}", f"{plan.rechunk_events / value * 1000:.1f}",
                     f"{value:,.0f}", fmt_ratio(ratio(value, base))])
        if name != "none":
            results.append((f"rechunk {name} events/s vs none", ratio(value, base), True))
    print(f"\n2. instant-mode events/s, {plan.rechunk_events} events ({size:,} bytes) from the "
          f"request to the last byte, median of {plan.rechunk_reps}")
    print(table(["rechunk", "chunks", "ms", "events/s", "ratio"], rows))
    print(load.describe())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 40 s)")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any missed target")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    print(f"faults_bench ({'quick' if args.quick else 'full'}), Python "
          f"{sys.version.split()[0]}, {sys.executable}")
    services: list[Service] = []
    client: Client | None = None
    results: list[tuple[str, float, bool]] = []
    try:
        with deadline(plan.bound_s), tempfile.TemporaryDirectory(prefix="sse-bench-") as tmp:
            workdir = Path(tmp)
            upstream, base = demo_upstream(workdir)
            services.append(upstream)
            client = Client()
            targets = [
                (f"/ticks?{r.query(plan.seconds)}",
                 len(b"".join(ticks_writes(r.events(plan.seconds), size=r.event_size))))
                for r in RATES
            ]
            targets.append((f"/ticks?n={plan.rechunk_events}&interval_ms=0",
                            len(b"".join(ticks_writes(plan.rechunk_events)))))
            cassette = record(workdir, base, client, targets)
            print(f"recorded {len(targets)} streams in {time.monotonic() - started:.1f} s")
            try:
                results += bench_throttle(plan, cassette, workdir, client, services)
                results += bench_rechunk(plan, cassette, workdir, client, services)
            finally:
                for service in services:
                    service.stop()
                services.clear()
    except BenchError as exc:
        print(f"\nfaults_bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for service in services:
            service.stop()
        if client is not None:
            client.close()
    print("\nSUMMARY")
    width = max(len(name) for name, _, _ in results)
    for name, value, ok in results:
        print(f"  {name.ljust(width)}  {fmt_ratio(value):>6}  {'PASS' if ok else 'MISS'}")
    print(f"({time.monotonic() - started:.0f} s)")
    missed = any(not ok for _, _, ok in results)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())

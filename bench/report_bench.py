"""`sse-recorder report` on a 100,000-event recording: generation time, file size, and the
page's load time in the system's headless Chromium.

Why this shape: the issue promises that a big recording's page loads in about a second and
stays small. Absolute times on a shared 2-core box drift, so each figure comes with a
baseline measured in the same run, interleaved: generation against `show --json` of the
same cassette (the other command that reads every event), the page against a plain HTML
table of the same events (what a page that lists everything costs). The cassette is built
with the store API (recording 100,000 events through mitmproxy would measure the recorder).

Usage: `python bench/report_bench.py [--quick] [--strict]` (--quick: 20,000 events, one
round instead of two; --strict: exit 1 if a target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Summary, deadline, fmt_ratio, median, ratio, table, venv_bin

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)
from sse_recorder.testing.browser import CHROMIUM_ARGS, find_chromium

LOAD_TARGET_S = 1.0
SIZE_TARGET = 1_000_000  # bytes
BATCH = 10_000


async def build(path: Path, events: int) -> None:
    """One SSE interaction like a long LLM stream: JSON deltas 2 ms apart, a ping every
    500th, a comment every 1,000th, a 1.5 s pause every 25,000th event."""
    cassette = await Cassette.open_for_recording(path)
    iid = cassette.allocate_id()
    head = ResponseHead(200, "OK", (("content-type", "text/event-stream"),))
    batch = WriteBatch(
        starts=[InteractionStart(iid, time.time(), RecordedRequest(
            "POST", "http://bench.test/v1/messages", (("authorization", "[REDACTED]"),),
            b'{"stream": true}'))],
        heads=[HeadUpdate(iid, head, 80_000_000, True)])
    at = 80_000_000
    for n in range(events):
        at += 2_000_000 + (1_500_000_000 if n and n % 25_000 == 0 else 0)
        if n % 1000 == 999:
            kind, type_, data = "comment", None, "keep-alive"
        elif n % 500 == 499:
            kind, type_, data = "event", "ping", '{"type": "ping"}'
        else:
            kind, type_, data = "event", "content_block_delta", json.dumps(
                {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": f"token {n}"}})
        raw = (f": {data}\n\n" if kind == "comment" else f"event: {type_}\ndata: {data}\n\n")
        batch.chunks.append((iid, n, at, raw.encode()))  # a reader derives the events
        if len(batch.chunks) >= BATCH:
            await cassette.write(batch)
            batch = WriteBatch()
    batch.ends.append(EndUpdate(iid, True, Outcome.CLEAN, at + 1_000_000, None))
    await cassette.write(batch)
    await cassette.finish_recording()
    await cassette.close()


def plain_table(show_json: Path, out: Path) -> None:
    """The baseline page: every event as a row of a plain HTML table, nothing else."""
    document = json.loads(show_json.read_text())
    rows = "".join(
        f"<tr><td>{e['seq']}</td><td>{e['offset_ms']}</td><td>{html.escape(e['type'] or '')}"
        f"</td><td>{html.escape(e['data'])}</td></tr>"
        for i in document["interactions"] for e in i["events"])
    out.write_text(f"<!DOCTYPE html><html><head><meta charset=utf-8></head><body><table>"
                   f"{rows}</table></body></html>")


def timed(argv: list[str], stdout: Path | None = None) -> float:
    """Wall seconds of a command, its stdout kept in `stdout` (or dropped)."""
    started = time.perf_counter()
    if stdout is None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    else:
        with stdout.open("wb") as sink:
            subprocess.run(argv, stdout=sink, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def page_load_s(browser: object, page_path: Path) -> float:
    """Navigation start to the load event, as the browser's own clock has it."""
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(page_path.as_uri(), wait_until="load", timeout=120_000)
    entry = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
    page.close()
    return float(entry["loadEventEnd"]) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 1 round")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    events, rounds = (20_000, 1) if args.quick else (100_000, 2)
    exe = venv_bin("sse-recorder")
    summary = Summary()
    with deadline(110 if args.quick else 500), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cassette = work / "big.sqlite"
        started = time.perf_counter()
        asyncio.run(build(cassette, events))
        print(f"built a {events:,}-event cassette in {time.perf_counter() - started:.1f} s "
              f"({cassette.stat().st_size / 1e6:.1f} MB)")
        report, dump, baseline = work / "report.html", work / "show.json", work / "table.html"
        generate, show = [], []
        for _ in range(rounds):  # interleaved, so drift hits both alike
            generate.append(timed([exe, "report", str(cassette), "-o", str(report)]))
            show.append(timed([exe, "show", str(cassette), "--json"], stdout=dump))
        plain_table(dump, baseline)

        from playwright.sync_api import sync_playwright

        loads: dict[str, list[float]] = {"report": [], "table": []}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(find_chromium()),
                                                 args=list(CHROMIUM_ARGS))
            for _ in range(rounds):
                loads["report"].append(page_load_s(browser, report))
                loads["table"].append(page_load_s(browser, baseline))
            browser.close()
        sizes = {"report": report.stat().st_size, "show --json": dump.stat().st_size,
                 "table": baseline.stat().st_size}

    gen, base = median(generate), median(show)
    load, load_base = median(loads["report"]), median(loads["table"])
    print(table(["what", "report", "baseline", "ratio", "baseline is"], [
        ["generation (s, median)", f"{gen:.2f}", f"{base:.2f}", fmt_ratio(ratio(gen, base)),
         "show --json"],
        ["page load (s, median)", f"{load:.3f}", f"{load_base:.3f}",
         fmt_ratio(ratio(load, load_base)), "plain HTML table"],
        ["file size (MB)", f"{sizes['report'] / 1e6:.2f}", f"{sizes['table'] / 1e6:.2f}",
         fmt_ratio(ratio(sizes["report"], sizes["table"])), "plain HTML table"],
        ["file size (MB)", f"{sizes['report'] / 1e6:.2f}", f"{sizes['show --json'] / 1e6:.2f}",
         fmt_ratio(ratio(sizes["report"], sizes["show --json"])), "show --json"],
    ]))
    summary.add("page load", f"{load:.3f} s (target {LOAD_TARGET_S:g} s)", load <= LOAD_TARGET_S)
    summary.add("file size", f"{sizes['report'] / 1e3:.0f} kB (target "
                f"{SIZE_TARGET / 1e3:.0f} kB)", sizes["report"] <= SIZE_TARGET)
    summary.print()
    missed = not all(ok for _, _, ok in summary.lines)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())

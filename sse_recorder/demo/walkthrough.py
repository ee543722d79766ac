"""`sse-recorder demo`: the main job end to end, on the built-in demo upstream.

Three real processes on 127.0.0.1: the demo upstream, `sse-recorder record` (mitmproxy in
reverse mode) and `sse-recorder replay`. A raw-socket probe requests each stream through
the recorder, then from the replayer at 1x and at 10x, and the recorded and replayed
chunks, gaps and endings are printed side by side.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sse_recorder.model import Outcome
from sse_recorder.wire.probe import ProbeResult, probe

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoRequest:
    label: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _json_post(label: str, path: str, payload: dict[str, object]) -> DemoRequest:
    return DemoRequest(label, "POST", path, json.dumps(payload).encode(),
                       (("Content-Type", "application/json"), ("Authorization", "Bearer sk-demo")))


REQUESTS = (
    DemoRequest("model list (JSON)", "GET", "/v1/models"),
    _json_post("OpenAI chat stream", "/v1/chat/completions",
               {"model": "gpt-4o-mini", "stream": True,
                "messages": [{"role": "user", "content": "Say hello"}]}),
    _json_post("Anthropic message stream", "/v1/messages",
               {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                "messages": [{"role": "user", "content": "Say hello"}]}),
    DemoRequest("CI log stream", "GET", "/ci/logs"),
    DemoRequest("heartbeats", "GET", "/heartbeat"),
    DemoRequest("CRLF, split events", "GET", "/crlf"),
    DemoRequest("upstream reset", "GET", "/reset"),
)


class _Process:
    """A child process that prints its URL on its first stdout line."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL)
        self.url = self._first_line(deadline=time.monotonic() + 30)

    def _first_line(self, deadline: float) -> str:
        assert self.popen.stdout is not None
        fd, line = self.popen.stdout.fileno(), b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            byte = os.read(fd, 1) if ready else b""
            if not byte:
                self.stop()
                raise RuntimeError(f"{self.popen.args!r} did not start")
            line += byte
        return line.decode().strip()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


async def _run_requests(base_url: str) -> list[ProbeResult]:
    return [
        await probe(base_url + r.path, method=r.method, body=r.body, headers=list(r.headers))
        for r in REQUESTS
    ]


def _summary(label: str, recorded: ProbeResult, one: ProbeResult, ten: ProbeResult) -> str:
    same = "same bytes" if recorded.body == one.body == ten.body else "BYTES DIFFER"
    chunks = f"{len(recorded.chunks)}/{len(one.chunks)}/{len(ten.chunks)} chunks"
    errors = [abs(a - b) for a, b in zip(recorded.gaps_ms(), one.gaps_ms(), strict=False)]
    err = f"1x gap error median {sorted(errors)[len(errors) // 2]:.2f} ms" if errors else ""
    span_rec = (recorded.chunks[-1][0] / 1e6) if recorded.chunks else 0.0
    span_ten = (ten.chunks[-1][0] / 1e6) if ten.chunks else 0.0
    return (f"  {label:<26} {chunks:<17} {same:<11} end {recorded.outcome}/{one.outcome}/"
            f"{ten.outcome:<6} {span_rec:7.1f} ms -> 10x {span_ten:6.1f} ms  {err}")


def _side_by_side(recorded: ProbeResult, one: ProbeResult, ten: ProbeResult, echo: Echo) -> None:
    echo("    chunk  recorded gap  replay 1x gap  replay 10x gap (x10)  first bytes")
    rec, a, b = recorded.gaps_ms(), one.gaps_ms(), ten.gaps_ms()
    for i, (_, data) in enumerate(recorded.chunks[1:12], start=1):
        preview = data[:38].decode("utf-8", "replace").encode("unicode_escape").decode()
        echo(f"    {i:>5}  {rec[i - 1]:>9.2f} ms  {a[i - 1] if i - 1 < len(a) else 0:>10.2f} ms  "
             f"{(b[i - 1] if i - 1 < len(b) else 0) * 10:>14.2f} ms       {preview}")


async def _recorded_outcomes(cassette: Path) -> list[Outcome]:
    """How each recorded response ended, as a client of the replay sees it."""
    from sse_recorder.store.cassette import Cassette

    async with await Cassette.open(cassette) as opened:
        return [i.outcome.as_replayed for i in await opened.interactions()]


async def run_demo(workdir: Path, echo: Echo) -> int:
    """Record, replay at 1x and 10x, compare; returns an exit status (0: all faithful)."""
    exe = str(Path(sys.executable).parent / "sse-recorder")
    cassette = workdir / "demo.sqlite"
    for leftover in workdir.glob("demo.sqlite*"):
        leftover.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = _Process([exe, "demo-upstream", "--port", "0"])
    try:
        echo(f"demo upstream:   {upstream.url}")
        recorder = _Process([exe, "record", "--cassette", str(cassette), "--upstream",
                             upstream.url, "--listen-port", "0", "--confdir",
                             str(workdir / "mitmproxy")])
        echo(f"recording proxy: {recorder.url} (mitmproxy, reverse mode) -> {cassette}")
        try:
            recorded = await _run_requests(recorder.url)
        finally:
            recorder.stop()
    finally:
        upstream.stop()
    echo("")
    listing = subprocess.run([exe, "ls", str(cassette)], capture_output=True, text=True)
    echo(listing.stdout.rstrip())
    echo("")
    replays: list[list[ProbeResult]] = []
    for speed in ("1", "10"):
        replayer = _Process([exe, "replay", str(cassette), "--port", "0", "--speed", speed])
        try:
            replays.append(await _run_requests(replayer.url))
        finally:
            replayer.stop()
    echo("replayed from the cassette (upstream stopped): recorded / 1x / 10x")
    faithful = True
    endings = await _recorded_outcomes(cassette)
    for request, rec, one, ten, ending in zip(REQUESTS, recorded, *replays, endings,
                                              strict=True):
        echo(_summary(request.label, rec, one, ten))
        faithful &= rec.body == one.body == ten.body and one.outcome == ten.outcome == ending
    echo("  (mitmproxy passes an upstream reset on to its client as a close; the cassette"
         " keeps the reset and the replay reproduces it)")
    echo("")
    echo("OpenAI chat stream, chunk by chunk:")
    _side_by_side(recorded[1], replays[0][1], replays[1][1], echo)
    echo("")
    echo("faithful: every replay has the recorded bytes and ending" if faithful
         else "NOT FAITHFUL: see the rows above")
    echo(f"cassette kept at {cassette}; try: sse-recorder show {cassette} 2")
    return 0 if faithful else 1

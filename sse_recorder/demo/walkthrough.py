"""`sse-recorder demo`: the main job end to end, on the built-in demo upstream.

Three real processes on 127.0.0.1: the demo upstream, `sse-recorder record` (mitmproxy in
reverse mode) and `sse-recorder replay`. A raw-socket probe requests each stream through
the recorder, then from the replayer at 1x and at 10x, and the recorded and replayed
chunks, gaps and endings are printed side by side. The replayer's own records (`--log-format
json`) must agree too: each request answered by its recorded interaction, ending as the
cassette says. Each process's stderr is kept in the workdir.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sse_recorder.cli.previews import varying_fields
from sse_recorder.errors import SSERecorderError
from sse_recorder.model import Interaction
from sse_recorder.replay.records import Answer, Served, parse_records
from sse_recorder.sse import Event, parse
from sse_recorder.testing.processes import Process, ProcessError, sse_recorder_executable
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
    echo("    chunk      live gap  replay 1x gap  replay 10x gap (x10)  what changed")
    rec, a, b = recorded.gaps_ms(), one.gaps_ms(), ten.gaps_ms()
    for i, preview in enumerate(_chunk_previews(recorded)[1:12], start=1):
        echo(f"    {i:>5}  {rec[i - 1]:>9.2f} ms  {a[i - 1] if i - 1 < len(a) else 0:>10.2f} ms  "
             f"{(b[i - 1] if i - 1 < len(b) else 0) * 10:>14.2f} ms       {preview}")


def _chunk_previews(result: ProbeResult) -> list[str]:
    """Per chunk, the event data fields that change from chunk to chunk (as `show` has
    them), not the prefix every chunk of a vendor stream shares."""
    datas = ["\n".join(item.data for item in parse(data) if isinstance(item, Event))
             or data.decode("utf-8", "replace") for _, data in result.chunks]
    return [preview[:60] for preview in varying_fields(datas)]


async def _recorded(cassette: Path) -> list[Interaction]:
    """The cassette's interactions, in recording order (the order of `REQUESTS`)."""
    from sse_recorder.store.cassette import Cassette

    async with await Cassette.open(cassette) as opened:
        return await opened.interactions()


async def _replay(exe: str, cassette: Path, workdir: Path,
                  speed: str) -> tuple[list[ProbeResult], list[Served]]:
    """Every demo request from a replayer at `speed`, and the records it logged."""
    with Process([exe, "replay", str(cassette), "--listen-port", "0", "--speed", speed,
                  "--log-format", "json"], workdir / f"replay-{speed}x.log") as replayer:
        results = await _run_requests(replayer.url)
    # stopped: every record is written
    return results, sorted(parse_records(replayer.stderr()), key=lambda s: s.number)


def _record_problems(speed: str, served: list[Served], recorded: list[Interaction]) -> list[str]:
    """Where the replayer's records disagree with the cassette: every request must have been
    answered by its recorded interaction, ending as a client of the replay sees the recording."""
    if len(served) != len(REQUESTS):
        return [f"replay {speed}x logged {len(served)} answers to {len(REQUESTS)} requests"]
    problems = []
    for request, answer, interaction in zip(REQUESTS, served, recorded, strict=True):
        expected = interaction.outcome.as_replayed
        if (answer.answer is not Answer.RECORDED or answer.interaction_id != interaction.id
                or answer.target != request.path or answer.outcome is not expected):
            problems.append(f"replay {speed}x: {answer.line()} (recorded: #{interaction.id}, "
                            f"ended {expected.value})")
    return problems


async def run_demo(workdir: Path, echo: Echo) -> int:
    """Record, replay at 1x and 10x, compare; returns an exit status (0: all faithful).
    A process that fails is one line: why (its last stderr line) and where its log is."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SSERecorderError(f"demo: cannot create {workdir}: {exc.strerror}") from None
    try:
        return await _demo(workdir, echo)
    except ProcessError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[-1].removeprefix("sse-recorder: ") if len(lines) > 1 else ""
        raise SSERecorderError(f"demo: {lines[0].rstrip(':')}" + (f": {why}" if why else "")
                               + f" (logs in {workdir})") from None


async def _demo(workdir: Path, echo: Echo) -> int:
    exe = sse_recorder_executable(needs_mitmproxy=True)
    cassette = workdir / "demo.sqlite"
    for leftover in workdir.glob("demo.sqlite*"):
        leftover.unlink()
    with Process([exe, "demo-upstream", "--listen-port", "0"],
                 workdir / "upstream.log") as upstream:
        echo(f"demo upstream:   {upstream.url}")
        with Process([exe, "record", str(cassette), "--reverse", upstream.url,
                      "--listen-port", "0", "--confdir", str(workdir / "mitmproxy")],
                     workdir / "recorder.log") as recorder:
            echo(f"recording proxy: {recorder.url} (mitmproxy, reverse mode) -> {cassette}")
            recorded = await _run_requests(recorder.url)
    echo("")
    listing = subprocess.run([exe, "ls", str(cassette)], capture_output=True, text=True)
    echo(listing.stdout.rstrip())
    echo("")
    one, one_served = await _replay(exe, cassette, workdir, "1")
    ten, ten_served = await _replay(exe, cassette, workdir, "10")
    echo("live through the recorder, then replayed from the cassette (upstream stopped): "
         "live / 1x / 10x")
    interactions = await _recorded(cassette)
    problems = (_record_problems("1", one_served, interactions)
                + _record_problems("10", ten_served, interactions))
    faithful = not problems
    for request, rec, a, b, interaction in zip(REQUESTS, recorded, one, ten, interactions,
                                               strict=True):
        echo(_summary(request.label, rec, a, b))
        ending = interaction.outcome.as_replayed
        faithful &= rec.body == a.body == b.body and a.outcome == b.outcome == ending
    echo("  (mitmproxy passes an upstream reset on to its client as a close; the cassette"
         " keeps the reset and the replay reproduces it)")
    echo("")
    echo("OpenAI chat stream, chunk by chunk:")
    _side_by_side(recorded[1], one[1], ten[1], echo)
    echo("")
    for problem in problems:
        echo(problem)
    echo("faithful: every replay has the recorded bytes and ending" if faithful
         else "NOT FAITHFUL: see the rows above")
    echo(f"cassette kept at {cassette}; try: {shown_command(exe)} show "
         f"{shlex.quote(str(cassette))} 2")
    return 0 if faithful else 1


def shown_command(exe: str) -> str:
    """How to run `exe` from here: `sse-recorder` if that is what PATH finds, else its path
    (relative when under the current directory, as `make demo` runs .venv/bin's)."""
    path = Path(exe).absolute()
    on_path = shutil.which("sse-recorder")
    if on_path and Path(on_path).resolve() == path.resolve():
        return "sse-recorder"
    if path.is_relative_to(Path.cwd()):
        return shlex.quote(os.path.join(".", os.path.relpath(path)))
    return shlex.quote(str(path))

"""Fault injection on replay, seen by real clients of real `sse-recorder replay` processes.

One recording per module (a real `sse-recorder record` process in front of the demo
upstream). Every test starts its own replay processes, because responses are numbered in
arrival order for seeding. Clients are the raw-socket probe (chunk boundaries, times,
endings), httpx, httpx-sse, and the openai and anthropic SDKs, all on 127.0.0.1. Timing
assertions carry tolerances meant for a loaded 2-core box, and a timing check that fails
is run again (at most three runs) before it counts.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx
import httpx_sse
import openai
import pytest

from sse_recorder.demo.upstream import TEXT, patterns_writes
from sse_recorder.faults import SHAPES, FaultPlan
from sse_recorder.routes import host_and_path
from sse_recorder.sse import Comment, Event, parse
from sse_recorder.wire.probe import ProbeResult, probe
from tests.helpers import SSE_RECORDER, Process, RecordDemo, RecorderFactory
from tests.integration.support import (
    CHAT,
    Recording,
    anthropic_stream,
    chunk_data,
    events_of,
    in_thread,
    openai_chunks,
    replay_process,
    retrying,
    wait_for_line,
)

pytestmark = pytest.mark.integration

THROTTLED = "/ticks?n=60&size=1000&interval_ms=1"  # 60 events of 1000 bytes, recorded fast
MEDIUM = "/ticks?n=20&size=200&interval_ms=1"  # 4000 bytes
TICKS = "/ticks?n=10&interval_ms=20"  # 10 small events, 20 ms apart
CI = "/ci/logs"  # retry: 1000, then 14 events with ids, 30 ms apart
CRLF = "/crlf"  # CRLF, a CRLF split between chunks, multi-byte UTF-8 split between chunks
DEPLOY = "/deploy"  # multi-line JSON data, Korean text
LATE_HEAD = "/ticks?n=5&interval_ms=10&first_ms=500"  # the head 500 ms after the request
GETS = [THROTTLED, MEDIUM, TICKS, CI, CRLF, DEPLOY, LATE_HEAD]
TOLERANCE = 0.10  # throttle: achieved rate within 10 % of the cap


# -- the recording ---------------------------------------------------------------------------


async def openai_text(base_url: str, max_retries: int = 0) -> str:
    chunks = await openai_chunks(base_url, max_retries)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def anthropic_texts(base_url: str, texts: list[str] | None = None) -> list[str]:
    """The text deltas of a streamed message; `texts` collects them as they come."""
    return (await anthropic_stream(base_url, texts))[0]


async def _traffic(url: str) -> None:
    async def get(target: str) -> None:
        assert (await probe(url + target)).status == 200

    await asyncio.gather(*(get(t) for t in GETS), openai_text(url), anthropic_texts(url))


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    """Everything the tests replay, recorded once through `sse-recorder record`."""
    recording = Recording.read(
        record_demo("fault-recording", lambda url: in_thread(_traffic(url))))
    assert len(recording.items) == len(GETS) + 2
    return recording


@pytest.fixture
def replay(recording: Recording, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """`replay(*options)`: a new `sse-recorder replay` process of the recording."""
    started: list[Process] = []

    def make(*options: str) -> Process:
        process = replay_process(recording.path, tmp_path / f"replay-{len(started)}.txt",
                                 *options)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


# -- helpers ---------------------------------------------------------------------------------


async def sse_events(url: str, **client_options: Any) -> list[httpx_sse.ServerSentEvent]:
    async with httpx.AsyncClient(**client_options) as client:
        async with httpx_sse.aconnect_sse(client, "GET", url) as source:
            return [event async for event in source.aiter_sse()]


async def log_lines(path: Path, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The fault log's JSON lines, once it has `count` (one is written as a response ends)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(lines)} of {count} fault log lines:\n{text}")
        await asyncio.sleep(0.02)


def rate(result: ProbeResult) -> float:
    """Bytes per second from the first byte to the last (the first write is not timed)."""
    (first, data), (last, _) = result.chunks[0], result.chunks[-1]
    return (len(result.body) - len(data)) / ((last - first) / 1e9)


# -- each fault type, seen by a client -------------------------------------------------------


async def test_throttle_caps_the_rate(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    cap = 20 * 1024
    url = replay("--instant", "--fault", "throttle:rate=20K").url + THROTTLED
    recorded = recording.get(THROTTLED)

    async def check() -> None:
        result = await probe(url)
        assert result.body == recorded.body and result.outcome == "clean"
        assert max(len(c) for c in chunk_data(result)) <= cap // 50  # 20 ms worth per write
        seconds = (result.chunks[-1][0] - result.chunks[0][0]) / 1e9
        assert seconds > 2.5  # 60 KB at 20 KB/s
        assert abs(rate(result) / cap - 1) < TOLERANCE, (rate(result), cap)

    await retrying(check)


async def test_latency_delays_the_head_and_every_chunk(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "latency:head=300ms,chunk=50ms").url

    async def check(target: str) -> None:
        recorded = recording.get(target)
        head_ms = (recorded.interaction.head_offset_ns or 0) / 1e6
        first_after_head_ms = recorded.chunks[0].offset_ns / 1e6 - head_ms
        result = await probe(url + target)
        assert result.body == recorded.body
        head = result.head_ns / 1e6
        assert 300 + head_ms - 1 <= head < 300 + head_ms + 150, head
        first = result.chunks[0][0] / 1e6 - head
        assert 50 + first_after_head_ms - 10 <= first < 50 + first_after_head_ms + 100, first
        errors = [abs(a - b) for a, b in zip(result.gaps_ms(), recorded.gaps_ms(), strict=True)]
        assert statistics.median(errors) < 5, errors  # a constant delay keeps the gaps

    await retrying(lambda: check(TICKS))
    await retrying(lambda: check(LATE_HEAD))  # a late recorded head delays the body once


async def test_a_bare_duration_is_milliseconds(
    recording: Recording, replay: Callable[..., Process], tmp_path: Path
) -> None:
    # `latency:head=300` waited 300 s; it is 300 ms, as in Toxiproxy, in a plan file too.
    plan = tmp_path / "plan.toml"
    plan.write_text('[[fault]]\ntype = "pause"\nafter_event = 3\nduration = 400\n')
    url = replay("--fault", "latency:head=300", "--faults", str(plan)).url + TICKS
    recorded = recording.get(TICKS)
    head_ms = (recorded.interaction.head_offset_ns or 0) / 1e6

    async def check() -> None:
        result = await probe(url)
        assert result.body == recorded.body
        assert 300 + head_ms - 1 <= result.head_ns / 1e6 < 300 + head_ms + 150, result.head_ns
        gap, expected = result.gaps_ms()[2], recorded.gaps_ms()[2]
        assert 400 + expected - 5 <= gap < 400 + expected + 150, (gap, expected)

    await retrying(check)


async def test_pause_after_event_k(recording: Recording, replay: Callable[..., Process]) -> None:
    url = replay("--fault", "pause:after_event=3,duration=1s").url + TICKS
    recorded = recording.get(TICKS)

    async def check() -> None:
        result = await probe(url)
        assert result.body == recorded.body
        gaps, expected = result.gaps_ms(), recorded.gaps_ms()
        assert 1000 + expected[2] - 5 <= gaps[2] < 1000 + expected[2] + 150, gaps
        others = [abs(a - b) for i, (a, b) in enumerate(zip(gaps, expected, strict=True))
                  if i != 2]
        assert statistics.median(others) < 5, gaps

    await retrying(check)


async def test_heartbeat_comments_every_n_ms(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "heartbeat:every=50ms").url + CI
    recorded = recording.get(CI)
    last_due = recorded.chunks[-1].offset_ns / 1e9
    expected = sum(1 for k in range(1, 100) if 0.05 * k < last_due)

    async def check() -> None:
        result = await probe(url)
        items = parse(result.body)
        assert [i for i in items if isinstance(i, Event)] == recorded.parsed_events()
        beats = [i for i in items if isinstance(i, Comment)]
        assert beats and all(b.text == "heartbeat" for b in beats)
        assert abs(len(beats) - expected) <= 1 and len(beats) >= 5, (len(beats), expected)
        times = [t / 1e6 for t, data in result.chunks if data == b": heartbeat\n\n"]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert abs(statistics.median(gaps) - 50) < 10, gaps

    await retrying(check)


async def test_stall_trips_a_read_timeout(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "stall:after_event=3").url + TICKS
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.5)) as client:
            async with httpx_sse.aconnect_sse(client, "GET", url) as source:
                async for event in source.aiter_sse():
                    received.append(event.id)
    assert received == ["0", "1", "2"]
    assert time.monotonic() - started >= 0.45


@pytest.mark.parametrize(("how", "ending", "error"), [
    ("rst", "reset", httpx.ReadError),
    ("fin", "closed", httpx.RemoteProtocolError),  # incomplete chunked read
])
async def test_drop_rst_and_fin_are_told_apart(
    recording: Recording, replay: Callable[..., Process], how: str, ending: str,
    error: type[Exception],
) -> None:
    url = replay("--instant", "--fault", f"drop:after_event=3,how={how}").url + TICKS
    recorded = recording.get(TICKS)
    result = await probe(url)
    assert result.outcome == ending
    assert result.body == b"".join(c.data for c in recorded.chunks[:3])
    received: list[str] = []
    with pytest.raises(error) as info:
        async with httpx.AsyncClient() as client:
            async with httpx_sse.aconnect_sse(client, "GET", url) as source:
                async for event in source.aiter_sse():
                    received.append(event.data)
    assert type(info.value) is error  # ReadError is not a RemoteProtocolError and back
    assert received == [e.data for e in recorded.parsed_events()[:3]]


async def test_drop_after_bytes_after_a_time_and_mid_event(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "drop:after_bytes=50,route=/ticks",
                 "--fault", "drop:after=200ms,route=/ci/*",
                 "--fault", "drop:mid_event=3,how=rst,route=/deploy").url
    ticks, ci, deploy = (recording.get(t) for t in (TICKS, CI, DEPLOY))

    by_bytes = await probe(url + TICKS)
    assert by_bytes.body == ticks.body[:50] and by_bytes.outcome == "closed"

    started = time.monotonic()
    by_time = await probe(url + CI)
    elapsed = time.monotonic() - started
    assert by_time.body == b"".join(c.data for c in ci.chunks if c.offset_ns < 200_000_000)
    assert by_time.outcome == "closed" and elapsed >= 0.19

    mid = await probe(url + DEPLOY)
    third = deploy.chunks[2].data  # one event per recorded write
    assert mid.body == deploy.chunks[0].data + deploy.chunks[1].data + third[: len(third) // 2]
    assert events_of(mid.body) == deploy.parsed_events()[:2] and mid.outcome == "reset"


async def test_refuse_resets_before_any_response(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "refuse").url + TICKS
    result = await probe(url)
    assert (result.status, result.outcome, result.body) == (0, "reset", b"")
    with pytest.raises(httpx.ReadError):
        async with httpx.AsyncClient() as client:
            await client.get(url)


async def test_no_head_times_out_waiting_for_the_head(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    process = replay("--fault", "no-head")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.5)) as client:
            await client.get(process.url + TICKS)
    assert time.monotonic() - started >= 0.45
    # The request was read and matched; the server let go once the client closed.
    await wait_for_line(process, f"GET {TICKS} -> #", "ended stalled [faults: no-head]")


async def test_openai_sdk_raises_rate_limit_error(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "http:status=429,retry_after=1,shape=openai").url
    with pytest.raises(openai.RateLimitError) as info:
        await openai_text(url, max_retries=0)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limit_exceeded"


async def test_openai_sdk_retries_after_retry_after(
    recording: Recording, replay: Callable[..., Process], tmp_path: Path
) -> None:
    spec = "http:status=429,retry_after=1,shape=openai,p=0.5"
    faults = FaultPlan.load([spec]).faults

    def fires(seed: int, number: int) -> bool:
        plan = FaultPlan(faults, seed)
        return bool(plan.for_connection(number, "POST", "127.0.0.1", "/v1/chat/completions",
                                        False).chosen)

    seed = next(s for s in range(1000) if fires(s, 0) and not fires(s, 1))
    log = tmp_path / "faults.jsonl"
    url = replay("--seed", str(seed), "--fault", spec, "--fault-log", str(log)).url
    started = time.monotonic()
    text = await openai_text(url, max_retries=2)  # the SDK's default
    elapsed = time.monotonic() - started
    assert text == "".join(TEXT)
    assert 0.9 <= elapsed < 10, elapsed  # it waited for Retry-After, then succeeded
    first, second = await log_lines(log, 2)
    assert (first["number"], first["status"], second["number"], second["status"]) == (
        0, 429, 1, 200)
    assert [f["type"] for f in first["faults"]] == ["http"] and second["faults"] == []


async def test_anthropic_sdk_raises_on_an_injected_529(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "http:status=529,shape=anthropic").url
    with pytest.raises(anthropic.OverloadedError) as info:
        await anthropic_texts(url)
    assert info.value.status_code == 529
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"}}


async def test_anthropic_sdk_raises_on_an_injected_error_event(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    # After message_start, content_block_start, ping and two deltas.
    url = replay("--fault", "inject:after_event=5,shape=anthropic-overloaded").url
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        await anthropic_texts(url, texts)
    # The SDK raises the error event as a status error of the 200 response it came in.
    assert type(info.value) is anthropic.APIStatusError and info.value.status_code == 200
    assert info.value.body == SHAPES["anthropic-overloaded"][1]
    assert texts == TEXT[:2]


def _keys(value: object) -> object:
    """The shape of a JSON value: its dict keys, recursively."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    return type(value).__name__


async def test_injected_events_and_retry_reach_httpx_sse(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    shapes = ["error", "warning", "retry-hint", "backoff", "openai-error"]
    options = ["--instant", "--fault", "retry:value=2500"]
    for k, shape in enumerate(shapes, start=1):
        options += ["--fault", f"inject:after_event={k},shape={shape}"]
    url = replay(*options).url + TICKS
    received = await sse_events(url)
    assert received[0].retry == 2500 and received[0].data == ""  # the retry: field first
    with_data = [e for e in received if e.data]
    expected_names = [SHAPES[s][0] or "message" for s in shapes]
    for k, shape in enumerate(shapes):
        tick, injected = with_data[2 * k], with_data[2 * k + 1]
        assert json.loads(tick.data) == {"i": k}
        assert injected.event == expected_names[k]
        assert json.loads(injected.data) == SHAPES[shape][1]
    assert [json.loads(e.data)["i"] for e in with_data[10:]] == list(range(5, 10))
    # The demo's own error, warning, retry-hint and backoff events have the same shape.
    seed = {e.type: json.loads(e.data) for e in events_of(b"".join(patterns_writes()))}
    for shape in ("error", "warning", "retry-hint", "backoff"):
        assert _keys(SHAPES[shape][1]) == _keys(seed[shape]), shape
    # The project's parser agrees.
    parsed = events_of((await probe(url)).body)
    assert [e.type for e in parsed[1::2]][:5] == expected_names


async def test_corruption_modes(recording: Recording, replay: Callable[..., Process]) -> None:
    url = replay("--instant", "--fault", "corrupt:mode=field,at_event=1",
                 "--fault", "corrupt:mode=utf8,at_event=3",
                 "--fault", "corrupt:mode=json,at_event=5",
                 "--fault", "corrupt:mode=duplicate,at_event=7",
                 "--fault", "corrupt:mode=omit,at_event=9").url + TICKS
    result = await probe(url)
    ours = [(e.id, e.data) for e in events_of(result.body)]
    theirs = [(e.id, e.data) for e in await sse_events(url) if e.data]
    for found in (ours, theirs):
        # field: `data {...}` has no colon, so event 1 has no data and is never dispatched;
        # omit: event 9 is not sent at all; duplicate: event 7 comes twice.
        assert [i for i, _ in found] == ["1", "2", "3", "4", "5", "6", "6", "7", "9"]
        data = dict(found)
        assert data["2"].startswith("\ufffd\ufffd")  # utf8: invalid bytes, replaced
        with pytest.raises(json.JSONDecodeError):
            json.loads(data["4"])  # json: a stray character before the value
        assert all(json.loads(d) == {"i": int(i)} for i, d in found if i not in ("2", "4"))
    assert b'id: 0\ndata  {"i": 0}' in result.body and b"\xff\xfe" in result.body


async def test_reconnecting_client_gets_every_event_once(
    recording: Recording, replay: Callable[..., Process], tmp_path: Path
) -> None:
    log = tmp_path / "faults.jsonl"
    url = replay("--fault", "drop:after_event=4,how=fin,on_resume=none",
                 "--fault-log", str(log)).url + CI
    seen: list[tuple[str, str, str]] = []
    last_id: str | None = None
    connections = 0
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            connections += 1
            assert connections <= 3, seen
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with httpx_sse.aconnect_sse(client, "GET", url, headers=headers) as source:
                    async for event in source.aiter_sse():
                        if event.data:
                            seen.append((event.id, event.event, event.data))
                            last_id = event.id
                break
            except httpx.RemoteProtocolError:
                continue  # dropped: reconnect with Last-Event-ID
    assert connections == 2
    assert seen == [(e.id, e.type, e.data) for e in recording.get(CI).parsed_events()]
    first, second = await log_lines(log, 2)
    assert first["outcome"] == "closed" and first["faults"][0]["event"] == 4
    assert second["outcome"] == "clean" and second["faults"] == []


# -- re-chunking -----------------------------------------------------------------------------

MODES = ["bytes,size=7", "random,min=1,max=9", "byte", "event", "coalesce", "adversarial"]


@pytest.mark.parametrize("mode", MODES)
async def test_rechunking_keeps_the_events(
    recording: Recording, replay: Callable[..., Process], mode: str
) -> None:
    url = replay("--instant", "--fault", f"rechunk:mode={mode}").url
    for target in (CRLF, DEPLOY, TICKS):
        recorded = recording.get(target)
        result = await probe(url + target)
        chunks = chunk_data(result)
        assert result.body == recorded.body and result.outcome == "clean"
        assert events_of(result.body) == recorded.parsed_events()  # the project's parser
        received = [e for e in await sse_events(url + target) if e.data]  # httpx-sse
        assert [(e.event, e.data) for e in received] == [
            (e.type, e.data) for e in recorded.parsed_events()]
        assert [e.id for e in received] == [e.id or "" for e in recorded.parsed_events()]
        sizes = [len(c) for c in chunks]
        if mode.startswith("bytes"):
            assert max(sizes) <= 7
        elif mode.startswith("random"):
            assert max(sizes) <= 9 and len(set(sizes)) > 1
        elif mode == "byte":
            assert set(sizes) == {1}
        elif mode == "coalesce":
            assert chunks == [recorded.body]
        elif mode == "event":  # each chunk ends where an event (or its CRLF's LF) ends
            ends = {e.end for e in recorded.parsed_events()} | {
                e.end + 1 for e in recorded.parsed_events()}
            positions = [sum(sizes[: i + 1]) for i in range(len(sizes))]
            assert set(positions) <= ends and len(chunks) >= len(recorded.parsed_events())
        if mode == "adversarial" and target == CRLF:
            pairs = list(zip(chunks, chunks[1:], strict=False))
            assert any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in pairs)
            inside = [c for c in chunks if c[-1] >= 0xC0]  # ends on a lead byte
            assert inside
            for chunk in inside:
                with pytest.raises(UnicodeDecodeError):
                    chunk.decode("utf-8")


# -- seeds -----------------------------------------------------------------------------------


async def test_same_seed_same_faults_other_seed_other_faults(
    recording: Recording, replay: Callable[..., Process], tmp_path: Path
) -> None:
    specs = ["drop:after_event=3,p=0.5", "inject:shape=warning,per=event,p=0.3"]
    options = [option for spec in specs for option in ("--fault", spec)]
    runs = [(3, tmp_path / "a.jsonl"), (3, tmp_path / "b.jsonl"), (4, tmp_path / "c.jsonl")]
    processes = [replay("--instant", "--seed", str(seed), "--fault-log", str(log), *options)
                 for seed, log in runs]

    async def ten(process: Process) -> list[bytes]:
        return [(await probe(process.url + TICKS)).body for _ in range(10)]

    bodies = await asyncio.gather(*(ten(p) for p in processes))
    logs = [await log_lines(log, 10) for _, log in runs]
    plans = [[(line["number"], line["faults"]) for line in lines] for lines in logs]
    assert plans[0] == plans[1] and bodies[0] == bodies[1]
    assert plans[0] != plans[2] and bodies[0] != bodies[2]
    for (seed, _), plan in zip(runs, plans, strict=True):
        assert [number for number, _ in plan] == list(range(10))
        expected = FaultPlan.load(specs, seed=seed)
        for number, fired in plan:
            dropped = any(f["type"] == "drop" for f in fired)
            chosen = expected.for_connection(number, "GET", "127.0.0.1", "/ticks", False).chosen
            assert dropped == any(f.type == "drop" for f, _ in chosen)
    assert any(f["type"] == "inject" for _, fired in plans[0] for f in fired)


# -- plans -----------------------------------------------------------------------------------

PLAN = """
seed = 9

[[fault]]
type = "drop"
after_event = 2
route = "/ci/*"

[[fault]]
type = "throttle"
rate = "4K"
route = "GET /ticks"

[[fault]]
type = "http"
status = 503
route = "POST /v1/chat/*"
"""


async def test_toml_plan_applies_each_fault_to_its_route_only(
    recording: Recording, replay: Callable[..., Process], tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    log = tmp_path / "faults.jsonl"
    url = replay("--instant", "--faults", str(plan), "--fault-log", str(log)).url
    ci, medium, deploy = (recording.get(t) for t in (CI, MEDIUM, DEPLOY))

    dropped = await probe(url + CI)  # dropped after two events, not throttled
    assert dropped.outcome == "closed" and chunk_data(dropped) == [c.data for c in ci.chunks[:3]]
    with pytest.raises(openai.InternalServerError) as info:  # 503 on the chat route
        await openai_text(url)
    assert info.value.status_code == 503
    assert await anthropic_texts(url) == TEXT  # POST /v1/messages: untouched
    untouched = await probe(url + DEPLOY)
    assert chunk_data(untouched) == [c.data for c in deploy.chunks]

    async def throttled() -> None:
        result = await probe(url + MEDIUM)
        assert result.body == medium.body and result.outcome == "clean"
        assert abs(rate(result) / 4096 - 1) < TOLERANCE, rate(result)

    await retrying(throttled)
    lines = await log_lines(log, 5)
    fired = {(line["method"], line["target"]): {f["type"] for f in line["faults"]}
             for line in lines}
    assert fired[("GET", CI)] == {"drop"} and fired[("GET", MEDIUM)] == {"throttle"}
    assert fired[("POST", "/v1/chat/completions")] == {"http"}
    assert fired[("POST", "/v1/messages")] == set() and fired[("GET", DEPLOY)] == set()


# -- proxy mode ------------------------------------------------------------------------------


async def test_faults_apply_in_proxy_mode(
    recording: Recording, replay: Callable[..., Process], mitm_confdir: Path
) -> None:
    # Routes name the recorded host (the demo upstream's), not the one the client asks
    # the proxy for: a route on api.example.com never fires, and says so at start.
    recorded_host = host_and_path(recording.get(TICKS).interaction.request.url)[0]
    proxy = replay("--proxy", "--confdir", str(mitm_confdir),
                   "--fault", f"http:status=503,route=POST {recorded_host}/v1/chat/*",
                   "--fault", "drop:after_event=3,how=rst,route=/ticks",
                   "--fault", "refuse:route=api.example.com/ci/*")
    assert [line for line in proxy.stderr().splitlines() if "warning" in line] == [
        "sse-recorder: warning: refuse:route=api.example.com/ci/*: route api.example.com/ci/* "
        "never matches, so the fault never fires: no recording is from host api.example.com "
        f"(recorded: {recorded_host}); routes match the recorded host"]
    context = ssl.create_default_context(cafile=str(mitm_confdir / "mitmproxy-ca-cert.pem"))
    async with httpx.AsyncClient(proxy=proxy.url, verify=context, timeout=10) as client:
        response = await client.post("https://api.example.com/v1/chat/completions",
                                     json={**CHAT, "stream": True})
        assert response.status_code == 503
        assert response.text.startswith("503 Service Unavailable")
        received: list[str] = []
        with pytest.raises(httpx.ReadError):  # the HTTP/1 client's connection is reset
            async with httpx_sse.aconnect_sse(client, "GET",
                                              "https://api.example.com" + TICKS) as source:
                async for event in source.aiter_sse():
                    received.append(event.id)
        assert received == ["0", "1", "2"]
    async with httpx.AsyncClient(proxy=proxy.url, verify=context, timeout=10) as client:
        response = await client.get("https://api.example.com" + CI)  # no fault on this route
        assert response.status_code == 200 and response.content == recording.get(CI).body


# -- routes name the recorded host; a route that cannot fire is a warning at start -----------


async def test_routes_match_the_recorded_host_in_base_url_replay(
    recorder: RecorderFactory, demo_upstream: str, tmp_path: Path
) -> None:
    # Recorded through `record --upstream http://localhost:PORT`: the recorded host is
    # localhost, while the base-URL replay is asked for 127.0.0.1 (its own address).
    port = urlsplit(demo_upstream).port
    cassette = tmp_path / "localhost.sqlite"
    proxy = recorder("--upstream", f"http://localhost:{port}", cassette=cassette)
    recorded = await probe(proxy.url + TICKS)
    assert recorded.status == 200 and proxy.stop() == 0
    replay = replay_process(cassette, tmp_path / "replay.txt",
                            "--fault", "drop:after_event=1,route=localhost/ticks",
                            "--fault", "refuse:route=127.0.0.1/ticks")
    try:
        result = await probe(replay.url + TICKS)
        assert result.outcome == "closed"  # the localhost route fired: one event, then FIN
        assert events_of(result.body) == events_of(recorded.body)[:1]
        assert [line for line in replay.stderr().splitlines() if "warning" in line] == [
            "sse-recorder: warning: refuse:route=127.0.0.1/ticks: route 127.0.0.1/ticks never "
            "matches, so the fault never fires: no recording is from host 127.0.0.1 "
            "(recorded: localhost); routes match the recorded host"]
    finally:
        replay.stop()


# -- bad specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--fault", "bogus"], "bogus: unknown fault type 'bogus'"),
    (["--fault", "drop:after_event=3,color=red"], "drop does not take color"),
    (["--fault", "throttle:rate=fast"], "throttle:rate=fast: throttle.rate: bad size 'fast'"),
    (["--fault", "drop:after_event=3,p=1.5"], "p must be between 0 and 1"),
    (["--faults", "{bad_toml}"], "not valid TOML"),
    (["--faults", "{missing}"], "cannot read the fault plan: No such file or directory"),
    (["--faults", "{bad_value}"], "fault #1: how must be fin or rst"),
    # What a new user trips over: each one line naming the cause, before anything listens.
    (["--fault", "drop:after_events=3"],
     "drop:after_events=3: drop does not take after_events (did you mean after_event?)"),
    (["--fault", "drop:after_event=3,route=POST/v1/chat/completions"],
     "bad route 'POST/v1/chat/completions': POST is a method, not a host "
     "(did you mean 'POST /v1/chat/completions'?)"),
    (["--fault", "stall"], "stall: stall needs after_event= or at= (one of them; "
     "or per=event,p=P)"),
    (["--fault", "rechunk:mode=adversarial,size=3"],
     "rechunk mode=adversarial ignores size= (it is for mode=bytes)"),
    (["--fault", "latency:head=2sec"], "latency.head: bad duration '2sec' (did you mean 2s?): "
     "durations carry a unit (250ms, 2s, 1m) or are milliseconds (500 = 500ms)"),
    (["--fault", "rechunk:mode=adversarail"], "(did you mean adversarial?)"),
])
def test_bad_fault_specs_exit_2_before_listening(
    recording: Recording, tmp_path: Path, args: list[str], message: str
) -> None:
    files = {"bad_toml": tmp_path / "bad.toml", "missing": tmp_path / "absent.toml",
             "bad_value": tmp_path / "value.toml"}
    files["bad_toml"].write_text("seed = [\n")
    files["bad_value"].write_text('[[fault]]\ntype = "drop"\nafter_event = 2\nhow = "maybe"\n')
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    run = subprocess.run([SSE_RECORDER, "replay", str(recording.path), "--port", "0", *args],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 2
    assert run.stdout == ""  # the URL line comes once listening: it never came
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sse-recorder: ") and message in lines[0]


def test_faults_command_lists_every_type() -> None:
    run = subprocess.run([SSE_RECORDER, "faults"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    for name in ("throttle", "latency", "pause", "stall", "rechunk", "drop", "http", "refuse",
                 "no-head", "inject", "heartbeat", "retry", "corrupt"):
        assert f"\n  {name} " in run.stdout
    assert "a bare number is milliseconds (500 = 500ms)" in run.stdout

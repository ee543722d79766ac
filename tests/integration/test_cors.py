"""CORS on the replay server over real sockets (httpx): off by default, preflights answered
and never matched, recorded Access-Control fields replaced on every kind of answer, and the
`--cors` option's one-line errors and warning."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.replay.cors import WILDCARD_WARNING, Cors
from sse_recorder.replay.records import Answer
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import ReplayOptions, ReplayServer
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)
from tests.helpers import SSE_RECORDER

pytestmark = pytest.mark.integration

PAGE = "http://localhost:3000"
STREAM = b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n"
RECORDED_SSE = (("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                ("Access-Control-Allow-Origin", "https://chat.example"),
                ("Access-Control-Allow-Credentials", "true"),
                ("x-ratelimit-remaining-requests", "99"))
RECORDED_OPTIONS = (("Allow", "GET, POST"), ("Content-Length", "0"))


async def write(path: Path) -> None:
    """#1 GET /events (SSE, recorded CORS fields for another origin), #2 OPTIONS /events
    (a recorded plain OPTIONS answer)."""
    cassette = await Cassette.open_for_recording(path)
    try:
        for request, head, body in [
            (RecordedRequest("GET", "https://api.example/events", ()),
             ResponseHead(200, "OK", RECORDED_SSE), STREAM),
            (RecordedRequest("OPTIONS", "https://api.example/events", ()),
             ResponseHead(200, "OK", RECORDED_OPTIONS), b""),
        ]:
            iid = cassette.allocate_id()
            await cassette.write(WriteBatch(
                starts=[InteractionStart(iid, time.time(), request)],
                heads=[HeadUpdate(iid, head, 1000, True)],
                chunks=[(iid, 0, 2000, body)] if body else [],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, 3000, None)],
            ))
        await cassette.finish_recording()
    finally:
        await cassette.close()


@pytest.fixture
async def cassette(tmp_path: Path) -> Path:
    path = tmp_path / "cors.sqlite"
    await write(path)
    return path


async def serve(path: Path, cors: Cors, *faults: str) -> ReplayServer:
    from sse_recorder.faults import FaultPlan

    options = ReplayOptions(Timing(instant=True), cors=cors, faults=FaultPlan.load(faults))
    server = await ReplayServer.open(str(path), options)
    return await server.start("127.0.0.1", 0)


@pytest.fixture
async def on(cassette: Path) -> AsyncIterator[ReplayServer]:
    server = await serve(cassette, Cors.parse([PAGE]))
    yield server
    await server.close()


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


async def test_off_by_default_the_recording_answers_as_recorded(cassette: Path) -> None:
    """No --cors: a preflight is a request like any other (here it matches the recorded
    OPTIONS), the recorded CORS fields go out as recorded, and the record says which
    --cors would let the page read."""
    server = await serve(cassette, Cors())
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            options = await client.options("/events", headers=preflight(PAGE))
            events = await client.get("/events", headers={"Origin": PAGE})
    finally:
        await server.close()
    assert options.status_code == 200 and options.headers["allow"] == "GET, POST"
    assert events.headers["access-control-allow-origin"] == "https://chat.example"
    assert events.content == STREAM
    assert [s.interaction_id for s in server.served] == [2, 1]
    assert server.served[1].explanation == (
        f"a page at Origin {PAGE} cannot read this (CORS is off): replay with --cors {PAGE}")


async def test_a_preflight_is_answered_and_never_matched(on: ReplayServer) -> None:
    async with httpx.AsyncClient(base_url=on.base_url) as client:
        answer = await client.options("/events", headers=preflight(PAGE))
        plain = await client.options("/events")  # no Origin: for the recordings
    assert answer.status_code == 204 and answer.content == b""
    assert answer.headers["access-control-allow-origin"] == PAGE
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-allow-methods"] == "POST"
    assert answer.headers["access-control-allow-headers"] == "authorization, content-type"
    assert answer.headers["access-control-max-age"] == "600"
    assert "allow" not in answer.headers  # not the recorded OPTIONS answer
    assert plain.status_code == 200 and plain.headers["allow"] == "GET, POST"
    assert [(s.interaction_id, s.answer) for s in on.served] == [
        (None, Answer.RECORDED), (2, Answer.RECORDED)]  # the recorded one was not used up


async def test_a_refused_preflight_names_the_option(on: ReplayServer) -> None:
    async with httpx.AsyncClient(base_url=on.base_url) as client:
        answer = await client.options("/events", headers=preflight("https://evil.example"))
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    assert answer.text.endswith(f"--cors allows {PAGE}; add --cors https://evil.example\n")
    assert on.served[0].answer is Answer.UNMATCHED


async def test_every_answer_carries_the_policy_not_the_recording(on: ReplayServer) -> None:
    """Recorded, unmatched and the no-Origin case: the recorded Access-Control fields are
    gone; an allowed page gets its own, with the non-safelisted headers exposed."""
    async with httpx.AsyncClient(base_url=on.base_url) as client:
        recorded = await client.get("/events", headers={"Origin": PAGE})
        unmatched = await client.get("/nothing", headers={"Origin": PAGE})
        bare = await client.get("/events")
    assert recorded.content == STREAM
    assert recorded.headers.get_list("access-control-allow-origin") == [PAGE]
    assert recorded.headers["access-control-expose-headers"] == "x-ratelimit-remaining-requests"
    assert recorded.headers["vary"] == "Origin"
    assert unmatched.status_code == 404 and unmatched.headers["access-control-allow-origin"] == PAGE
    assert "access-control-allow-origin" not in bare.headers


async def test_an_injected_429_is_readable_with_its_retry_after(cassette: Path) -> None:
    """A page's retry logic reads Retry-After: the http fault's answer exposes it."""
    server = await serve(cassette, Cors.parse(["*"]), "http:status=429,retry_after=2")
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            answer = await client.get("/events", headers={"Origin": PAGE})
    finally:
        await server.close()
    assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers  # never with *
    assert "Retry-After" in answer.headers["access-control-expose-headers"].split(", ")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSE_RECORDER, "replay", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("bad", ["localhost:3000", "http://localhost:3000/app"])
def test_a_bad_cors_value_is_one_line_and_exit_2(cassette: Path, bad: str) -> None:
    done = cli(str(cassette), "--cors", bad)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"sse-recorder: --cors {bad}: not an origin; use "
                                  "scheme://host[:port]")
    assert done.stderr.count("\n") == 1


def test_cors_star_warns_at_start(cassette: Path, tmp_path: Path) -> None:
    from tests.helpers import start

    process = start([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0",
                     "--cors", "*"], tmp_path / "replay.txt")
    try:
        answer = httpx.get(f"{process.url}/events", headers={"Origin": PAGE}, timeout=10)
    finally:
        process.stop()
    assert answer.headers["access-control-allow-origin"] == "*"
    assert f"sse-recorder: warning: {WILDCARD_WARNING}" in process.stderr()


def test_cors_applies_in_proxy_mode_too(cassette: Path, tmp_path: Path) -> None:
    """`replay --proxy --cors`: a page's preflight to the recorded API host, sent through
    the proxy, is answered by the policy, and the stream carries the page's origin."""
    from tests.helpers import start

    process = start([SSE_RECORDER, "replay", str(cassette), "--proxy", "--listen-port", "0",
                     "--confdir", str(tmp_path / "mitmproxy"), "--cors", PAGE],
                    tmp_path / "proxy.txt")
    try:
        with httpx.Client(proxy=process.url, timeout=10) as client:
            answer = client.options("http://api.example/events", headers=preflight(PAGE, "GET"))
            events = client.get("http://api.example/events", headers={"Origin": PAGE})
    finally:
        process.stop()
    assert answer.status_code == 204 and answer.headers["access-control-allow-origin"] == PAGE
    assert events.content == STREAM
    assert events.headers.get_list("access-control-allow-origin") == [PAGE]

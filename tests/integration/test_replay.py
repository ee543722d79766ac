"""Replaying cassettes recorded from the demo upstream through the real recorder.

One recording per module (a real `sse-recorder record` process in front of the demo
upstream), replayed by separate `sse-recorder replay` processes, so the test's own event
loop never disturbs the replay's timing. What must be exact is exact (bytes, chunk
boundaries, endings); timing carries tolerances meant for a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import httpx_sse
import pytest

from sse_recorder.demo.upstream import (
    TEXT,
    Ticks,
    ci_log_writes,
    crlf_writes,
    reset_writes,
    tick_event,
    ticks_writes,
)
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead, header_value
from sse_recorder.replay.play import PRECISE_MAX_STREAMS
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)
from sse_recorder.wire.probe import ProbeResult, probe
from tests.helpers import SSE_RECORDER, Process, RecordDemo
from tests.integration.support import (
    Recording,
    anthropic_stream,
    chunk_data,
    in_thread,
    openai_chunks,
    replay_process,
    retrying,
    wait_for_line,
    wait_for_lines,
)

pytestmark = pytest.mark.integration

TICKS = "/ticks?n=50&interval_ms=20"  # 50 chunks, 20 ms apart
BATCHED = "/ticks?n=12&batch=3&interval_ms=15"  # three events per chunk
PAUSED = "/ticks?n=20&interval_ms=10&first_ms=1500"  # 1.5 s before the head
EARLY_CLOSE = "/ticks?n=8&interval_ms=10&end=close"
LENGTH = "/ticks?n=8&interval_ms=10&framing=length"
LENGTH_EARLY = "/ticks?n=8&interval_ms=10&framing=length&end=close"
CLOSE_DELIMITED = "/ticks?n=8&interval_ms=10&framing=close"
CLOSE_DELIMITED_EARLY = "/ticks?n=8&interval_ms=10&framing=close&end=close"
CI = "/ci/logs"
CRLF = "/crlf"
RESET = "/reset"
MODELS = "/v1/models"
GETS = [BATCHED, EARLY_CLOSE, LENGTH, LENGTH_EARLY, CLOSE_DELIMITED, CLOSE_DELIMITED_EARLY,
        CRLF, RESET, MODELS]


def order_payload(model: str, api_key: str) -> dict[str, Any]:
    """Non-streaming chat requests that differ in `model` (echoed in the response)."""
    return {"model": model, "api_key": api_key,
            "messages": [{"role": "user", "content": "which one?"}]}


# -- the recording ---------------------------------------------------------------------------


async def _traffic(url: str) -> None:
    async def slow(target: str) -> None:
        assert (await probe(url + target)).status == 200

    async def quick() -> None:
        for target in GETS:
            assert (await probe(url + target)).status == 200
        await openai_chunks(url)
        await anthropic_stream(url)
        async with httpx.AsyncClient(base_url=url) as client:
            for model in ("order-1", "order-2"):  # in this order
                response = await client.post("/v1/chat/completions",
                                             json=order_payload(model, "sk-FAKE-SECRET-1"))
                assert response.status_code == 200

    await asyncio.gather(slow(PAUSED), slow(TICKS), slow(CI), quick())


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    """Everything the tests replay, recorded once through `sse-recorder record`."""
    recording = Recording.read(record_demo("recording", lambda url: in_thread(_traffic(url))))
    assert len(recording.items) == len(GETS) + 7
    return recording


@pytest.fixture(scope="module")
def replays(
    recording: Recording, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Process]]:
    """`replays(*options)`: a replay process of the recording, one per set of options."""
    logs = tmp_path_factory.mktemp("replays")
    started: dict[tuple[str, ...], Process] = {}

    def get(*options: str) -> Process:
        if options not in started:
            started[options] = replay_process(recording.path, logs / f"{len(started)}.txt",
                                              *options)
        return started[options]

    yield get
    for process in started.values():
        process.stop()


# -- real clients get exactly what was recorded ----------------------------------------------


async def test_openai_sdk_streams_the_recorded_completion(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    chunks = await openai_chunks(replays().url)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TEXT)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} == {"chatcmpl-demo"}
    recorded = recording.get("/v1/chat/completions", "POST", stream=True)
    assert len(chunks) == recorded.interaction.event_count - 1  # all but [DONE]


async def test_anthropic_sdk_streams_the_recorded_message(
    replays: Callable[..., Process],
) -> None:
    texts, final = await anthropic_stream(replays().url)
    assert texts == TEXT
    assert final.id == "msg_demo" and final.stop_reason == "end_turn"
    assert [block.text for block in final.content] == ["".join(TEXT)]
    assert final.usage.output_tokens == len(TEXT)


async def test_httpx_sse_sees_the_recorded_events(
    recording: Recording, replays: Callable[..., Process], demo_upstream: str
) -> None:
    async def events(url: str) -> list[tuple[str, str, str, int | None]]:
        async with httpx.AsyncClient() as client:
            async with httpx_sse.aconnect_sse(client, "GET", url) as source:
                return [(e.event, e.data, e.id, e.retry) async for e in source.aiter_sse()]

    replayed = await events(replays().url + CI)
    assert replayed == await events(demo_upstream + CI)  # as the live upstream gave them
    recorded = recording.get(CI).events
    assert [(name, data, id) for name, data, id, _ in replayed if data] == [
        (e.type, e.data, e.id) for e in recorded if e.kind == "event"]
    assert len(recorded) == 14 and replayed[0][3] == 1000  # and the `retry: 1000`


async def test_curl_gets_the_recorded_bytes(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    curl = "/usr/bin/curl"
    if not os.access(curl, os.X_OK):
        pytest.skip("curl is not installed")
    for target in (CI, MODELS):
        process = await asyncio.create_subprocess_exec(
            curl, "-sSN", "--max-time", "20", replays().url + target,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err
        assert out == recording.get(target).body


async def test_plain_json_response_is_replayed_with_its_length(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(replays().url + MODELS)
    assert response.status_code == 200
    assert response.content == recording.get(MODELS).body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert [m["id"] for m in response.json()["data"]] == ["gpt-4o-mini", "claude-sonnet-4-5"]


# -- chunk boundaries and timing -------------------------------------------------------------


def gap_errors_ms(result: ProbeResult, recorded: list[float]) -> list[float]:
    return [abs(a - b) for a, b in zip(result.gaps_ms(), recorded, strict=True)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_1x_keeps_chunk_boundaries_and_gaps(
    loop: str, recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(TICKS)
    url = replays("--loop", loop).url + TICKS

    async def check() -> None:
        result = await probe(url)
        assert result.status == 200 and result.outcome == "clean"
        assert chunk_data(result) == [c.data for c in recorded.chunks] == ticks_writes(50)
        errors = gap_errors_ms(result, recorded.gaps_ms())
        assert statistics.median(errors) < 2.0, errors
        assert sorted(errors)[-3] < 15, errors  # two scheduler hiccups allowed
        # An absolute schedule: the first and the last chunk come when they did, no drift.
        first_ms, last_ms = result.chunks[0][0] / 1e6, result.chunks[-1][0] / 1e6
        assert abs(first_ms - recorded.chunks[0].offset_ns / 1e6) < 15
        assert abs(last_ms - recorded.chunks[-1].offset_ns / 1e6) < 25

    await retrying(check)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_under_load_every_stream_keeps_its_chunk_boundaries_and_gaps(
    loop: str, recording: Recording, replays: Callable[..., Process]
) -> None:
    """More streams at once than PRECISE_MAX_STREAMS: the pacer sends them on one timer,
    each chunk its own write, on each stream's own absolute schedule."""
    recorded = recording.get(TICKS)
    url = replays("--loop", loop).url + TICKS
    streams = PRECISE_MAX_STREAMS + 16

    async def check() -> None:
        results = await asyncio.gather(*[probe(url) for _ in range(streams)])
        for result in results:
            assert result.status == 200 and result.outcome == "clean"
            assert chunk_data(result) == [c.data for c in recorded.chunks]
            errors = gap_errors_ms(result, recorded.gaps_ms())
            assert statistics.median(errors) < 3.0, errors
            last_ms = result.chunks[-1][0] / 1e6
            assert abs(last_ms - recorded.chunks[-1].offset_ns / 1e6) < 40

    await retrying(check)


async def test_speed_10_divides_the_gaps(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(TICKS)
    url = replays("--speed", "10").url + TICKS
    recorded_ms = (recorded.chunks[-1].offset_ns - recorded.chunks[0].offset_ns) / 1e6

    async def check() -> None:
        result = await probe(url)
        assert result.outcome == "clean" and chunk_data(result) == [c.data for c in recorded.chunks]
        ratios = [a / b for a, b in zip(result.gaps_ms(), recorded.gaps_ms(), strict=True)]
        assert abs(statistics.median(ratios) - 0.1) < 0.03, ratios
        duration_ms = (result.chunks[-1][0] - result.chunks[0][0]) / 1e6
        assert recorded_ms / 10 - 10 < duration_ms < recorded_ms / 10 + 30

    await retrying(check)


async def test_instant_sends_everything_at_once_with_the_same_chunks(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    url = replays("--instant").url
    recorded = recording.get(TICKS)
    assert recorded.chunks[-1].offset_ns / 1e9 > 0.95
    result = await probe(url + TICKS)
    assert result.outcome == "clean"
    # HTTP chunks keep their boundaries whatever the transport coalesces.
    assert chunk_data(result) == [c.data for c in recorded.chunks]
    assert result.chunks[-1][0] / 1e9 < 0.4
    # A close-delimited body has no framing: pieces may merge, bytes may not change.
    closed = recording.get(CLOSE_DELIMITED)
    result = await probe(url + CLOSE_DELIMITED)
    assert result.body == closed.body and len(result.chunks) <= len(closed.chunks)
    assert result.chunks[-1][0] / 1e9 < 0.4


async def test_max_gap_clamps_a_long_pause(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(PAUSED)
    head_ms = (recorded.interaction.head_offset_ns or 0) / 1e6
    assert head_ms > 1400
    clamped_url, faithful_url = replays("--max-gap", "100ms").url, replays().url

    async def check() -> None:
        clamped, faithful = await asyncio.gather(
            probe(clamped_url + PAUSED), probe(faithful_url + PAUSED)
        )
        for result in (clamped, faithful):
            assert result.outcome == "clean"
            assert chunk_data(result) == [c.data for c in recorded.chunks]
        assert 80 < clamped.head_ns / 1e6 < 400  # 1.5 s clamped to 100 ms
        errors = gap_errors_ms(clamped, recorded.gaps_ms())
        assert statistics.median(errors) < 3, errors  # the short gaps stay as recorded
        assert abs(faithful.head_ns / 1e6 - head_ms) < 50  # without the clamp: the whole pause

    await retrying(check)


# -- endings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason", "ending", "body", "framing"),
    [
        (TICKS, Outcome.CLEAN, "clean", b"".join(ticks_writes(50)), "chunked"),
        (RESET, Outcome.RESET, "reset", b"".join(reset_writes()), "chunked"),
        (EARLY_CLOSE, Outcome.CLOSED, "closed",
         b"".join(ticks_writes(8, end="close")), "chunked"),
        (LENGTH, Outcome.CLEAN, "clean", b"".join(ticks_writes(8)), "length"),
        (LENGTH_EARLY, Outcome.CLOSED, "closed",
         b"".join(ticks_writes(8, end="close")), "length"),
        # Close-delimited: the close is the end of the body, so h11 sees a clean end.
        (CLOSE_DELIMITED, Outcome.CLEAN, "clean", b"".join(ticks_writes(8)), "close"),
        (CLOSE_DELIMITED_EARLY, Outcome.CLOSED, "clean",
         b"".join(ticks_writes(8, end="close")), "close"),
    ],
    ids=["clean", "reset", "early-close", "length", "length-early", "close-delimited",
         "close-delimited-early"],
)
async def test_recorded_ending_is_reproduced_on_the_wire(
    target: str, reason: Outcome, ending: str, body: bytes, framing: str,
    recording: Recording, replays: Callable[..., Process],
) -> None:
    recorded = recording.get(target)
    assert recorded.interaction.outcome is reason and recorded.body == body
    process = replays()
    result = await probe(process.url + target)
    assert result.outcome == ending
    assert result.body == body
    if framing == "chunked":
        assert chunk_data(result) == [c.data for c in recorded.chunks]
    headers = {k.lower(): v for k, v in result.headers}
    if framing == "length":
        declared = header_value(recorded.interaction.response.headers,  # type: ignore[union-attr]
                                "content-length")
        assert headers["content-length"] == declared
        end = "clean" if ending == "clean" else "close"
        assert int(declared or 0) == Ticks(8, end=end).declared_length()
    if framing == "close":
        assert "content-length" not in headers and "transfer-encoding" not in headers
        assert headers["connection"] == "close"
        line = await wait_for_line(process, f"GET {target} ->")
        # The server closed it with a FIN (an RST would say reset): the body's end when the
        # recording ended clean, a truncation otherwise.
        assert line.endswith(f"ended {reason.as_replayed}")


async def test_reset_and_early_close_reach_httpx_as_errors(
    replays: Callable[..., Process],
) -> None:
    url = replays().url
    expectations = [
        (RESET, (httpx.ReadError, httpx.RemoteProtocolError), b"".join(reset_writes())),
        (EARLY_CLOSE, httpx.RemoteProtocolError, b"".join(ticks_writes(8, end="close"))),
        (LENGTH_EARLY, httpx.RemoteProtocolError, b"".join(ticks_writes(8, end="close"))),
    ]
    async with httpx.AsyncClient() as client:
        for target, error, body in expectations:
            received = bytearray()
            with pytest.raises(error):
                async with client.stream("GET", url + target) as response:
                    assert response.status_code == 200
                    async for piece in response.aiter_bytes():
                        received += piece
            assert bytes(received) == body, target
        response = await client.get(url + TICKS)  # and a clean one is simply complete
        assert response.content == b"".join(ticks_writes(50))


async def test_keep_alive_and_pipelined_requests(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    """Requests in turn on one connection, and two sent at once, are all answered."""
    host, port = urlsplit(replays().url).hostname, urlsplit(replays().url).port
    reader, writer = await asyncio.open_connection(host, port)
    conn = h11.Connection(h11.CLIENT)
    expected = recording.get(MODELS).body

    async def response() -> bytes:
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
                return bytes(body)
            else:
                raise AssertionError(f"unexpected {event!r}")

    def request(target: str) -> bytes:
        return conn.send(h11.Request(method="GET", target=target, headers=[("Host", "x")])) \
            + (conn.send(h11.EndOfMessage()) or b"")

    try:
        for _ in range(3):  # in turn
            writer.write(request(MODELS))
            assert await asyncio.wait_for(response(), 10) == expected
        # Two at once. h11 lets a client send the second only after the first response,
        # so its bytes are written by hand, and h11 is told of it afterwards.
        second = b"GET " + LENGTH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(request(MODELS) + second)
        assert await asyncio.wait_for(response(), 10) == expected
        request(LENGTH)
        assert await asyncio.wait_for(response(), 10) == b"".join(ticks_writes(8))
    finally:
        writer.close()


# -- Last-Event-ID ---------------------------------------------------------------------------


async def test_last_event_id_resumes_after_that_event_with_the_recorded_gaps(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(CI)
    # chunk 0 is `retry: 1000`, chunk k the event with id k
    assert [c.data for c in recorded.chunks] == ci_log_writes()
    url = replays().url + CI
    # the first event after id 5 comes one recorded gap after the request, not at once
    gap_ms = (recorded.chunks[6].offset_ns - recorded.chunks[5].offset_ns) / 1e6

    async def check() -> None:
        result = await probe(url, headers=[("Last-Event-ID", "5")])
        assert result.outcome == "clean"
        assert chunk_data(result) == ci_log_writes("5")[1:] == [c.data for c in recorded.chunks[6:]]
        errors = gap_errors_ms(result, recorded.gaps_ms(recorded.chunks[6:]))
        assert statistics.median(errors) < 3, errors
        assert gap_ms - 3 < result.chunks[0][0] / 1e6 < gap_ms + 20

    await retrying(check)


async def test_last_event_id_inside_a_chunk_cuts_it(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(BATCHED)  # chunk k holds events 3k, 3k+1, 3k+2
    url = replays().url + BATCHED

    async def check() -> None:
        result = await probe(url, headers=[("Last-Event-ID", "4")])
        assert result.outcome == "clean"
        assert chunk_data(result) == [tick_event(5)] + [c.data for c in recorded.chunks[2:]]
        assert result.chunks[0][0] / 1e6 < 20  # the rest of the cut chunk goes out at once
        errors = gap_errors_ms(result, recorded.gaps_ms(recorded.chunks[1:]))
        assert max(errors) < 5, errors

    await retrying(check)
    result = await probe(url, headers=[("Last-Event-ID", "11")])  # the last event
    assert result.outcome == "clean" and result.body == b""


async def test_last_event_id_with_crlf_split_across_chunks(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    recorded = recording.get(CRLF)
    assert [c.data for c in recorded.chunks] == crlf_writes()
    url = replays().url + CRLF
    for last_id, rest in (("1", 2), ("2", 4), ("3", 5), ("4", 7)):
        result = await probe(url, headers=[("Last-Event-ID", last_id)])
        assert result.outcome == "clean"
        # exactly the events after it: not even the LF of the CRLF that ended it
        assert chunk_data(result) == [c.data for c in recorded.chunks[rest:]], last_id


async def test_last_event_id_with_a_content_length(
    replays: Callable[..., Process],
) -> None:
    result = await probe(replays().url + LENGTH, headers=[("Last-Event-ID", "5")])
    assert result.outcome == "clean"
    assert result.body == b"".join(ticks_writes(8)[6:])
    assert ("content-length", str(len(result.body))) in [(k.lower(), v) for k, v in
                                                         result.headers]


async def test_last_event_id_resume_with_httpx_sse(
    replays: Callable[..., Process],
) -> None:
    async with httpx.AsyncClient() as client:
        async with httpx_sse.aconnect_sse(client, "GET", replays().url + TICKS,
                                          headers={"Last-Event-ID": "45"}) as source:
            ids = [e.id async for e in source.aiter_sse()]
    assert ids == ["46", "47", "48", "49"]


async def test_unknown_last_event_id_replays_from_the_start(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    result = await probe(replays().url + CI, headers=[("Last-Event-ID", "no-such-id")])
    assert result.outcome == "clean"
    assert chunk_data(result) == [c.data for c in recording.get(CI).chunks]


# -- matching --------------------------------------------------------------------------------


async def test_unmatched_path_gets_an_explanation(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    process = replays()
    nearest = recording.get(TICKS).interaction
    async with httpx.AsyncClient() as client:
        response = await client.get(process.url + "/tickz?n=50&interval_ms=20")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-sse-recorder"] == "unmatched"
    text = response.text
    assert text.startswith("sse-recorder: no recorded interaction matches GET /tickz?")
    assert f"nearest recording: #{nearest.id} GET {nearest.request.url}\n" in text
    assert "differs in path: recorded /ticks, got /tickz" in text
    line = await wait_for_line(process, "GET /tickz?n=50&interval_ms=20 ->")
    assert "404 unmatched" in line and f"nearest recording: #{nearest.id} GET" in line


async def test_unmatched_json_field_gets_an_explanation(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    process = replays()
    nearest = recording.get("/v1/chat/completions", "POST", stream=True).interaction
    body = json.loads(nearest.request.body)
    body["messages"][0]["content"] = "Say goodbye"
    async with httpx.AsyncClient() as client:
        response = await client.post(process.url + "/v1/chat/completions", json=body)
    assert response.status_code == 404  # in OpenAI's error shape: a call to its API
    explanation = response.json()["error"]["message"]
    assert f"nearest recording: #{nearest.id} POST" in explanation
    assert ('differs in body field messages[0].content: recorded "Say hello", '
            'got "Say goodbye"') in explanation
    line = await wait_for_line(process, "POST /v1/chat/completions -> 404")
    assert f"nearest recording: #{nearest.id} POST" in line


async def test_json_key_order_and_redacted_values(
    recording: Recording, replays: Callable[..., Process]
) -> None:
    first = recording.get("/v1/chat/completions", "POST", model="order-1")
    assert json.loads(first.interaction.request.body)["api_key"] == "[REDACTED]"
    payload = order_payload("order-1", "sk-a-different-key")
    reordered = json.dumps(dict(reversed(list(payload.items()))), indent=1).encode()
    url = replays().url + "/v1/chat/completions"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, content=reordered,
                                     headers={"content-type": "application/json"})
        assert response.status_code == 200
        assert response.content == first.body and response.json()["model"] == "order-1"
        # the model is not ignored here: another one is a miss naming that field
        other = await client.post(url, json=order_payload("order-3", "sk-x"))
        assert other.status_code == 404
        assert ('differs in body field model: recorded "order-1", got "order-3"'
                in other.json()["error"]["message"])


async def test_repeated_requests_follow_recorded_order_then_repeat_the_last(
    recording: Recording, tmp_path: Path
) -> None:
    ids = [recording.get("/v1/chat/completions", "POST", model=m).interaction.id
           for m in ("order-1", "order-2")]
    process = replay_process(recording.path, tmp_path / "replay.txt", "--ignore-json", "model")
    try:
        async with httpx.AsyncClient() as client:
            models = []
            for _ in range(4):
                response = await client.post(process.url + "/v1/chat/completions",
                                             json=order_payload("any", "sk-any"))
                assert response.status_code == 200
                models.append(response.json()["model"])
        assert models == ["order-1", "order-2", "order-2", "order-2"]
        lines = await wait_for_lines(process, "POST /v1/chat/completions ->", count=4)
        served = [line.split(" -> #")[1].split()[0] for line in lines]
        assert served == [str(ids[0]), str(ids[1]), str(ids[1]), str(ids[1])]
    finally:
        process.stop()


async def test_when_exhausted_error_gives_a_409(recording: Recording, tmp_path: Path) -> None:
    process = replay_process(recording.path, tmp_path / "replay.txt", "--ignore-json", "model",
                             "--when-exhausted", "error")
    try:
        async with httpx.AsyncClient() as client:
            responses = [
                await client.post(process.url + "/v1/chat/completions",
                                  json=order_payload(f"model-{n}", "sk-any"))
                for n in range(3)
            ]
        assert [r.status_code for r in responses] == [200, 200, 409]
        assert [r.json()["model"] for r in responses[:2]] == ["order-1", "order-2"]
        assert "was already served (policy: error)" in responses[2].text
        await wait_for_line(process, "POST /v1/chat/completions -> 409 unmatched")
    finally:
        process.stop()


async def test_replay_matches_in_process_too(recording: Recording) -> None:
    """The library API: `ReplayServer.served` records what each request got."""
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.replay.schedule import Timing
    from sse_recorder.replay.server import ReplayOptions, ReplayServer

    options = ReplayOptions(Timing(instant=True), MatchConfig.parse(ignore_json=["model"]))
    async with await ReplayServer.open(str(recording.path), options) as server:
        await server.start("127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            for model in ("x", "y", "z"):
                await client.post("/v1/chat/completions", json=order_payload(model, "k"))
            assert (await client.get("/nowhere")).status_code == 404
            result = await probe(server.base_url + RESET)
        assert result.outcome == "reset"
    ids = [recording.get("/v1/chat/completions", "POST", model=m).interaction.id
           for m in ("order-1", "order-2")]
    assert [(s.interaction_id, s.answer, s.outcome) for s in server.served] == [
        (ids[0], "recorded", "clean"), (ids[1], "recorded", "clean"),
        (ids[1], "recorded", "clean"), (None, "unmatched", "clean"),
        (recording.get(RESET).interaction.id, "recorded", "reset")]
    assert "nearest recording" in server.served[3].explanation


# -- cassettes -------------------------------------------------------------------------------


def test_missing_or_corrupt_cassette_exits_2_in_one_line(
    recording: Recording, tmp_path: Path
) -> None:
    import sqlite3

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE todo (item TEXT)")
    db.close()
    notes = tmp_path / "notes.sqlite"
    notes.write_bytes(b"these are my notes, not a database\n" * 100)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for path in (tmp_path / "missing.sqlite", notes, empty, foreign):
        done = subprocess.run([SSE_RECORDER, "replay", str(path), "--port", "0"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (path, done.stdout, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and str(path) in done.stderr


BIG_CHUNKS = 25_000
BIG_CHUNK = b"data: " + b"x" * 4088 + b"\n\n"  # 4 KiB, so 100 MB in all


async def write_big_cassette(path: Path) -> None:
    """One SSE interaction of 25,000 chunks of 4 KiB, a millisecond apart at most."""
    cassette = await Cassette.open_for_recording(path)
    try:
        iid = cassette.allocate_id()
        request = RecordedRequest("GET", "http://upstream.test/big", ())
        head = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),
                                        ("Transfer-Encoding", "chunked")))
        await cassette.write(WriteBatch(starts=[InteractionStart(iid, time.time(), request)],
                                        heads=[HeadUpdate(iid, head, 1000, True)]))
        for first in range(0, BIG_CHUNKS, 1000):  # one transaction per 1,000 chunks
            await cassette.write(WriteBatch(chunks=[
                (iid, seq, seq * 40, BIG_CHUNK) for seq in range(first, first + 1000)]))
        await cassette.write(WriteBatch(ends=[EndUpdate(iid, True, Outcome.CLEAN,
                                                        BIG_CHUNKS * 40, None)]))
        await cassette.finish_recording()
    finally:
        await cassette.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_100mb_cassette_streams_without_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite"
    await write_big_cassette(path)
    assert path.stat().st_size > 100_000_000
    process = replay_process(path, tmp_path / "replay.txt")
    try:
        host, port = urlsplit(process.url).hostname, urlsplit(process.url).port
        reader, writer = await asyncio.open_connection(host, port)
        conn = h11.Connection(h11.CLIENT)
        writer.write(conn.send(h11.Request(method="GET", target="/big",
                                           headers=[("Host", "upstream.test")])))
        writer.write(conn.send(h11.EndOfMessage()))
        sent = time.monotonic()
        first_chunk_s: float | None = None
        first = bytearray()
        received, peak_mb = 0, 0.0
        while received < 16 << 20:  # the first 16 MB
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                received += len(event.data)
                if first_chunk_s is None:
                    first += event.data
                    if event.chunk_end:
                        first_chunk_s = time.monotonic() - sent
                        peak_mb = rss_mb(process.popen.pid)
                elif received % (1 << 20) < len(event.data):
                    peak_mb = max(peak_mb, rss_mb(process.popen.pid))
            else:
                raise AssertionError(f"unexpected {event!r}")
        peak_mb = max(peak_mb, rss_mb(process.popen.pid))
        writer.close()
        assert first_chunk_s is not None and first_chunk_s < 2.0
        assert bytes(first) == BIG_CHUNK
        assert peak_mb < 80, peak_mb
        # the client went away: the server stops there instead of sending the rest
        line = await wait_for_line(process, "GET /big ->", timeout=20)
        assert line.endswith("ended client-gone")
        assert "raised exception" not in process.stderr()  # no writes into a dead socket
    finally:
        process.stop()


# -- responses without a body (RFC 9112 §6.3) ------------------------------------------------

AFTER_BODY = b'{"after": true}'
BODILESS: list[tuple[str, str, int, str, tuple[tuple[str, str], ...], bytes]] = [
    # (path, method, status, reason, recorded headers, recorded body)
    ("/head", "HEAD", 200, "OK", (("Content-Type", "text/event-stream"),
                                  ("Transfer-Encoding", "chunked")), b""),
    ("/head-length", "HEAD", 200, "OK", (("Content-Type", "application/json"),
                                         ("Content-Length", "1234")), b""),
    ("/deleted", "DELETE", 204, "No Content", (("X-Trace", "t1"),), b""),
    ("/cached", "GET", 304, "Not Modified", (("ETag", '"v1"'), ("Content-Length", "50")),
     b"a broken upstream sent this"),
]


async def write_cassette(path: Path, interactions: list[tuple[RecordedRequest, ResponseHead,
                                                             bytes]]) -> None:
    """A cassette of complete, clean interactions written by hand (one chunk per body)."""
    cassette = await Cassette.open_for_recording(path)
    try:
        for request, head, body in interactions:
            iid = cassette.allocate_id()
            await cassette.write(WriteBatch(
                starts=[InteractionStart(iid, time.time(), request)],
                heads=[HeadUpdate(iid, head, 1000, False)],
                chunks=[(iid, 0, 2000, body)] if body else [],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, 3000, None)],
            ))
        await cassette.finish_recording()
    finally:
        await cassette.close()


@pytest.mark.parametrize(("path", "method", "status", "reason", "headers", "body"), BODILESS,
                         ids=["head-chunked", "head-length", "204", "304-with-stray-bytes"])
async def test_bodiless_response_has_no_body_and_keeps_the_connection(
    tmp_path: Path, path: str, method: str, status: int, reason: str,
    headers: tuple[tuple[str, str], ...], body: bytes,
) -> None:
    """A HEAD response, a 204 and a 304 are a head alone: no body, no terminating chunk, no
    framing field; the next request on the same connection gets its answer right after."""
    from sse_recorder.replay.schedule import Timing
    from sse_recorder.replay.server import ReplayOptions, ReplayServer

    cassette = tmp_path / "bodiless.sqlite"
    await write_cassette(cassette, [
        (RecordedRequest(method, f"http://upstream.test{path}", ()),
         ResponseHead(status, reason, headers), body),
        (RecordedRequest("GET", "http://upstream.test/after", ()),
         ResponseHead(200, "OK", (("Content-Type", "application/json"),
                                  ("Content-Length", str(len(AFTER_BODY))))), AFTER_BODY),
    ])
    options = ReplayOptions(Timing(instant=True))
    async with await ReplayServer.open(str(cassette), options) as server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: upstream.test\r\n\r\n".encode())
            received = bytearray()
            while b"\r\n\r\n" not in received:
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, bytes(received)  # the server must not close after it
                received += data
            writer.write(b"GET /after HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n")
            while data := await asyncio.wait_for(reader.read(65536), 10):
                received += data
        finally:
            writer.close()
    first, _, rest = bytes(received).partition(b"\r\n\r\n")
    lines = first.decode("latin-1").split("\r\n")
    assert lines[0] == f"HTTP/1.1 {status} {reason}"
    fields = [line.split(": ", 1) for line in lines[1:]]
    assert [(k, v) for k, v in fields if k.lower() not in ("content-length",
                                                            "transfer-encoding")] == [
        (k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
    names = {k.lower() for k, _ in fields}
    assert not names & {"content-length", "transfer-encoding", "connection"}
    # Straight after the head: the second response, with nothing (no `0\r\n\r\n`) between,
    # saying the close its request asked for.
    assert rest == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 15\r\nConnection: close\r\n\r\n" + AFTER_BODY)
    # What a client makes of it: h11 reads both responses on one connection, cleanly.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target=path, headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(bytes(received))
    events = [client.next_event() for _ in range(2)]
    assert isinstance(events[0], h11.Response) and events[0].status_code == status
    assert isinstance(events[1], h11.EndOfMessage)
    client.start_next_cycle()
    client.send(h11.Request(method="GET", target="/after", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"")
    events = [client.next_event() for _ in range(3)]
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert [(s.method, s.target, s.status, s.outcome) for s in server.served] == [
        (method, path, status, "clean"), ("GET", "/after", 200, "clean")]


async def test_malformed_request_gets_a_400_and_the_close(recording: Recording) -> None:
    """The shared request reader's error: its status hint, a one-line reason, then the close."""
    from sse_recorder.replay.records import Answer
    from sse_recorder.replay.server import ReplayServer

    async with await ReplayServer.open(str(recording.path)) as server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), 10)  # to EOF: it closes
        finally:
            writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nConnection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body.startswith(b"sse-recorder: malformed HTTP request: ") and body.endswith(b"\n")
    [served] = server.served
    assert (served.status, served.answer, served.outcome) == (400, Answer.BAD_REQUEST, "clean")

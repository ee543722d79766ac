"""`sse-recorder replay`'s per-request log, as scripts and CI read it.

`--log-format json` writes each request's record (`Served.record()`) as one JSON line on
stderr, the same schema `--fault-log` writes; the default is a line to read, which names
the faults that fired. One cassette is recorded per module through a real
`sse-recorder record` in front of the demo upstream; each test starts its own replay.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sse_recorder.model import Outcome
from sse_recorder.replay.records import Answer, Served
from sse_recorder.wire.probe import probe
from tests.helpers import Process, RecordDemo
from tests.integration.support import Recording, replay_process, wait_for_line, wait_for_lines

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": "Say hello"}]}
DROP = "drop:after_events=1,route=GET */deploy"  # only /deploy is cut, after its first event


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    """#1 GET /ci/logs, #2 GET /deploy, #3 a streamed chat completion."""

    def traffic(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/ci/logs").status_code == 200
            assert client.get("/deploy").status_code == 200
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

    return Recording.read(record_demo("cli-recording", traffic))


@pytest.fixture
def replay(recording: Recording, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """`replay(*options)`: a new `sse-recorder replay --instant` process of the recording."""
    started: list[Process] = []

    def make(*options: str) -> Process:
        process = replay_process(recording.path, tmp_path / f"replay-{len(started)}.txt",
                                 "--instant", *options)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


async def test_json_log_format_writes_one_record_per_request(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    process = replay("--log-format", "json", "--fault", DROP)
    logs = recording.get("/ci/logs").interaction
    deploy = recording.get("/deploy").interaction
    chat = recording.get("/v1/chat/completions", "POST").interaction

    assert (await probe(process.url + "/ci/logs")).status == 200
    unmatched = await probe(process.url + "/v1/chat/completions", method="POST",
                            body=json.dumps({**CHAT, "model": "gpt-5"}).encode(),
                            headers=[("Content-Type", "application/json")])
    assert unmatched.status == 404
    dropped = await probe(process.url + "/deploy")
    assert dropped.status == 200 and dropped.outcome == "closed"

    lines = await wait_for_lines(process, '"number": ', count=3)
    records = [json.loads(line) for line in lines]
    assert [line for line in process.stderr().splitlines() if line.strip()] == lines
    for record in records:  # the record, and nothing but the record
        assert Served.from_record(record).record() == record
    matched, missing, faulted = (Served.from_record(record) for record in records)

    assert (matched.number, matched.method, matched.target, matched.interaction_id,
            matched.status, matched.outcome, matched.answer, matched.faults) == (
        0, "GET", "/ci/logs", logs.id, 200, Outcome.CLEAN, Answer.RECORDED, ())

    assert (missing.number, missing.method, missing.target, missing.interaction_id,
            missing.status, missing.answer) == (
        1, "POST", "/v1/chat/completions", None, 404, Answer.UNMATCHED)
    assert f"nearest recording: #{chat.id} POST {chat.request.url}" in missing.explanation
    assert 'differs in body field model: recorded "gpt-4o-mini", got "gpt-5"' in (
        missing.explanation)

    assert (faulted.number, faulted.target, faulted.interaction_id, faulted.status,
            faulted.outcome, faulted.answer) == (
        2, "/deploy", deploy.id, 200, Outcome.CLOSED, Answer.RECORDED)
    assert [fault["type"] for fault in faulted.faults] == ["drop"]


async def test_the_human_log_line_names_the_faults_that_fired(
    recording: Recording, replay: Callable[..., Process]
) -> None:
    process = replay("--fault", DROP)
    deploy = recording.get("/deploy").interaction
    assert (await probe(process.url + "/ci/logs")).outcome == "clean"
    assert (await probe(process.url + "/deploy")).outcome == "closed"
    line = await wait_for_line(process, "GET /deploy")
    assert line == f"GET /deploy -> #{deploy.id} 200, ended closed [faults: drop]"
    clean = await wait_for_line(process, "GET /ci/logs")
    assert "[faults" not in clean and clean.endswith("ended clean")
    assert not any(line.startswith("{") for line in process.stderr().splitlines())

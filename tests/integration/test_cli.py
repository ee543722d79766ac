"""What the CLI prints, as people and scripts read it.

- `replay`'s per-request log: `--log-format json` writes each request's record
  (`Served.record()`) as one JSON line on stderr, the same schema `--fault-log` writes; the
  default is a line to read, which names the faults that fired.
- `record`'s line per recorded interaction (upstream errors with what they likely mean) and
  its summary at stop.
- `show`: the request (headers, pretty JSON body) and event previews of what changes;
  `ls --json` and `show --json`, two documents; times in ISO 8601 with the local offset;
  tables with rich on a terminal, plain columns otherwise.

One cassette is recorded per module through a real `sse-recorder record` in front of the
demo upstream; each test starts its own processes.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from sse_recorder.cli.formats import local_time, size
from sse_recorder.model import Outcome
from sse_recorder.replay.records import Answer, Served
from sse_recorder.wire.probe import probe
from tests.helpers import SSE_RECORDER, Process, RecordDemo, RecorderFactory
from tests.integration.support import (
    Recording,
    load,
    replay_process,
    target_of,
    wait_for_line,
    wait_for_lines,
)
from tests.integration.test_record_tls import tls_upstream, upstream_cert  # noqa: F401

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": "Say hello"}]}
DROP = "drop:after_event=1,route=GET */deploy"  # only /deploy is cut, after its first event


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    """#1 GET /ci/logs, #2 GET /deploy, #3 a streamed chat completion, #4 a JSON answer."""

    def traffic(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/ci/logs").status_code == 200
            assert client.get("/deploy").status_code == 200
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            assert client.get("/v1/models").status_code == 200

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


# -- record: a line per interaction, a summary at stop ----------------------------------------

RECORDED = re.compile(r"#(\d+) (\S+) (\S+) -> (\S+(?: response)?), (.*), ended (\S+?)(?::|$)")


def closed_port() -> int:
    """A loopback port nothing listens on: connecting there is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_record_prints_each_interaction_and_a_summary(
    recorder: RecorderFactory, demo_upstream: str, tmp_path: Path
) -> None:
    proxy = recorder()  # a regular proxy: the client names each upstream
    refused = f"http://127.0.0.1:{closed_port()}/v1/models"
    with httpx.Client(proxy=proxy.url, timeout=10) as client:
        assert client.get(demo_upstream + "/ci/logs").status_code == 200
        assert client.get(demo_upstream + "/v1/models").status_code == 200
        assert client.get(refused).status_code == 502
    lines = await wait_for_lines(proxy, " -> ", count=3)
    assert proxy.stop() == 0, proxy.stderr()

    recorded = {r.interaction.id: r for r in await load(tmp_path / "cassette.sqlite")}
    assert len(recorded) == 3
    for line in lines:
        found = RECORDED.match(line)
        assert found, line
        iid, method, url, status, body, outcome = found.groups()
        interaction = recorded[int(iid)].interaction
        assert (method, url, outcome) == ("GET", interaction.request.url,
                                          interaction.outcome.value)
        if interaction.response is None:
            assert status == "no response" and url == refused
            assert outcome == "proxy-error" and interaction.error
            assert line.endswith(f": {interaction.error} (nothing answers there: is the "
                                 "upstream running?)")
        else:
            assert status == str(interaction.response.status)
            events = (f"{interaction.event_count} events in " if interaction.event_count
                      else "")
            assert body.startswith(f"{events}{interaction.chunk_count} chunk")
    assert [RECORDED.match(line).group(3) for line in lines] == [  # type: ignore[union-attr]
        demo_upstream + "/ci/logs", demo_upstream + "/v1/models", refused]
    assert proxy.stderr().strip().splitlines()[-1] == (
        f"recorded 3 interactions into {tmp_path / 'cassette.sqlite'}: 2 clean, "
        "1 proxy-error; 1 without a response")


async def test_record_names_an_untrusted_upstream_certificate(
    recorder: RecorderFactory, tls_upstream: str  # noqa: F811
) -> None:
    proxy = recorder("--reverse", tls_upstream)  # self-signed, and no --ssl-insecure
    with httpx.Client(timeout=10) as client:
        assert client.get(proxy.url + "/v1/models").status_code == 502
    line = await wait_for_line(proxy, " -> ")
    assert line.startswith("#1 GET ") and "-> no response" in line, line
    assert "ended proxy-error: " in line and "certificate" in line.lower()
    assert line.endswith("(the upstream's TLS certificate is not trusted: --ssl-insecure "
                         "skips the check)")
    assert proxy.stop() == 0


async def test_record_names_an_upstream_that_refuses_before_any_request(
    recorder: RecorderFactory, tmp_path: Path
) -> None:
    """Reverse mode connects as the client does: the refusal reaches no flow to record."""
    port = closed_port()
    proxy = recorder("--reverse", f"http://127.0.0.1:{port}")
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.HTTPError):
        client.get(proxy.url + "/v1/models").raise_for_status()
    line = await wait_for_line(proxy, "cannot reach")
    assert line.startswith(f"cannot reach the upstream 127.0.0.1:{port}: ")
    assert line.endswith("(nothing answers there: is the upstream running?)")
    assert proxy.stop() == 0, proxy.stderr()
    assert proxy.stderr().strip().splitlines()[-1] == (
        f"recorded nothing (no cassette written at {tmp_path / 'cassette.sqlite'}); "
        "the upstream could not be reached 1 time")


def test_record_that_recorded_nothing_says_so_and_leaves_no_file(
    recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder()
    assert proxy.stop(signal.SIGINT) == 0, proxy.stderr()
    assert proxy.stderr().strip().splitlines()[-1] == (
        f"recorded nothing (no cassette written at {tmp_path / 'cassette.sqlite'})")
    assert not list(tmp_path.glob("cassette.sqlite*"))


# -- show, ls: for a reader and for a script ------------------------------------------------


def run_cli(*args: str) -> str:
    done = subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def test_show_has_the_request_and_previews_what_changes(recording: Recording) -> None:
    chat = recording.get("/v1/chat/completions", "POST")
    interaction = chat.interaction
    out = run_cli("show", str(recording.path), str(interaction.id))
    lines = out.splitlines()
    assert lines[0] == f"#{interaction.id} POST {interaction.request.url} -> 200 OK"
    assert lines[1].startswith(f"  started {local_time(interaction.started_at)}, head after ")
    assert re.search(r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d,",
                     lines[1])
    # the request as matching compares it: headers, and the body as pretty JSON
    assert "  request headers:" in lines and "    content-type: application/json" in [
        line.lower() for line in lines]
    body = lines.index(f"  request body (JSON), {size(len(interaction.request.body))}:")
    pretty = json.dumps(json.loads(interaction.request.body), indent=2).splitlines()
    assert lines[body + 1: body + 1 + len(pretty)] == ["    " + line for line in pretty]
    # each event previewed by the fields that change: the text, not the constant prefix
    previews = [line.split(": ", 1)[1] for line in lines if line.lstrip().startswith("event")]
    assert len(previews) == interaction.event_count
    assert not any("chatcmpl" in preview for preview in previews)
    texts = [json.loads(e.data)["choices"][0]["delta"].get("content")
             for e in chat.events if e.kind == "event" and e.data.startswith("{")]
    shown = [re.search(r'(?:^|, )content=("(?:[^"\\]|\\.)*")', preview) for preview in previews]
    assert [json.loads(found.group(1)) if found else None for found in shown][:len(texts)] == texts
    assert previews[-1] == "[DONE]"


def test_show_prints_a_json_response_body_pretty(recording: Recording) -> None:
    models = recording.get("/v1/models")
    lines = run_cli("show", str(recording.path), str(models.interaction.id)).splitlines()
    assert "  request body: none" in lines
    start = lines.index(f"  response body (JSON), {size(len(models.body))}:")
    pretty = json.dumps(json.loads(models.body), indent=2).splitlines()
    assert lines[start + 1: start + 1 + len(pretty)] == ["    " + line for line in pretty]
    assert lines[-2] == "  timeline (ms from the request):"
    assert re.fullmatch(rf" +[\d.]+  chunk 0 +{size(len(models.body))}  .*", lines[-1])


def test_ls_json_is_a_summary_and_show_json_the_full_timeline(recording: Recording) -> None:
    listed = json.loads(run_cli("ls", str(recording.path), "--json"))
    shown = json.loads(run_cli("show", str(recording.path), "--json"))
    assert listed != shown
    assert listed["cassette"] == shown["cassette"] == str(recording.path)
    summary_keys = {"id", "method", "url", "status", "content_type", "sse", "started_at",
                    "head_ms", "duration_ms", "chunk_count", "event_count", "body_size",
                    "complete", "outcome", "error"}
    for summary, full, item in zip(listed["interactions"], shown["interactions"],
                                   recording.items, strict=True):
        interaction = item.interaction
        assert set(summary) == summary_keys
        assert {k: full[k] for k in summary_keys} == summary
        assert set(full) - summary_keys == {"request", "response", "chunks", "events"}
        started = datetime.fromisoformat(summary["started_at"])
        assert started.utcoffset() == datetime.now().astimezone().utcoffset()
        assert abs(started.timestamp() - interaction.started_at) < 0.001
        assert summary["duration_ms"] == round(interaction.end_offset_ns / 1e6, 3)
        assert (summary["id"], summary["outcome"], summary["error"], summary["event_count"],
                summary["chunk_count"]) == (
            interaction.id, interaction.outcome.value, interaction.error,
            interaction.event_count, len(full["chunks"]))
        request = full["request"]
        assert base64.b64decode(request["body"]["base64"]) == interaction.request.body
        assert request["body"]["text"] == interaction.request.body.decode()
        assert b"".join(base64.b64decode(c["base64"]) for c in full["chunks"]) == item.body
        assert [e["data"] for e in full["events"]] == [e.data for e in item.events]


def test_ls_is_plain_when_piped_and_a_rich_table_on_a_terminal(recording: Recording) -> None:
    piped = run_cli("ls", str(recording.path)).splitlines()
    assert piped[0].split() == ["ID", "METHOD", "URL", "STATUS", "TYPE", "EVENTS", "CHUNKS",
                                "SIZE", "STARTED", "DURATION", "END"]
    assert "\x1b[" not in "\n".join(piped)
    rows = [line.split() for line in piped[1:] if line[:1].isdigit()]
    assert [(row[0], row[2], row[-1]) for row in rows] == [
        (str(r.interaction.id), r.interaction.request.url, r.interaction.outcome.value)
        for r in recording.items]

    terminal = {**{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")},
                "COLUMNS": "250", "TERM": "xterm-256color"}
    leader, follower = pty.openpty()
    with subprocess.Popen([SSE_RECORDER, "ls", str(recording.path)], stdout=follower,
                          stderr=subprocess.PIPE, env=terminal) as ls:
        os.close(follower)
        output = b""
        while True:
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not piece:
                break
            output += piece
        assert ls.wait(30) == 0
    os.close(leader)
    text = output.decode()
    assert "\x1b[" in text  # styled for a terminal
    for item in recording.items:
        assert target_of(item.interaction) in text

"""The control API of a real `sse-recorder replay --control-port` process, driven by httpx
and by a plain bash + curl script, as a harness in another language would drive it.

One recording per module (a real `sse-recorder record` in front of the demo upstream); every
test starts its own replay process. A fault added through the API applies to the next
response and, removed, no longer; a stream under way keeps the faults it started with; the
served records come back from a cursor, and `wait=` returns as soon as one arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sse_recorder.errors import ConfigError
from sse_recorder.faults import parse_spec
from tests.helpers import SSE_RECORDER, Process, RecordDemo, read_line, start
from tests.integration.support import Recording, events_of, in_thread

pytestmark = pytest.mark.integration

TICKS = "/ticks?n=10&interval_ms=20"  # 10 events with ids, 20 ms apart (chunked)
ENV = {**os.environ, "SSE_RECORDER_WORKERS": "1"}  # the control API needs one process


async def _traffic(url: str) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + TICKS)).status_code == 200


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    recording = Recording.read(record_demo("control-recording",
                                           lambda url: in_thread(_traffic(url))))
    assert len(recording.items) == 1
    return recording


class Replay:
    """A running replay process with its control API's URL (its second stdout line)."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.url = process.url
        line = read_line(process.popen, 10)
        assert line.startswith("control API: http://127.0.0.1:"), line
        self.control = line.removeprefix("control API: ")


@pytest.fixture
def replay(recording: Recording, tmp_path: Path) -> Iterator[Callable[..., Replay]]:
    started: list[Process] = []

    def make(*options: str) -> Replay:
        process = start([SSE_RECORDER, "replay", str(recording.path), "--listen-port", "0",
                         "--control-port", "0", *options],
                        tmp_path / f"replay-{len(started)}.txt", env=ENV)
        started.append(process)
        return Replay(process)

    yield make
    for process in started:
        process.stop()


async def ticks_seen(url: str) -> tuple[list[int], str]:
    """The event ids an httpx client got, and how the stream ended for it."""
    data = b""
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            async with client.stream("GET", url + TICKS) as response:
                async for chunk in response.aiter_bytes():
                    data += chunk
        except httpx.RemoteProtocolError:
            return _ids(data), "cut"
    return _ids(data), "complete"


def _ids(data: bytes) -> list[int]:
    """The recorded events' ids (an injected event has none)."""
    return [int(e.id) for e in events_of(data) if e.id is not None]


# -- httpx -------------------------------------------------------------------------------------


async def test_faults_added_and_removed_while_it_runs(replay: Callable[..., Replay]) -> None:
    server = replay("--instant", "--fault", "retry:value=1500")
    async with httpx.AsyncClient(base_url=server.control, timeout=10) as api:
        index = (await api.get("/")).json()
        assert index["replay"] == server.url and index["faults"] == 1
        assert "POST /faults" in index["endpoints"] and "GET /served" in index["endpoints"]
        listed = (await api.get("/faults")).json()
        assert listed == {"seed": 0, "faults": [{
            "id": 1, "spec": "retry:value=1500", "type": "retry", "route": None, "p": 1.0,
            "per": "connection", "on_resume": "fresh"}]}

        assert await ticks_seen(server.url) == (list(range(10)), "complete")
        added = await api.post("/faults", content="drop:after_event=3,how=fin")
        assert added.status_code == 201
        assert added.json()["id"] == 2 and added.json()["warnings"] == []
        assert await ticks_seen(server.url) == ([0, 1, 2], "cut")  # the next response
        assert await ticks_seen(server.url) == ([0, 1, 2], "cut")  # and every one after
        table = await api.post("/faults", json={"type": "inject", "after_event": 1,
                                                "shape": "status", "route": "*/ticks"})
        assert table.status_code == 201
        assert table.json()["spec"] == "inject:after_event=1,shape=status,route=*/ticks"
        removed = await api.delete("/faults/2")
        assert removed.status_code == 200 and removed.json()["removed"]["id"] == 2
        assert [f["id"] for f in (await api.get("/faults")).json()["faults"]] == [1, 3]
        assert await ticks_seen(server.url) == (list(range(10)), "complete")
        cleared = await api.delete("/faults")
        assert [f["id"] for f in cleared.json()["removed"]] == [1, 3]
        assert (await api.get("/faults")).json()["faults"] == []

        served = (await api.get("/served")).json()
        assert [r["seq"] for r in served["records"]] == [0, 1, 2, 3]
        assert served["next"] == 4 and served["missed"] == 0
        fired = [sorted(f["type"] for f in r["faults"]) for r in served["records"]]
        assert fired == [["retry"], ["drop", "retry"], ["drop", "retry"],
                         ["inject", "retry"]]
        assert [r["outcome"] for r in served["records"]] == ["clean", "closed", "closed",
                                                             "clean"]
        tail = (await api.get("/served", params={"since": 3})).json()
        assert [r["seq"] for r in tail["records"]] == [3] and tail["next"] == 4
        limited = (await api.get("/served", params={"since": 1, "limit": 2})).json()
        assert [r["seq"] for r in limited["records"]] == [1, 2] and limited["next"] == 3


async def test_a_stream_under_way_keeps_its_faults(replay: Callable[..., Replay]) -> None:
    """A fault added while a response plays applies from the next response on."""
    server = replay("--speed", "1")
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", server.url + TICKS) as response:
            chunks = response.aiter_bytes()
            first = await anext(chunks)  # the stream is under way
            added = await client.post(server.control + "/faults",
                                      content="drop:after_event=1")
            assert added.status_code == 201
            rest = b"".join([chunk async for chunk in chunks])
        assert [e.id for e in events_of(first + rest)] == [str(i) for i in range(10)]
    assert await ticks_seen(server.url) == ([0], "cut")


async def test_served_wait_returns_when_a_record_arrives(replay: Callable[..., Replay]) -> None:
    server = replay("--speed", "1")
    async with httpx.AsyncClient(base_url=server.control, timeout=10) as api:
        started = time.monotonic()
        empty = (await api.get("/served", params={"since": 0, "wait": "150ms"})).json()
        assert empty == {"records": [], "next": 0, "missed": 0}
        assert 0.14 <= time.monotonic() - started < 2.0  # it waited, then gave up

        waiting = asyncio.create_task(api.get("/served", params={"since": 0, "wait": "20s"}))
        streamed = asyncio.create_task(ticks_seen(server.url))
        got = (await waiting).json()
        ended = time.monotonic()
        assert await streamed == (list(range(10)), "complete")
        assert [r["seq"] for r in got["records"]] == [0] and got["next"] == 1
        assert got["records"][0]["target"] == TICKS and got["records"][0]["status"] == 200
        assert ended - started < 10  # back when the stream ended (~0.2 s), not after 20 s


async def test_bad_requests_are_4xx_with_the_reason(replay: Callable[..., Replay]) -> None:
    server = replay("--instant")
    spec = "drop:after_evnt=3"
    with pytest.raises(ConfigError) as cli:
        parse_spec(spec)
    async with httpx.AsyncClient(base_url=server.control, timeout=10) as api:
        cases: list[tuple[httpx.Response, int, str]] = [
            (await api.post("/faults", content=spec), 400, str(cli.value)),
            (await api.post("/faults", json={"spec": spec}), 400, str(cli.value)),
            (await api.post("/faults", content=""), 400, "no fault given"),
            (await api.post("/faults", content="{not json"), 400, "not valid JSON"),
            (await api.post("/faults", json=[1]), 400, "a fault table with a type"),
            (await api.post("/faults", json={"type": "slow_close"}), 400,
             "slow_close: slow_close needs delay= > 0"),
            (await api.post("/faults", content=b"\xff"), 400, "not UTF-8"),
            (await api.delete("/faults/7"), 404, "no fault 7 (the faults in play: none)"),
            (await api.get("/faults/x"), 404, "faults are named by their id"),
            (await api.get("/toxics"), 404, "no such endpoint /toxics; the API has GET /"),
            (await api.put("/faults"), 405, "/faults takes GET, POST, DELETE, not PUT"),
            (await api.get("/served", params={"since": "-1"}), 400, "since= is a whole"),
            (await api.get("/served", params={"wait": "forever"}), 400, "bad duration"),
            (await api.get("/served", params={"wait": "10m"}), 400, "wait= is at most 300s"),
            (await api.get("/faults", headers={"Origin": "https://example.com"}), 403,
             "does not answer web pages"),
            (await api.get("/faults", headers={"Host": "evil.example:80"}), 403,
             "Host evil.example is not a loopback name"),
        ]
        for response, status, message in cases:
            document = response.json()
            assert response.status_code == status, document
            assert message in document["error"] and "\n" not in document["error"]
            assert response.headers["content-type"] == "application/json"
        assert cases[10][0].headers["allow"] == "GET, POST, DELETE"
        assert (await api.get("/faults")).json()["faults"] == []  # nothing half-added
        unreachable = (await api.post("/faults", content="refuse:route=*/nowhere")).json()
        assert "never matches" in unreachable["warnings"][0]
    # Not HTTP at all: a 400 and the close, and the API goes on answering.
    host, port = server.control.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"NOT HTTP\r\n\r\n")
        answer = raw.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(server.control + "/faults")).status_code == 200


def test_control_options_are_checked_before_listening(recording: Recording) -> None:
    with socket.socket() as taken:  # a port something else listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--control-host", "0.0.0.0", "--control-port", "0"],
             "--control-host 0.0.0.0 is not a loopback address"),
            (["--control-host", "127.0.0.1"], "--control-host needs --control-port"),
            (["--control-allow-remote"], "--control-allow-remote needs --control-port"),
            (["--control-port", "0", "--workers", "2"], "--control-port needs one process"),
            (["--control-port", str(port)],
             f"sse-recorder: control API: cannot listen on 127.0.0.1:{port}: address already "
             "in use: something else listens there: choose another --control-port (0 picks "
             "a free one)"),
        ]
        runs = [subprocess.Popen([SSE_RECORDER, "replay", str(recording.path),
                                  "--listen-port", "0", *options], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                 env=ENV)
                for options, _ in cases]  # at once: each is a whole interpreter start
        for run, (options, message) in zip(runs, cases, strict=True):
            stdout, stderr = run.communicate(timeout=30)
            lines = stderr.splitlines()
            assert run.returncode == 2 and stdout == "", (options, stderr)
            assert len(lines) == 1 and message in lines[0], (options, lines)


async def test_the_control_api_in_proxy_mode(recording: Recording, tmp_path: Path,
                                             mitm_confdir: Path) -> None:
    """With --proxy, the control line comes after the proxy's three lines, and a fault added
    through it reaches a client of the proxy."""
    process = start([SSE_RECORDER, "replay", str(recording.path), "--proxy", "--listen-port",
                     "0", "--confdir", str(mitm_confdir), "--control-port", "0"],
                    tmp_path / "proxy.txt", env=ENV)
    try:
        lines = [read_line(process.popen, 10) for _ in range(3)]
        assert lines[0].startswith("set HTTPS_PROXY=") and "CA certificate" in lines[1]
        control = lines[2].removeprefix("control API: ")
        assert control.startswith("http://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(mitm_confdir / "mitmproxy-ca-cert.pem"))
        async with httpx.AsyncClient(timeout=10) as api:
            added = await api.post(control + "/faults", content="http:status=503")
            assert added.status_code == 201
        async with httpx.AsyncClient(proxy=process.url, verify=context, timeout=10) as client:
            response = await client.get("https://api.example.com" + TICKS)
        assert response.status_code == 503
        async with httpx.AsyncClient(timeout=10) as api:
            served = (await api.get(control + "/served")).json()["records"]
        assert [(r["status"], r["answer"]) for r in served] == [(503, "fault")]
    finally:
        process.stop()


# -- curl --------------------------------------------------------------------------------------


CURL_SCRIPT = r"""
set -u
control=$1 replay=$2 out=$3
curl -sS "$replay$TICKS" > "$out/before.txt"
curl -sS -X POST --data-binary 'drop:after_event=3' "$control/faults" > "$out/added.json"
id=$(grep -o '"id": [0-9]*' "$out/added.json" | grep -o '[0-9]*$')
curl -sS "$replay$TICKS" > "$out/during.txt"
echo "during exit $?" > "$out/during-exit.txt"
curl -sS -X DELETE "$control/faults/$id" > "$out/removed.json"
curl -sS "$replay$TICKS" > "$out/after.txt"
curl -sS -o "$out/bad.json" -w '%{http_code}' -X POST --data-binary 'drop:after_evnt=3' \
    "$control/faults" > "$out/bad-status.txt"
curl -sS "$control/served?since=0" > "$out/served.json"
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_curl_script_drives_a_fault_in_and_out(replay: Callable[..., Replay],
                                                 tmp_path: Path) -> None:
    server = replay("--instant")
    script = tmp_path / "drive.sh"
    script.write_text(CURL_SCRIPT)
    run = subprocess.run(["bash", str(script), server.control, server.url, str(tmp_path)],
                         capture_output=True, text=True, timeout=60,
                         env={**ENV, "TICKS": TICKS})
    assert run.returncode == 0, run.stderr

    def ids(name: str) -> list[str | None]:
        return [e.id for e in events_of((tmp_path / name).read_bytes())]

    def document(name: str) -> Any:
        return json.loads((tmp_path / name).read_text())

    assert ids("before.txt") == [str(i) for i in range(10)]
    assert ids("during.txt") == ["0", "1", "2"]  # the fault applied to the next response
    assert (tmp_path / "during-exit.txt").read_text().strip() == "during exit 18"  # cut short
    assert ids("after.txt") == [str(i) for i in range(10)]  # removed: no longer
    assert document("added.json")["spec"] == "drop:after_event=3"
    assert document("removed.json")["removed"]["id"] == document("added.json")["id"]
    assert (tmp_path / "bad-status.txt").read_text() == "400"
    assert "did you mean after_event?" in document("bad.json")["error"]
    served = document("served.json")["records"]
    assert [(r["outcome"], [f["type"] for f in r["faults"]]) for r in served] == [
        ("clean", []), ("closed", ["drop"]), ("clean", [])]

"""`sse-recorder diff` on real recordings.

Two recordings of the demo upstream through the real recorder must be alike; a stream
whose upstream renamed a field, added an event type, dropped one and doubled its time to
first byte must give exactly those four findings. That upstream is a small one of this
module on 127.0.0.1, switched between two versions, recorded through the real recorder
(so the time to first byte is the one the recorder measured, not one written by hand).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sse_recorder.cli import main
from sse_recorder.sse import encode_event
from sse_recorder.wire.probe import probe
from tests.helpers import SSE_RECORDER, RecordDemo, record_args, start
from tests.integration.support import in_thread

pytestmark = pytest.mark.integration

CHAT = json.dumps({"model": "gpt-4o-mini", "stream": True,
                   "messages": [{"role": "user", "content": "Say hello"}]}).encode()
DEMO_TRAFFIC: list[tuple[str, str, bytes]] = [
    ("GET", "/v1/models", b""), ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/ci/logs", b""), ("GET", "/heartbeat", b""), ("GET", "/reset", b""),
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own."""
    return subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True, timeout=60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (click's runner, on a thread: an event loop may be
    running on this one), without an interpreter start per call."""
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, main, list(args)).result()
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def demo_traffic(url: str) -> None:
    async def go() -> None:
        for method, path, body in DEMO_TRAFFIC:
            headers = [("Content-Type", "application/json")] if body else []
            await probe(url + path, method=method, body=body, headers=headers)

    in_thread(go())


# -- a small upstream whose stream changes between two versions -----------------------------

VERSIONS: dict[int, dict[str, Any]] = {
    # time to first byte, then the events, one every 40 ms
    1: {"ttfb": 0.15, "events": [("status", {"state": "started"})]
        + [("delta", {"index": n, "text": "w"}) for n in range(10)]
        + [("done", {"reason": "stop"})]},
    # `text` renamed `content`, `usage` added, `status` dropped, time to first byte doubled
    2: {"ttfb": 0.30, "events": [("delta", {"index": n, "content": "w"}) for n in range(10)]
        + [("usage", {"tokens": 10}), ("done", {"reason": "stop"})]},
}
INTERVAL = 0.04


class Versioned:
    """An HTTP/1.1 SSE upstream on 127.0.0.1 in a thread; `version` picks the stream."""

    def __init__(self) -> None:
        self.version = 1
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        chosen = VERSIONS[self.version]
        await asyncio.sleep(chosen["ttfb"])  # the upstream's think time, not a sync
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        for n, (kind, data) in enumerate(chosen["events"]):
            if n:
                await asyncio.sleep(INTERVAL)
            event = encode_event(json.dumps(data), event=kind)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def drifted(mitm_confdir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Path, Path]]:
    """The versioned stream recorded twice through a real recorder, version 1 then 2."""
    upstream = Versioned()
    workdir = tmp_path_factory.mktemp("drift")
    paths = []
    try:
        for version in (1, 2):
            upstream.version = version
            path = workdir / f"v{version}.sqlite"
            proxy = start(record_args(path, mitm_confdir, "--reverse", upstream.url),
                          workdir / f"recorder-{version}.txt")
            try:
                in_thread(probe(proxy.url + "/v1/stream"))
            finally:
                assert proxy.stop() == 0, proxy.stderr()
            paths.append(path)
    finally:
        upstream.stop()
    yield paths[0], paths[1]


@pytest.fixture(scope="module")
def demo_twice(record_demo: RecordDemo) -> tuple[Path, Path]:
    return record_demo("diff-a", demo_traffic), record_demo("diff-b", demo_traffic)


def test_two_recordings_of_the_same_upstream_are_alike(demo_twice: tuple[Path, Path]) -> None:
    a, b = demo_twice
    done = cli("diff", str(a), str(b), "--json")
    document = json.loads(done.stdout)
    assert document["findings"] == 0, done.stdout
    assert done.returncode == 0
    assert [(p["a"], p["b"]) for p in document["pairs"]] == [(n, n) for n in range(1, 6)]
    text = run("diff", str(a), str(b))
    assert text.returncode == 0
    assert text.stdout.splitlines()[-1] == "no drift: 5 pairs alike within the thresholds"


def test_a_recording_against_itself_has_no_findings(demo_twice: tuple[Path, Path]) -> None:
    for pair_by in ("match", "id"):
        done = cli("diff", str(demo_twice[0]), str(demo_twice[0]), "--pair-by", pair_by, "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["findings"] == 0


def test_the_four_drifts_are_exactly_four_findings(
        drifted: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = drifted
    page = tmp_path / "diff.html"
    done = run("diff", str(a), str(b), "--json", "--html", str(page))
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    (pair,) = document["pairs"]
    found = {f["kind"]: f for f in pair["findings"]}
    assert sorted(found) == ["field-renamed", "timing", "type-added", "type-removed"]
    assert len(pair["findings"]) == 4
    assert (found["field-renamed"]["type"], found["field-renamed"]["path"],
            found["field-renamed"]["now_path"]) == ("delta", "$.text", "$.content")
    assert found["type-added"]["type"] == "usage" and found["type-removed"]["type"] == "status"
    timing = found["timing"]
    assert timing["metric"] == "ttfb"
    assert 1.6 < timing["now_ms"] / timing["was_ms"] < 2.4  # 150 ms -> 300 ms, as measured
    assert all(f["a"] == 1 and f["b"] == 1 and f["message"] for f in pair["findings"])
    text = page.read_text()
    assert text.count('class="finding-kind">') >= 4 and "field-renamed" in text
    plain = cli("diff", str(a), str(b))
    assert plain.returncode == 1
    assert plain.stdout.splitlines()[-1] == "4 findings in 1 of 1 pairs"
    # thresholds are settable: a loose ttfb threshold leaves three findings
    loose = cli("diff", str(a), str(b), "--json", "--threshold", "ttfb=3")
    assert loose.returncode == 1 and json.loads(loose.stdout)["findings"] == 3


def test_only_one_side(drifted: tuple[Path, Path], demo_twice: tuple[Path, Path]) -> None:
    done = cli("diff", str(drifted[0]), str(demo_twice[0]), "--json")
    assert done.returncode == 1
    kinds = [f["kind"] for p in json.loads(done.stdout)["pairs"] for f in p["findings"]]
    assert kinds == ["only-in-a"] + ["only-in-b"] * 5


@pytest.mark.parametrize("argv, message", [
    (("{cassette}", "{tmp}/missing.sqlite"), "missing.sqlite: no such cassette"),
    (("{garbage}", "{cassette}"), "garbage.sqlite: not"),
    (("{cassette}", "{cassette}", "--threshold", "ttfb=fast"), "bad --threshold 'ttfb=fast'"),
    (("{cassette}", "{cassette}", "--threshold", "speed=2"), "METRIC one of ttfb"),
    (("{cassette}", "{cassette}", "--pair-by", "id", "--match", "path"), "--pair-by id"),
    (("{cassette}", "{cassette}", "--match", "colour"), "bad --match part 'colour'"),
    (("{cassette}", "{cassette}", "--html", "{tmp}/no/dir/d.html"), "cannot write"),
])
def test_bad_input_is_one_line_and_exit_2(argv: tuple[str, ...], message: str,
                                          drifted: tuple[Path, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00garbage" * 500)
    filled = [a.format(tmp=tmp_path, cassette=drifted[0], garbage=garbage) for a in argv]
    done = cli("diff", *filled)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sse-recorder: ")
    assert message.format(tmp=tmp_path) in done.stderr

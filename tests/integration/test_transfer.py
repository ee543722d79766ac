"""`sse-recorder export` / `import` and `replay FILE.sse`, with real processes on 127.0.0.1.

- the demo cassette (recorded through a real `sse-recorder record` in front of the demo
  upstream) survives cassette -> FORMAT -> cassette byte for byte, for every format;
- a HAR written by mitmproxy's own `hardump` and flow files written by a real `mitmdump -w`
  of a streamed SSE response import: buffered, streamed (body not stored: head only, a
  warning, `closed`) and streamed with `store_streamed_bodies`;
- a hand-written `.sse` file replayed to the openai SDK and to httpx-sse gives the events
  and the gaps the file says;
- bad input is one line naming the place, exit 2, and nothing is written.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from httpx_sse import aconnect_sse

from sse_recorder.cli import main
from sse_recorder.demo.upstream import ticks_writes
from sse_recorder.demo.walkthrough import REQUESTS
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.transfer.exchange import Exchange
from sse_recorder.transfer.formats import FORMATS as TRANSFER_FORMATS
from sse_recorder.wire.probe import probe
from tests.helpers import MITMDUMP, REPO, SSE_RECORDER, RecordDemo
from tests.integration.support import CHAT, Recorded, in_thread, load, replay_process, retrying
from tests.integration.test_mitmdump_addon import Mitmdump, launch

pytestmark = pytest.mark.integration

CASSETTES = REPO / "cassettes"
FORMATS = ("har", "flows", "sse", "jsonl")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own."""
    return subprocess.run([SSE_RECORDER, *map(str, args)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The same command in this process (click's runner, on a thread: an event loop may be
    running on this one), without an interpreter start per call."""
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, main, list(map(str, args))).result()
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_same(first: list[Recorded], second: list[Recorded]) -> None:
    """Byte for byte: chunks with their offsets, heads, endings, events."""
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert b.interaction.request == a.interaction.request
        assert b.interaction.response == a.interaction.response
        assert b.chunks == a.chunks
        assert b.events == a.events
        for name in ("head_offset_ns", "is_sse", "complete", "outcome", "end_offset_ns",
                     "error"):
            assert getattr(b.interaction, name) == getattr(a.interaction, name), name


# -- the demo cassette, through every format ---------------------------------------------------


@pytest.fixture(scope="module")
def demo_cassette(record_demo: RecordDemo) -> Path:
    async def traffic(url: str) -> None:
        for r in REQUESTS:
            await probe(url + r.path, method=r.method, body=r.body, headers=list(r.headers))

    return record_demo("transfer-demo", lambda url: in_thread(traffic(url)))


@pytest.mark.parametrize("name", FORMATS)
def test_the_demo_cassette_round_trips_byte_for_byte(
    name: str, demo_cassette: Path, tmp_path: Path
) -> None:
    exported = tmp_path / f"demo.{name}"
    done = (run if name == "sse" else cli)(  # one format through the installed command
        "export", demo_cassette, "--format", name, "-o", exported)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"exported {len(REQUESTS)} interactions to {exported} ({name})\n"
    back = tmp_path / "back.sqlite"
    done = (run if name == "sse" else cli)(  # the format guessed from the content
        "import", exported, "-o", back)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"imported {len(REQUESTS)} interactions from {exported} into {back}")
    first, second = in_thread(load(demo_cassette)), in_thread(load(back))
    assert {r.interaction.outcome for r in first} >= {Outcome.CLEAN, Outcome.RESET}
    assert_same(first, second)


@pytest.mark.parametrize("command", [("export", "--format", "sse", "-o"), ("report", "-o")],
                         ids=["export", "report"])
def test_an_output_that_is_no_regular_file_is_written_not_replaced(
    command: tuple[str, ...], demo_cassette: Path, tmp_path: Path
) -> None:
    """`-o /dev/null` (or a FIFO) is written into: renaming the finished file over it, as
    for a regular file, replaced a root user's /dev/null with a plain file."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    holder = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # no end of input before it closes
    with ThreadPoolExecutor(1) as pool:
        received = pool.submit(_drain, reader)
        done = run(command[0], demo_cassette, *command[1:], fifo)
        os.close(holder)
        got = received.result(60)
    os.close(reader)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO
    assert got and [p.name for p in tmp_path.iterdir()] == ["out.fifo"]  # nothing beside it
    if command[0] == "report":  # a page of its own moment: whole, not byte-equal
        assert got.startswith(b"<!DOCTYPE html>") and got.endswith(b"</html>\n")
    else:
        assert run(command[0], demo_cassette, *command[1:], tmp_path / "whole").returncode == 0
        assert got == (tmp_path / "whole").read_bytes()


def _drain(fd: int) -> bytes:
    """Everything read from a non-blocking pipe until its end of input."""
    got = bytearray()
    while True:
        select.select([fd], [], [], 1.0)
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not data:
            return bytes(got)
        got += data


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_export_to_a_full_stdout_fails_in_one_line(demo_cassette: Path) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run([SSE_RECORDER, "export", str(demo_cassette), "--format", "har"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "sse-recorder: cannot write to standard output: No space left on device"]


def test_export_chooses_interactions_and_writes_to_stdout(demo_cassette: Path) -> None:
    done = cli("export", demo_cassette, "--format", "jsonl", "3", "1")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    urls = [r["url"] for r in records if r["record"] == "interaction"]
    assert [u.rsplit("/", 2)[-2:] for u in urls] == [["v1", "messages"], ["v1", "models"]]
    chunks = [r for r in records if r["record"] == "chunk"]
    events = [r for r in records if r["record"] == "event"]
    assert chunks and events and all(r["interaction"] in (1, 2) for r in chunks + events)


# -- mitmproxy's own files: hardump and mitmdump -w ---------------------------------------------


TICKS = "/ticks?n=6&interval_ms=30"
TICKS_RESET = "/ticks?n=3&interval_ms=10&end=reset"


def _mitmdump(confdir: Path, upstream: str, workdir: Path, *sets: str) -> Mitmdump:
    args = [MITMDUMP, "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={confdir}",
            "--mode", f"reverse:{upstream}", "-w", str(workdir / "flows"),
            "--set", f"hardump={workdir / 'dump.har'}"]
    for option in sets:
        args += ["--set", option]
    return launch(args, workdir / "mitmdump.txt")


@pytest.fixture(scope="module")
def mitmproxy_files(
    demo_upstream: str, mitm_confdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """One SSE stream through three real mitmdumps at once: buffered (mitmproxy's default),
    streamed, and streamed with the body stored; each writes `-w flows` and a hardump."""
    configs = {"buffered": (), "streamed": ("stream_large_bodies=1",),
               "stored": ("stream_large_bodies=1", "store_streamed_bodies=true")}
    workdirs = {name: tmp_path_factory.mktemp(name) for name in configs}
    proxies = {name: _mitmdump(mitm_confdir, demo_upstream, workdirs[name], *sets)
               for name, sets in configs.items()}
    try:
        async def fetch_all() -> None:
            await asyncio.gather(*(probe(p.url + TICKS) for p in proxies.values()))
            await probe(proxies["buffered"].url + TICKS_RESET)  # the upstream resets it

        in_thread(fetch_all())
    finally:
        for proxy in proxies.values():
            assert proxy.stop() == 0, proxy.output()
    return workdirs


@pytest.mark.parametrize(("config", "file"), [
    ("buffered", "flows"), ("buffered", "dump.har"), ("stored", "flows"),
])  # hardump keeps no streamed body, stored or not: see the streamed case below
def test_mitmproxy_files_with_the_body_import_as_one_chunk(
    config: str, file: str, mitmproxy_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "imported.sqlite"
    done = cli("import", mitmproxy_files[config] / file, "-o", out)
    assert done.returncode == 0, done.stderr
    (interaction, chunks, events), *reset = in_thread(load(out))
    assert len(reset) == (config == "buffered")  # that proxy also carried the reset stream
    assert "warning" not in "".join(line for line in done.stderr.splitlines()
                                    if TICKS_RESET not in line)
    assert interaction.request.url.endswith(TICKS)
    assert interaction.response is not None and interaction.response.status == 200
    assert interaction.is_sse and interaction.outcome is Outcome.CLEAN
    assert [c.data for c in chunks] == [b"".join(ticks_writes(6))]  # one chunk, whole body
    # the body arrived after its head, over the ~150 ms the upstream took to send it
    assert interaction.head_offset_ns is not None
    assert chunks[0].offset_ns - interaction.head_offset_ns > 100_000_000
    assert len([e for e in events if e.kind == "event"]) == 6


def test_a_flow_whose_upstream_failed_imports_with_the_failure(
    mitmproxy_files: dict[str, Path], tmp_path: Path
) -> None:
    """mitmproxy keeps no body of a response its upstream reset: the import says so, not
    that a streamed body went unstored."""
    out = tmp_path / "imported.sqlite"
    done = cli("import", mitmproxy_files["buffered"] / "flows", "-o", out)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "warning" in line]
    assert TICKS_RESET in warning and "store_streamed_bodies" not in warning
    assert "imported with its head only" in warning
    [reset] = [r for r in in_thread(load(out)) if r[0].request.url.endswith(TICKS_RESET)]
    assert reset[0].outcome is Outcome.CLOSED and reset[1] == []
    assert reset[0].error is not None and "store_streamed_bodies" not in reset[0].error


@pytest.mark.parametrize("file", ["flows", "dump.har"])
def test_a_streamed_body_mitmproxy_did_not_store_imports_as_its_head_only(
    file: str, mitmproxy_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "imported.sqlite"
    done = cli("import", mitmproxy_files["streamed"] / file, "-o", out)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "warning" in line]
    assert TICKS in warning and "imported with its head only" in warning
    assert ("store_streamed_bodies=true" in warning) is (file == "flows")
    [(interaction, chunks, _)] = in_thread(load(out))
    assert interaction.response is not None and interaction.is_sse
    assert chunks == [] and interaction.outcome is Outcome.CLOSED
    assert interaction.error is not None and "head only" in interaction.error


# -- a hand-written .sse file, replayed ---------------------------------------------------------


def _within(gaps: list[float], expected: list[float], tolerance: float = 30.0) -> None:
    assert len(gaps) == len(expected), (gaps, expected)
    assert all(abs(g - e) <= tolerance for g, e in zip(gaps, expected, strict=True)), (
        gaps, expected)


async def test_a_hand_written_file_replays_to_the_openai_sdk(tmp_path: Path) -> None:
    replay = replay_process(CASSETTES / "openai-chat.sse", tmp_path / "replay.txt")
    try:
        async def check() -> None:
            client = openai.AsyncOpenAI(base_url=replay.url + "/v1", api_key="test",
                                        max_retries=0)
            arrivals, contents = [], []
            async with client:
                stream = await client.chat.completions.create(**CHAT, stream=True)
                async for chunk in stream:
                    arrivals.append(time.monotonic() * 1000)
                    contents.append(chunk.choices[0].delta.content)
            assert contents == ["", "Hello", "!", " How can I help?", None]
            # @pace 50ms, then @wait 200ms before the fourth event, then the pace again
            _within([b - a for a, b in zip(arrivals, arrivals[1:], strict=False)],
                    [50, 50, 200, 50])

        await retrying(check)
    finally:
        replay.stop()


async def test_a_hand_written_file_replays_to_httpx_sse(tmp_path: Path) -> None:
    replay = replay_process(CASSETTES / "progress.sse", tmp_path / "replay.txt")
    try:
        async def check() -> None:
            arrivals, seen = [], []
            async with (httpx.AsyncClient() as client,
                        aconnect_sse(client, "GET", replay.url + "/jobs/42/progress") as source):
                async for event in source.aiter_sse():
                    arrivals.append(time.monotonic() * 1000)
                    seen.append((event.event, json.loads(event.data)))
            assert [name for name, _ in seen] == [
                "status", "state-transition", "progress", "progress", "step-progress",
                "complete"]
            assert seen[1][1] == {"from": "queued", "to": "running"}  # four data lines
            assert seen[3][1]["percent"] == 75
            _within([b - a for a, b in zip(arrivals, arrivals[1:], strict=False)],
                    [100, 100, 100, 100, 250])

        await retrying(check)
    finally:
        replay.stop()


def test_every_example_file_imports_and_its_tokens_are_redacted(tmp_path: Path) -> None:
    for path in sorted(CASSETTES.glob("*.sse")):
        out = tmp_path / f"{path.stem}.sqlite"
        done = cli("import", path, "-o", out)
        assert done.returncode == 0, (path, done.stderr)
        assert all(r.interaction.response is not None and r.events
                   for r in in_thread(load(out)))
    [(_, chunks, events)] = in_thread(load(tmp_path / "token-refresh.sqlite"))
    body = b"".join(c.data for c in chunks)
    assert b"eyJhbGciOiJIUzI1NiJ9" not in body and b"rt_demo_0123456789" not in body
    [refresh] = [e for e in events if e.type == "token-refresh"]
    assert json.loads(refresh.data)["access_token"] == "[REDACTED]"
    assert json.loads(refresh.data)["expires_in"] == 3600


def test_import_takes_the_recorders_redaction_options(tmp_path: Path) -> None:
    out = tmp_path / "c.sqlite"
    done = cli("import", CASSETTES / "heartbeats.sse", "-o", out, "--redact-value", "abc123",
               "--redact-json", "region")
    assert done.returncode == 0, done.stderr
    [(_, chunks, events)] = in_thread(load(out))
    body = b"".join(c.data for c in chunks)
    assert b"abc123" not in body and b"us-east-1" not in body
    status = json.loads(next(e.data for e in events if e.type == "connection-status"))
    assert status == {"active": True, "latency": 15, "region": "[REDACTED]"}


# -- bad input: one line, exit 2, nothing written --------------------------------------------


@pytest.fixture(scope="module")
def flows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "ok.flows"
    done = cli("import", CASSETTES / "heartbeats.sse", "-o", path.with_suffix(".sqlite"))
    assert done.returncode == 0, done.stderr
    done = cli("export", path.with_suffix(".sqlite"), "--format", "flows", "-o", path)
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize(("name", "content", "says"), [
    ("bad.har", b'{"log": {"entries": [{"request": {}, "response": {}}]}}',
     "log.entries[0].request.method: missing"),
    ("broken.har", b'{"log": {"entries": [\n  {"request": }', "line 2, column 15: not JSON"),
    ("syntax.sse", b"GET http://127.0.0.1/x\nHTTP/1.1 200 OK\n\n@wait 3 parsecs\n",
     "syntax.sse:4:9: @wait takes 1 argument"),
    ("noise.bin", bytes(range(128, 256)) * 4, "cannot tell its format"),
    ("cut.flows", None, "not a readable mitmproxy flow, truncated or damaged"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(
    name: str, content: bytes | None, says: str, tmp_path: Path, flows_file: Path
) -> None:
    source = tmp_path / name
    data = flows_file.read_bytes()
    source.write_bytes(content if content is not None else data[:len(data) * 2 // 3])
    out = tmp_path / "out.sqlite"
    done = cli("import", source, "-o", out)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert done.stderr.startswith(f"sse-recorder: {source}"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def big_import_file(path: Path, interactions: int, chunks: int) -> Path:
    sse = ResponseHead(200, "OK", [("content-type", "text/event-stream")], "HTTP/1.1")
    path.write_bytes(TRANSFER_FORMATS["jsonl"].write([
        Exchange(RecordedRequest("GET", f"http://127.0.0.1:9/s/{n}", [], b"", "HTTP/1.1"),
                 1.0 + n, sse, 1000, tuple((k * 1000, b"data: %d\n\n" % k)
                                           for k in range(chunks)), Outcome.CLEAN, 10**6)
        for n in range(interactions)
    ]))
    return path


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_an_import_stopped_by_a_signal_leaves_nothing(signal_name: str, tmp_path: Path) -> None:
    """SIGTERM ends a process without unwinding (no `finally` runs): the import's handler
    removes its temporary cassette and WAL, says so in one line and exits 143; Ctrl-C
    unwinds, and leaves nothing either."""
    source = big_import_file(tmp_path / "big.jsonl", 2000, 20)
    process = subprocess.Popen([SSE_RECORDER, "import", str(source), "-o",
                                str(tmp_path / "out.sqlite")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.sqlite.*.importing")):  # it is writing
            assert process.poll() is None, "the import ended before it could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        process.send_signal(getattr(signal, signal_name))
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    if signal_name == "SIGTERM":
        assert process.returncode == 143
        assert stderr == "sse-recorder: import stopped (SIGTERM): nothing partial left\n"
    else:
        assert process.returncode == 130
        assert stderr.strip() == "sse-recorder: stopped (Ctrl-C)", stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]


def test_usage_errors_and_a_bad_sse_file_given_to_replay_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sse"
    bad.write_bytes(b"GET http://127.0.0.1/x\nHTTP/1.1 200 OK\n\n@end explode\n")
    for args, says in [
        (("import", bad, "-o", tmp_path / "o.sqlite", "--format", "yaml"),
         "'yaml' is not one of"),
        (("export", tmp_path / "none.sqlite", "--format", "har"), "no such cassette"),
        (("export", bad, "--format", "sse", "-o", bad), "is the cassette"),
        (("replay", bad, "--listen-port", "0"), f"{bad}:4:6: unknown ending 'explode'"),
    ]:
        done = (run if args[0] == "replay" else cli)(*args)  # a real replay process
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert says in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sse"]
    assert bad.read_bytes().endswith(b"@end explode\n")

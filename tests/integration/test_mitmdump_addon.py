"""The recorder as a plain mitmproxy script: `mitmdump -s addons/record.py --set sse_...`.

mitmdump runs as a real subprocess in reverse mode towards the demo upstream. Readiness is
its `listening at 127.0.0.1:PORT` log line, read with a deadline; its remaining output is
drained by a thread so it never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from mitmproxy import http

from sse_recorder.demo.upstream import ticks_writes
from sse_recorder.mitm.record_addon import Recorder
from sse_recorder.model import Outcome
from sse_recorder.store.cassette import Cassette
from sse_recorder.wire.probe import probe
from tests.helpers import MITMDUMP, REPO, read_line
from tests.integration.support import assert_faithful, load

with warnings.catch_warnings():  # as in tests/unit/test_addon.py: ldap3 vs pyasn1 >= 0.6.2
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from mitmproxy.test import taddons, tflow, tutils

pytestmark = pytest.mark.integration

SCRIPT = str(REPO / "addons" / "record.py")
LISTENING = re.compile(r"listening at 127\.0\.0\.1:(\d+)")


def mitmdump_args(confdir: Path, upstream: str, *sets: str) -> list[str]:
    args = [MITMDUMP, "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={confdir}",
            "-s", SCRIPT, "--mode", f"reverse:{upstream}"]
    for option in sets:
        args += ["--set", option]
    return args


@dataclass
class Mitmdump:
    popen: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    lines: list[str] = field(default_factory=list)  # stdout, as the drain thread reads it
    drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            if self.drain is not None:
                self.drain.join(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise

    def output(self) -> str:
        return "\n".join(self.lines) + "\n" + self.stderr_path.read_text(errors="replace")


def launch(args: list[str], stderr_path: Path, timeout: float = 30, **kw: object) -> Mitmdump:
    """Start mitmdump; return once it logged the address it listens at."""
    with open(stderr_path, "wb") as err:
        popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err,
                                 stdin=subprocess.DEVNULL, **kw)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while (found := LISTENING.search(seen[-1] if seen else "")) is None:
            seen.append(read_line(popen, max(deadline - time.monotonic(), 0.01)))
    except (TimeoutError, EOFError) as exc:
        popen.kill()
        popen.wait()
        raise AssertionError(
            f"mitmdump did not start: {exc}\n" + "\n".join(seen) + stderr_path.read_text()
        ) from exc
    process = Mitmdump(popen, int(found.group(1)), stderr_path, seen)

    def drain() -> None:
        assert popen.stdout is not None
        with popen.stdout:
            for raw in popen.stdout:
                process.lines.append(raw.decode(errors="replace").rstrip("\n"))

    process.drain = threading.Thread(target=drain, daemon=True)
    process.drain.start()
    return process


@dataclass
class Launcher:
    tmp_path: Path
    confdir: Path
    upstream: str
    started: list[Mitmdump] = field(default_factory=list)

    def __call__(self, *sets: str, cassette: Path | None = None, **kw: object) -> Mitmdump:
        cassette = cassette or self.tmp_path / "cassette.sqlite"
        args = mitmdump_args(self.confdir, self.upstream, f"sse_cassette={cassette}", *sets)
        process = launch(args, self.tmp_path / f"mitmdump-{len(self.started)}.txt", **kw)
        self.started.append(process)
        return process


@pytest.fixture
def mitmdump(tmp_path: Path, mitm_confdir: Path, demo_upstream: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, mitm_confdir, demo_upstream)
    yield launcher
    for process in launcher.started:
        process.stop()


def cassette_files(tmp_path: Path, name: str = "cassette.sqlite") -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name))


# --- recording -------------------------------------------------------------------------------


async def test_records_a_stream_and_stops_cleanly_on_sigterm(
    mitmdump: Launcher, tmp_path: Path
) -> None:
    proxy = mitmdump()
    received = await probe(f"{proxy.url}/ticks?n=20&interval_ms=5")
    assert received.outcome == "clean" and len(received.chunks) == 20
    assert proxy.stop(signal.SIGTERM) == 0, proxy.output()
    assert "sse-recorder: flushed 20 chunks" in proxy.output()
    assert "alembic" not in proxy.output()  # creating the cassette logs nothing of its own
    assert cassette_files(tmp_path) == ["cassette.sqlite"]  # WAL folded back in: one file
    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert interaction.outcome is Outcome.CLEAN and interaction.complete
    assert interaction.request.url.endswith("/ticks?n=20&interval_ms=5")
    assert [c.data for c in chunks] == ticks_writes(20)
    assert_faithful(recording, [data for _, data in received.chunks])


async def test_a_request_before_running_waits_for_the_cassette(tmp_path: Path) -> None:
    """mitmproxy listens (and logs so) before the script's `running` has opened the cassette.
    A request arriving in between must wait for it: otherwise it passes unrecorded and its
    event stream is buffered whole. Deterministic, in-process: `running` is called late."""
    recorder = Recorder()
    cassette = tmp_path / "early.sqlite"
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, sse_cassette=str(cassette))
        flow = tflow.tflow(req=tutils.treq(path=b"/ticks"))
        pending = recorder.request(flow)
        assert pending is not None  # an awaitable: mitmproxy holds this flow only
        waiting = asyncio.ensure_future(pending)
        await asyncio.sleep(0)
        assert not waiting.done()
        await recorder.running()
        await asyncio.wait_for(waiting, 5)
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"),
                                     content=b"")
        recorder.responseheaders(flow)
        assert callable(flow.response.stream)
        assert flow.response.stream(b"data: early\n\n") == b"data: early\n\n"
        recorder.response(flow)
        await recorder.done()
    [(interaction, chunks, _)] = await load(cassette)
    assert interaction.outcome is Outcome.CLEAN
    assert [c.data for c in chunks] == [b"data: early\n\n"]


@pytest.mark.parametrize(
    ("sets", "recorded"),
    [
        (["sse_include=*/ticks*"], ["/ticks"]),
        (["sse_include=*/ticks*", "sse_include=GET */v1/models"], ["/v1/models", "/ticks"]),
        (["sse_exclude=*/v1/*"], ["/ticks", "/deploy"]),
        (["sse_include=127.0.0.1/*", "sse_exclude=GET */deploy"], ["/v1/models", "/ticks"]),
    ],
    ids=["include", "include-two", "exclude", "include-and-exclude"],
)
async def test_route_filters_record_only_matching_flows(
    sets: list[str], recorded: list[str], mitmdump: Launcher, tmp_path: Path
) -> None:
    proxy = mitmdump(*sets)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        for target in ("/v1/models", "/ticks?n=3&interval_ms=1", "/deploy?interval_ms=1"):
            assert (await client.get(target)).status_code == 200  # all pass through
    assert proxy.stop() == 0
    recordings = await load(tmp_path / "cassette.sqlite")
    assert [httpx.URL(i.request.url).path for i, _, _ in recordings] == recorded
    assert all(i.outcome is Outcome.CLEAN for i, _, _ in recordings)


@pytest.mark.parametrize("sets", [["sse_exclude=*/ticks*"], ["sse_include=*/deploy*"]],
                         ids=["excluded", "not-included"])
async def test_a_stream_left_unrecorded_still_reaches_its_client_live(
    sets: list[str], mitmdump: Launcher, tmp_path: Path
) -> None:
    """A route filter only decides what is stored: an event stream it leaves out goes
    through live (mitmproxy buffers a body nobody streams, so a long stream would reach
    its client only at its end, an endless one never)."""
    proxy = mitmdump(*sets)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        # 1,000 events 100 ms apart: the whole body would take 100 s to buffer
        async with client.stream("GET", "/ticks?n=1000&interval_ms=100") as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            first = [line async for line in _until_blank(lines)]
    assert first == ticks_writes(1)[0].decode().splitlines()[:-1]  # less its blank line
    assert proxy.stop() == 0
    assert cassette_files(tmp_path) == []  # nothing recorded: no cassette left behind


async def _until_blank(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The lines of the first event (up to its blank line), within the client's timeout."""
    async for line in lines:
        if not line:
            return
        yield line


async def test_extra_redaction_options(mitmdump: Launcher, tmp_path: Path) -> None:
    secrets = [b"custom-header-secret-1", b"json-field-secret-2", b"query-param-secret-3"]
    proxy = mitmdump("sse_redact_headers=X-Custom-Secret", "sse_redact_json=myField",
                     "sse_redact_query=mytoken")
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            "/v1/chat/completions?mytoken=query-param-secret-3&visible=q-kept",
            headers={"X-Custom-Secret": "custom-header-secret-1", "X-Visible": "h-kept"},
            json={"model": "gpt-demo", "stream": True, "myField": "json-field-secret-2",
                  "other": "j-kept", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200 and b"data: [DONE]" in response.content
    assert proxy.stop() == 0
    assert cassette_files(tmp_path) == ["cassette.sqlite"]
    data = (tmp_path / "cassette.sqlite").read_bytes()
    for secret in secrets:
        assert secret not in data, secret
    for kept in (b"q-kept", b"h-kept", b"j-kept"):  # only the named fields are redacted
        assert kept in data, kept
    [(interaction, chunks, _)] = await load(tmp_path / "cassette.sqlite")
    assert ("X-Custom-Secret", "[REDACTED]") in interaction.request.headers
    assert json.loads(interaction.request.body)["myField"] == "[REDACTED]"
    assert interaction.outcome is Outcome.CLEAN and chunks


# --- refusing to start -----------------------------------------------------------------------


def run_to_exit(args: list[str], cwd: Path, timeout: float = 30) -> tuple[int, str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def assert_nothing_listens(output: str) -> None:
    """The process has exited; whatever port it had opened is closed again."""
    for port in LISTENING.findall(output):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["sse_cassette=rec.sqlite", "sse_include=a b c"], "bad route 'a b c'"),
        (["sse_cassette=rec.sqlite", "sse_exclude=POST a b"], "bad route 'POST a b'"),
        ([], "--set sse_cassette=PATH"),
        (["sse_casette=rec.sqlite"], "unknown option(s): sse_casette"),
        (["sse_cassette=rec.sqlite", "sse_redact_header=X-A"], "sse_redact_header"),
    ],
    ids=["bad-include", "bad-exclude", "no-cassette", "typo-cassette", "typo-redact"],
)
def test_bad_options_fail_at_start(
    sets: list[str], message: str, tmp_path: Path, mitm_confdir: Path, demo_upstream: str
) -> None:
    code, output = run_to_exit(mitmdump_args(mitm_confdir, demo_upstream, *sets), tmp_path)
    assert code != 0, output
    assert message in output, output
    assert_nothing_listens(output)
    assert list(tmp_path.iterdir()) == []  # no cassette was created


def test_a_non_sqlite_cassette_fails_at_start_untouched(
    tmp_path: Path, mitm_confdir: Path, demo_upstream: str
) -> None:
    notes = tmp_path / "notes.sqlite"
    content = b"these are my notes, not a database\n" * 100
    notes.write_bytes(content)
    args = mitmdump_args(mitm_confdir, demo_upstream, f"sse_cassette={notes}")
    code, output = run_to_exit(args, tmp_path)
    assert code != 0, output
    assert f"sse-recorder: {notes}: not a readable cassette" in output, output
    assert_nothing_listens(output)
    assert notes.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]


# --- a storage failure stops the proxy -------------------------------------------------------

FILE_SIZE_LIMIT = 256 * 1024  # bytes any file mitmdump writes may reach (RLIMIT_FSIZE)


def _limit_file_size() -> None:
    # Writes past the limit fail with EFBIG (Python ignores SIGXFSZ; so does exec'd mitmdump).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


async def test_storage_failure_stops_the_proxy_and_cuts_the_stream(
    mitmdump: Launcher, tmp_path: Path
) -> None:
    # A fresh confdir, so that the CA files are written under the limit too.
    mitmdump.confdir = tmp_path / "confdir"
    proxy = mitmdump(preexec_fn=_limit_file_size)
    n, interval_ms = 3000, 2  # ~3 MB over ~6 s: the cassette's WAL outgrows the limit early
    received = b""
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):  # cut, not ended cleanly
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"{proxy.url}/ticks?n={n}&interval_ms={interval_ms}&size=1000"
            async with client.stream("GET", url) as response:
                async for piece in response.aiter_raw():
                    received += piece
    cut_after = time.monotonic() - started
    code = await asyncio.to_thread(proxy.wait, 20)  # it stops by itself
    assert code != 0, proxy.output()
    stderr = proxy.stderr_path.read_text().strip().splitlines()
    assert len(stderr) == 1 and "cannot write the cassette" in stderr[0], stderr
    assert str(tmp_path / "cassette.sqlite") in stderr[0]
    assert cut_after < n * interval_ms / 1000 / 2, cut_after  # well before the stream's end
    sent = b"".join(ticks_writes(n, size=1000))
    assert sent.startswith(received) and len(received) < len(sent) // 2
    # What was committed before the failure is intact and a prefix of what the client got.
    [(interaction, chunks, _)] = await load(tmp_path / "cassette.sqlite")
    stored = b"".join(c.data for c in chunks)
    assert received.startswith(stored) and not interaction.complete
    print(f"cut after {cut_after:.2f} s: client got {len(received)} B, cassette kept "
          f"{len(stored)} B in {len(chunks)} chunks")
    # Passed through unrecorded: at most the data of the failed batch and of the shutdown.
    assert len(received) - len(stored) < 0.5 * 1000 * 1000 / interval_ms, (
        len(received), len(stored))


# --- the replay script: `mitmdump -s addons/replay.py --set sse_replay=PATH` ---------------

REPLAY_SCRIPT = str(REPO / "addons" / "replay.py")


def replay_args(confdir: Path, *sets: str) -> list[str]:
    """A regular proxy answering every request from the cassette named in `sets`."""
    args = [MITMDUMP, "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={confdir}",
            "-s", REPLAY_SCRIPT]
    for option in sets:
        args += ["--set", option]
    return args


async def test_replay_script_answers_from_the_cassette_at_instant_speed(
    mitmdump: Launcher, tmp_path: Path, mitm_confdir: Path
) -> None:
    recorder = mitmdump()
    target = "/ticks?n=10&interval_ms=100"  # about 0.9 s as recorded
    recorded = await probe(f"{recorder.url}{target}")
    assert recorder.stop() == 0, recorder.output()
    args = replay_args(mitm_confdir, f"sse_replay={tmp_path / 'cassette.sqlite'}",
                       "sse_replay_speed=Instant")
    replayer = launch(args, tmp_path / "replay.txt")
    try:
        # A host that does not resolve: the answer can only come from the cassette.
        started = time.monotonic()
        replayed = await probe(f"http://api.example.invalid{target}", proxy=replayer.url)
        elapsed = time.monotonic() - started
    finally:
        assert replayer.stop() == 0, replayer.output()
    assert replayed.status == 200 and replayed.outcome == "clean"
    assert replayed.body == recorded.body == b"".join(ticks_writes(10))
    assert elapsed < 0.5, elapsed  # not paced like the recording


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["sse_replay_speed=fast"], "sse-recorder: sse_replay_speed: bad speed 'fast'"),
        (["sse_replay_speed=0"], "sse-recorder: sse_replay_speed: speed must be positive"),
        ([], "sse-recorder: set the cassette with --set sse_replay=PATH"),
    ],
    ids=["word-speed", "zero-speed", "no-cassette"],
)
def test_replay_script_bad_options_fail_at_start(
    sets: list[str], message: str, tmp_path: Path, mitm_confdir: Path
) -> None:
    cassette = [f"sse_replay={tmp_path / 'c.sqlite'}"] if sets else []
    if sets:
        asyncio.run(_empty_cassette(tmp_path / "c.sqlite"))
    code, output = run_to_exit(replay_args(mitm_confdir, *cassette, *sets), tmp_path)
    assert code != 0, output
    assert message in output, output
    assert_nothing_listens(output)


async def _empty_cassette(path: Path) -> None:
    cassette = await Cassette.open_for_recording(path)
    await cassette.finish_recording()
    await cassette.close()

"""pytest plugin: `@pytest.mark.sse_cassette` and the `sse_cassette` fixture.

Each test gets a replay server for its cassette (or, in a recording mode, the real
`sse-recorder record` process in front of the upstream), so any client works unpatched:
point its base URL at `sse_cassette.base_url`, or its proxy at `sse_cassette.proxy_url`.
Replay servers run on one background thread and event loop per process (per xdist worker),
started on first use, so sync and async tests both work and a test costs one cassette open.
A request the cassette cannot answer fails the test with the nearest recording and what
differed; a damaged cassette fails it with the one-line cassette error and is never
re-recorded or read as empty.

The hooks, the fixture and the report hook live here; how markers, options and ini values
merge is in `settings`, the child processes in `processes`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Coroutine, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from sse_recorder.testing.processes import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Process,
    ProcessError,
    sse_recorder_executable,
)
from sse_recorder.testing.settings import CassetteSettings, RecordMode, check_speed

if TYPE_CHECKING:
    from sse_recorder.mitm.inprocess import InProcessProxy
    from sse_recorder.replay.records import Served
    from sse_recorder.replay.server import ReplayOptions, ReplayServer

T = TypeVar("T")


# -- options -------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sse-recorder", "SSE cassettes (sse-recorder)")
    group.addoption(
        "--sse-record-mode", choices=[mode.value for mode in RecordMode], default=None,
        help="none (default: replay only), once (record missing cassettes), new_episodes "
             "(record requests the cassette lacks), all (re-record). Wins over markers.",
    )
    group.addoption("--sse-upstream", metavar="URL", default=None,
                    help="Upstream to record from. Wins over markers.")
    group.addoption("--sse-speed", metavar="SPEED", default=None,
                    help="Replay speed factor, or 'instant' (the default). Wins over markers.")
    parser.addini("sse_record_mode", "Default record mode for SSE cassettes (none).")
    parser.addini("sse_upstream", "Default upstream URL to record SSE cassettes from.")
    parser.addini("sse_speed", "Default replay speed: a factor, or 'instant' (the default).")
    parser.addini("sse_confdir", "mitmproxy confdir (CA) for recording and proxy mode "
                                 "(default: a fresh one per test session).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sse_cassette(name=None, *, record_mode, upstream, path, speed, max_gap, match, "
        "ignore_json, ignore_query, ignore_headers, when_exhausted, faults, seed): "
        "the SSE cassette the sse_cassette fixture serves (sse-recorder)",
    )
    speed = config.getoption("sse_speed")
    if speed is not None:
        try:
            check_speed(speed)
        except ValueError as exc:
            raise pytest.UsageError(f"--sse-speed: {exc}") from None
    config.stash[_STATE] = _State()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.loop.stop()


# -- the background loop -------------------------------------------------------------------


class _LoopThread:
    """One asyncio loop on a daemon thread, shared by every test of this process.

    Replay servers live here so a sync test's blocking client and an async test's own loop
    both reach them over TCP; starting it once keeps per-test overhead to a cassette open."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="sse-recorder-replay", daemon=True
                )
                self._thread.start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def barrier(self) -> None:
        """Return once the loop has finished what it was doing: a response a client already
        has was recorded in `served` in the same loop step that wrote it."""
        if self._loop is not None:
            self.run(asyncio.sleep(0), timeout=10)

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


@dataclass
class _State:
    loop: _LoopThread = dataclasses.field(default_factory=_LoopThread)
    confdir: Path | None = None


_STATE = pytest.StashKey[_State]()


def _import_mitmproxy() -> bool:
    """Whether mitmproxy can run in this process (imported now, on the test's thread);
    a test replaces this to force proxy mode's subprocess."""
    from sse_recorder.mitm.inprocess import load

    return load()


# -- the fixture ---------------------------------------------------------------------------


class SSECassette:
    """The `sse_cassette` fixture: where the test's client should send its requests.

    `base_url` replaces the upstream's base URL; `proxy_url` (with `ca_cert` for HTTPS) is
    for clients that keep their real URLs, and starts mitmproxy on first use. `served` is
    what the replay server answered, in order; `unmatched` the requests it could not."""

    def __init__(self, settings: CassetteSettings, state: _State, workdir: Path) -> None:
        self.settings = settings
        self.name = settings.name
        self.path = settings.path
        self.record_mode = settings.record_mode
        self.upstream = settings.upstream
        self.recording = False
        self._state = state
        self._workdir = workdir
        self._options: ReplayOptions | None = None
        self._server: ReplayServer | None = None
        self._recorder: Process | None = None
        self._proxy: InProcessProxy | Process | None = None
        self._proxy_url: str | None = None
        self._recording_as = ""  # base_url or proxy_url: what the recorder was started for
        self._reported = 0

    def __repr__(self) -> str:
        mode = "recording" if self.recording else "replaying"
        return f"<sse_cassette {self.path} ({mode}, record mode {self.record_mode})>"

    # -- what tests use --

    @property
    def base_url(self) -> str:
        """The replay server's base URL; recording, the reverse-proxy recorder's (started
        on first use, so a test that records through `proxy_url` leaves no empty cassette)."""
        if self._server is not None:
            return self._server.base_url
        if self._recorder is None:
            if self.upstream is None:
                pytest.fail(f"sse-recorder: recording {self._shown()} through base_url needs "
                            "an upstream: @pytest.mark.sse_cassette(upstream=URL), "
                            "--sse-upstream=URL or ini sse_upstream (or record through "
                            "proxy_url)", pytrace=False)
            self._recorder = self._record("--upstream", self.upstream)
            self._recording_as = "base_url"
        if self._recording_as != "base_url":
            pytest.fail(f"sse-recorder: this test records {self._shown()} through proxy_url; "
                        "one test records through one of base_url and proxy_url", pytrace=False)
        return self._recorder.url

    @property
    def proxy_url(self) -> str:
        """An HTTP(S) proxy answering from the cassette (recording: recording through it)."""
        if self._proxy_url is None:
            self._proxy_url = self._start_proxy()
        return self._proxy_url

    @property
    def ca_cert(self) -> Path:
        """The mitmproxy CA that clients of `proxy_url` must trust for HTTPS."""
        _ = self.proxy_url
        return self._confdir() / "mitmproxy-ca-cert.pem"

    @property
    def served(self) -> list[Served]:
        """Every request answered from the cassette so far, in order."""
        served: list[Served] = []
        if self._server is not None:
            self._state.loop.barrier()
            served += self._server.served
        if isinstance(self._proxy, Process):
            from sse_recorder.replay.records import parse_records

            served += parse_records(self._proxy.stderr())
        return served

    @property
    def unmatched(self) -> list[Served]:
        """Requests the cassette had no answer for (each fails the test)."""
        from sse_recorder.replay.records import Answer

        return [s for s in self.served if s.answer is Answer.UNMATCHED]

    # -- life cycle --

    def _shown(self) -> str:
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def _confdir(self) -> Path:
        assert self._state.confdir is not None, "set by the fixture"
        return self._state.confdir

    def _start(self) -> None:
        from sse_recorder.errors import CassetteError

        mode = self.record_mode
        exists = self.path.exists()
        try:
            self._options = self.settings.replay_options()
        except ValueError as exc:
            pytest.fail(f"sse-recorder: {exc}", pytrace=False)
        if mode is RecordMode.NONE and not exists:
            pytest.fail(f"sse-recorder: {self._shown()}: no such cassette (record mode none "
                        "never records); record it with --sse-record-mode=once "
                        "--sse-upstream=URL", pytrace=False)
        if mode in (RecordMode.NONE, RecordMode.ONCE) and exists:
            try:
                self._server = self._state.loop.run(self._open_server())
            except CassetteError as exc:
                pytest.fail(f"sse-recorder: {exc}", pytrace=False)
            return
        if exists:  # new_episodes appends, all replaces: only ever a cassette
            try:
                self._state.loop.run(self._check_cassette())
            except CassetteError as exc:
                pytest.fail(f"sse-recorder: {exc} (record mode {mode} never records over "
                            "anything but a cassette; move this file away to record afresh)",
                            pytrace=False)
        if mode is RecordMode.ALL:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.recording = True  # the recorder starts when the test asks for a URL

    async def _open_server(self) -> ReplayServer:
        from sse_recorder.replay.server import ReplayServer

        server = await ReplayServer.open(str(self.path), self._options)
        try:
            return await server.start("127.0.0.1", 0)
        except BaseException:
            await server.close()
            raise

    async def _check_cassette(self) -> None:
        from sse_recorder.store.cassette import Cassette

        await (await Cassette.open(self.path)).close()

    def _record(self, *where: str) -> Process:
        self._workdir.mkdir(parents=True, exist_ok=True)
        try:
            args = [sse_recorder_executable(needs_mitmproxy=True), "record", "--cassette",
                    str(self.path), *where, "--listen-port", "0",
                    "--confdir", str(self._confdir())]
            if self.record_mode is RecordMode.NEW_EPISODES:
                args.append("--replay-matched")
                if self.settings.kwargs.get("match"):
                    args += ["--match", str(self.settings.kwargs["match"])]
            return Process(args, self._workdir / f"recorder-{time.monotonic_ns()}.log")
        except ProcessError as exc:
            pytest.fail(f"sse-recorder: cannot record {self._shown()}: {exc}", pytrace=False)

    def _start_proxy(self) -> str:
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self.recording:
            if self._recorder is not None:
                pytest.fail(f"sse-recorder: this test records {self._shown()} through "
                            "base_url; one test records through one of base_url and "
                            "proxy_url", pytrace=False)
            self._recorder = self._record()
            self._recording_as = "proxy_url"
            return self._recorder.url
        assert self._server is not None and self._options is not None
        try:
            if _import_mitmproxy():
                from sse_recorder.mitm.inprocess import InProcessProxy

                self._proxy = InProcessProxy(self._server.host, self._server.port,
                                             self._confdir(), START_TIMEOUT, STOP_TIMEOUT)
                return self._proxy.url
            # its own replay server in the subprocess, its records on stderr
            args = [sse_recorder_executable(needs_mitmproxy=True), "replay", str(self.path),
                    "--proxy", "--port", "0", "--confdir", str(self._confdir()),
                    "--log-format", "json", *self.settings.replay_arguments(self._options)]
            self._proxy = Process(args, self._workdir / f"proxy-{time.monotonic_ns()}.log")
            return self._proxy.url
        except RuntimeError as exc:
            pytest.fail(f"sse-recorder: cannot start proxy mode: {exc}", pytrace=False)

    def _stop(self) -> list[str]:
        """Stop everything this test started; returns what went wrong, if anything."""
        problems: list[str] = []
        if self._proxy is not None:
            self._proxy.stop()
        if self._recorder is not None:
            try:
                code = self._recorder.stop()
            except ProcessError as exc:
                problems.append(f"sse-recorder: {exc}")
            else:
                if code != 0:
                    problems.append(f"sse-recorder: recording {self._shown()} failed (exit "
                                    f"{code}){self._recorder.stderr_tail()}")
        if self._server is not None:
            self._state.loop.run(self._server.close())
        return problems

    def take_unmatched_report(self) -> str:
        """A report of unmatched requests not reported yet: the nearest recording of each
        and what differed (the server's own explanation), plus how to record them."""
        unmatched = self.unmatched
        new, self._reported = unmatched[self._reported:], len(unmatched)
        if not new:
            return ""
        count = f"{len(new)} request{'s' if len(new) > 1 else ''}"
        lines = [f"sse-recorder: {count} not in cassette {self._shown()} "
                 f"(record mode {self.record_mode}):", ""]
        for served in new:
            lines.append(served.explanation.rstrip("\n") or
                         f"{served.method} {served.target} -> {served.status}")
            lines.append("")
        lines.append("to record what is missing: --sse-record-mode=new_episodes "
                     "--sse-upstream=URL (or upstream= on the marker)")
        return "\n".join(lines)


_CASSETTE = pytest.StashKey[SSECassette]()


@pytest.fixture
def sse_cassette(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SSECassette]:
    """A replay server (or recorder) for this test's cassette; see `SSECassette`."""
    item = request.node
    try:
        settings = CassetteSettings.for_item(item)
    except ValueError as exc:
        pytest.fail(f"sse-recorder: {exc}", pytrace=False)
    state = request.config.stash[_STATE]
    if state.confdir is None:
        configured = request.config.getini("sse_confdir")
        state.confdir = (Path(str(configured)).expanduser() if configured
                         else tmp_path_factory.mktemp("sse-mitmproxy"))
    cassette = SSECassette(settings, state, tmp_path_factory.getbasetemp() / "sse-recorder")
    try:
        cassette._start()
    except BaseException:
        cassette._stop()
        raise
    item.stash[_CASSETTE] = cassette
    try:
        yield cassette
    finally:
        del item.stash[_CASSETTE]
        problems = cassette._stop()
        late = cassette.take_unmatched_report()
        if late or problems:
            pytest.fail("\n\n".join([*problems, late] if late else problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a test that passed despite unmatched requests into a failure, and add the
    explanation to one that failed (usually on the 404 those requests got)."""
    report = yield
    cassette = item.stash.get(_CASSETTE, None)
    if cassette is None or report.when != "call" or report.skipped:
        return report
    text = cassette.take_unmatched_report()
    if not text:
        return report
    if report.passed:
        report.outcome = "failed"
        report.longrepr = text
    elif callable(add := getattr(report.longrepr, "addsection", None)):
        add("sse-recorder: unmatched requests", text)  # shown right after the traceback
    else:
        report.sections.append(("sse-recorder: unmatched requests", text))
    return report

"""pytest plugin: `@pytest.mark.sse_cassette` and the `sse_cassette` fixture.

Each test gets a replay server for its cassette (or, in a recording mode, the real
`sse-recorder record` process in front of the upstream), so any client works unpatched:
point its base URL at `sse_cassette.base_url`, or its proxy at `sse_cassette.proxy_url`.
Replay servers run on one background thread and event loop per process (per xdist worker),
started on first use, so sync and async tests both work and a test costs one cassette open.
A request the cassette cannot answer fails the test with the nearest recording and what
differed; a damaged cassette fails it with the one-line cassette error and is never
re-recorded or read as empty.

Recording runs the first `sse-recorder` whose Python has mitmproxy (`locate`; the report
header names it), so a test venv's own core-only command is passed over for the pipx one.
`--sse-block-network` (`network`) fails a test whose client connects anywhere but the
fixture's own servers.

The hooks, the fixture and the report hook live here; how markers, options and ini values
merge is in `settings`, the child processes in `processes`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import shutil
import threading
import time
from collections.abc import Coroutine, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pytest

from sse_recorder.experiment.pytest_support import MARKER as EXPERIMENT_MARKER
from sse_recorder.experiment.pytest_support import (  # sse_scenario: the fixture
    generate_tests,
    sse_scenario,  # noqa: F401
)
from sse_recorder.partial import remove_sqlite_file
from sse_recorder.testing import locate
from sse_recorder.testing.network import Guard, bad_allowed
from sse_recorder.testing.outcomes import fail
from sse_recorder.testing.processes import START_TIMEOUT, STOP_TIMEOUT, Process, ProcessError
from sse_recorder.testing.settings import (
    CassetteSettings,
    RecordMode,
    check_speed,
    named,
    sharing_default_name,
)

if TYPE_CHECKING:
    from sse_recorder.mitm.inprocess import InProcessProxy
    from sse_recorder.replay.records import Served
    from sse_recorder.replay.server import ReplayOptions, ReplayServer

T = TypeVar("T")

# Playwright fixtures (sse_browser, sse_context, sse_page): Playwright is imported only when
# one is used.
pytest_plugins = ("sse_recorder.testing.playwright",)


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
    group.addoption("--sse-recorder-executable", metavar="PATH", default=None,
                    help="The sse-recorder command that records (default: the first with "
                         "mitmproxy: this Python's, PATH's, then the pipx / uv tool venvs).")
    group.addoption("--sse-block-network", action="store_true", default=None,
                    help="Fail a test that connects anywhere but its cassette's replay "
                         "server, proxy or recorder (this process only: not subprocesses).")
    group.addoption("--sse-allowed-hosts", metavar="HOSTS", default=None,
                    help="With --sse-block-network: comma-separated host or host:port "
                         "still allowed.")
    parser.addini("sse_record_mode", "Default record mode for SSE cassettes (none).")
    parser.addini("sse_upstream", "Default upstream URL to record SSE cassettes from.")
    parser.addini("sse_speed", "Default replay speed: a factor, or 'instant' (the default).")
    parser.addini("sse_recorder_executable", "The sse-recorder command that records "
                  "(default: the first whose Python has mitmproxy).")
    parser.addini("sse_block_network", "Block connections other than to the cassette's "
                  "servers (as --sse-block-network).", type="bool", default=False)
    parser.addini("sse_allowed_hosts", "With sse_block_network: comma-separated host or "
                  "host:port still allowed.")
    parser.addini("sse_store", "A cassette store URL (postgresql+asyncpg://USER@HOST/DB; "
                  "password in it or in PGPASSWORD): each test's cassette is the store's "
                  "cassette of the test's name instead of a file.")
    parser.addini("sse_confdir", "mitmproxy confdir (CA) for recording and proxy mode "
                                 "(default: a fresh one per test session).")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.sse_experiment(PLAN)`: one test per scenario (experiment/pytest_support)."""
    generate_tests(metafunc)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", EXPERIMENT_MARKER)
    config.addinivalue_line(
        "markers",
        "sse_cassette(name=None, *, record_mode, upstream, path, speed, max_gap, match, "
        "ignore_json, ignore_query, ignore_headers, when_exhausted, faults, seed): "
        "the SSE cassette the sse_cassette fixture serves (sse-recorder); path= is relative "
        "to the test file's directory (default: cassettes/<test module>/<name>.sqlite there)",
    )
    speed = config.getoption("sse_speed")
    if speed is not None:
        try:
            check_speed(speed)
        except ValueError as exc:
            raise pytest.UsageError(f"--sse-speed: {exc}") from None
    state = _State(configured=config.getoption("sse_recorder_executable")
                   or str(config.getini("sse_recorder_executable")) or None)
    if config.getoption("sse_block_network") or config.getini("sse_block_network"):
        allowed = (config.getoption("sse_allowed_hosts")
                   or str(config.getini("sse_allowed_hosts")))
        if problem := bad_allowed(allowed.split(",")):
            raise pytest.UsageError(f"sse_allowed_hosts: {problem}")
        state.guard = Guard(allowed.split(","))
        state.guard.install()
    config.stash[_STATE] = state


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.loop.stop()
        if state.guard is not None:
            state.guard.uninstall()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which recorder records when this run records, and what the network guard allows."""
    state = config.stash[_STATE]
    lines = []
    mode = config.getoption("sse_record_mode") or str(config.getini("sse_record_mode"))
    try:
        records = bool(mode) and RecordMode.parse(mode) is not RecordMode.NONE
    except ValueError:
        records = False  # each test says why
    if records:
        try:
            lines.append(f"sse-recorder: recording with {state.recorder()}")
            state.announced = True
        except ProcessError as exc:
            lines.append(f"sse-recorder: cannot record: {exc}")
    if state.guard is not None:
        allowed = ", ".join(sorted(state.guard.allowed)) or "nothing else"
        lines.append("sse-recorder: network blocked except the cassettes' servers on "
                     f"127.0.0.1 and {allowed}")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(_STATE, None)
    if state is not None and state.found is not None and not state.announced:
        terminalreporter.write_line(f"sse-recorder: recorded with {state.found}")


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
    configured: str | None = None  # sse_recorder_executable, if set
    found: locate.Found | None = None  # the recorder, once looked for
    announced: bool = False  # whether the report header named it
    guard: Guard | None = None  # with --sse-block-network

    def recorder(self) -> locate.Found:
        """The `sse-recorder` that records (looked for once per run); ProcessError if none."""
        if self.found is None:
            try:
                self.found = locate.find(needs_mitmproxy=True, configured=self.configured)
            except locate.RecorderNotFound as exc:
                hint = "" if self.configured else (
                    ", or name one with --sse-recorder-executable or ini sse_recorder_executable")
                raise ProcessError(f"{exc}{hint}") from None
        return self.found


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
        # Where the recorder writes: the cassette itself, or (record mode all over an
        # existing one) a file beside the test's temporary files, moved over the cassette
        # only once the recording stopped cleanly and the test passed.
        self._record_path = settings.path
        self._reported = 0
        self._owned: list[int] = []  # ports this fixture's servers listen on

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
                fail(f"sse-recorder: recording {self._shown()} through base_url needs "
                     "an upstream: @pytest.mark.sse_cassette(upstream=URL), "
                     "--sse-upstream=URL or ini sse_upstream (or record through "
                     "proxy_url)")
            self._recorder = self._record("--upstream", self.upstream)
            self._recording_as = "base_url"
        if self._recording_as != "base_url":
            fail(f"sse-recorder: this test records {self._shown()} through proxy_url; "
                 "one test records through one of base_url and proxy_url")
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

    def allow_origin(self, *origins: str) -> None:
        """Let web pages at `origins` read `base_url` (the replay's `--cors`; `*`: any page).
        Recording, the upstream's own CORS headers are what the page gets, as recorded."""
        if self._server is None:
            return
        from sse_recorder.errors import ConfigError
        from sse_recorder.replay.cors import Cors

        try:
            cors = Cors.parse([*self._server.options.cors.origins, *origins])
        except ConfigError as exc:
            fail(f"sse-recorder: {exc}")
        if isinstance(self._proxy, Process) and cors != self._server.options.cors:
            fail("sse-recorder: allow_origin must come before proxy_url is first used "
                 "(sse_page and sse_context use it): the proxy runs in a process of "
                 "its own here, started with the origins allowed then")
        self._server.options = dataclasses.replace(self._server.options, cors=cors)

    @property
    def unmatched(self) -> list[Served]:
        """Requests the cassette had no answer for (each fails the test)."""
        from sse_recorder.replay.records import Answer

        return [s for s in self.served if s.answer is Answer.UNMATCHED]

    # -- life cycle --

    def _shown(self) -> str:
        if not isinstance(self.path, Path):  # a store's cassette: its URL, no password
            return str(self.path)
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
        exists = self._exists()
        try:
            self._options = self.settings.replay_options()
        except ValueError as exc:
            fail(f"sse-recorder: {exc}")
        if mode is RecordMode.NONE and not exists:
            fail(f"sse-recorder: {self._where()}: no such cassette (record mode none "
                 "never records); record it with --sse-record-mode=once "
                 "--sse-upstream=URL")
        if mode in (RecordMode.NONE, RecordMode.ONCE) and exists:
            try:
                server = self._state.loop.run(self._open_server())
            except CassetteError as exc:
                fail(f"sse-recorder: {exc}")
            if any(i.response is not None for i in server.matcher.interactions):
                self._server = server
                self._own(server.port)
                return
            self._state.loop.run(server.close())
            if mode is RecordMode.NONE:
                fail(f"sse-recorder: {self._shown()}: the cassette holds no response "
                     "to replay (a recording that failed?); record it again with "
                     "--sse-record-mode=once --sse-upstream=URL")
            self._remove()  # once: a failed earlier recording is recorded afresh
            self.recording = True
            return
        if exists:  # new_episodes appends, all replaces: only ever a cassette
            try:
                self._state.loop.run(self._check_cassette())
            except CassetteError as exc:
                fail(f"sse-recorder: {exc} (record mode {mode} never records over "
                     "anything but a cassette; move this file away to record afresh)")
        if mode is RecordMode.ALL and exists:
            if not isinstance(self.path, Path):
                self._remove()  # refused: a store's cassette is never replaced by a test
            else:
                self._workdir.mkdir(parents=True, exist_ok=True)
                self._record_path = self._workdir / f"all-{time.monotonic_ns()}-{self.path.name}"
        self.recording = True  # the recorder starts when the test asks for a URL

    def _exists(self) -> bool:
        if isinstance(self.path, Path):
            return self.path.exists()
        from sse_recorder.errors import CassetteError
        from sse_recorder.store.cassette import stored_names

        try:
            return self.path.name in self._state.loop.run(stored_names(self.path))
        except CassetteError as exc:  # the store cannot be read
            fail(f"sse-recorder: {exc}")

    def _remove(self) -> None:
        if not isinstance(self.path, Path):
            fail(f"sse-recorder: {self._shown()}: a store's cassette is never "
                 "replaced by a test (record mode all, or a failed recording): "
                 "`sse-recorder copy` or drop it yourself")
        remove_sqlite_file(self.path)

    def _where(self) -> str:
        """The cassette as shown, and where a relative `path=` was looked for."""
        given = self.settings.kwargs.get("path")
        if given and not Path(str(given)).expanduser().is_absolute():
            return (f"{self._shown()} (path={str(given)!r} is relative to the test file's "
                    f"directory: looked for {self.path})")
        return self._shown()

    def _own(self, port: int | None) -> None:
        """Let --sse-block-network allow loopback connections to this server's port."""
        if self._state.guard is not None and port is not None:
            self._state.guard.own(port)
            self._owned.append(port)

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
            found = self._state.recorder()
            # the older spellings (--cassette, --upstream, replay's --port), which every
            # release accepts: a pipx recorder of another release works too
            args = [found.path, "record", "--cassette",
                    str(self._record_path), *where, "--listen-port", "0",
                    "--confdir", str(self._confdir())]
            if self.record_mode is RecordMode.NEW_EPISODES:  # matched as when replaying
                args += ["--replay-matched", *self.settings.match_arguments()]
            process = Process(args, self._workdir / f"recorder-{time.monotonic_ns()}.log")
        except ProcessError as exc:
            fail(f"sse-recorder: cannot record {self._shown()}: {exc}")
        self._own(urlsplit(process.url).port)
        return process

    def _start_proxy(self) -> str:
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self.recording:
            if self._recorder is not None:
                fail(f"sse-recorder: this test records {self._shown()} through "
                     "base_url; one test records through one of base_url and "
                     "proxy_url")
            self._recorder = self._record()
            self._recording_as = "proxy_url"
            return self._recorder.url
        assert self._server is not None and self._options is not None
        try:
            if _import_mitmproxy():
                from sse_recorder.mitm.inprocess import InProcessProxy

                self._proxy = InProcessProxy(self._server.host, self._server.port,
                                             self._confdir(), START_TIMEOUT, STOP_TIMEOUT)
            else:  # its own replay server in the subprocess, its records on stderr
                args = [self._state.recorder().path, "replay", str(self.path),
                        "--proxy", "--port", "0", "--confdir", str(self._confdir()),
                        "--log-format", "json", *self.settings.replay_arguments(self._options),
                        *(arg for origin in sorted(self._server.options.cors.origins)
                          for arg in ("--cors", origin))]
                self._proxy = Process(args, self._workdir / f"proxy-{time.monotonic_ns()}.log")
        except RuntimeError as exc:
            fail(f"sse-recorder: cannot start proxy mode: {exc}")
        self._own(urlsplit(self._proxy.url).port)
        return self._proxy.url

    def _stop(self, passed: bool = False) -> list[str]:
        """Stop everything this test started; returns what went wrong, if anything.
        `passed`: the test itself passed (record mode all replaces a cassette only then)."""
        problems: list[str] = []
        if self._proxy is not None:
            self._proxy.stop()
        code: int | None = None
        if self._recorder is not None:
            try:
                code = self._recorder.stop()
            except ProcessError as exc:
                problems.append(f"sse-recorder: {exc}")
            else:
                if code != 0:
                    problems.append(f"sse-recorder: recording {self._shown()} failed (exit "
                                    f"{code}){self._recorder.stderr_tail()}")
                elif not passed:  # what the recorder saw (an upstream down...) may say why
                    problems.append(f"sse-recorder: the recorder's last words while "
                                    f"recording {self._shown()}"
                                    f"{self._recorder.stderr_tail(5)}")
        if self._record_path != self.path:
            problems += self._replace(self._record_path, code == 0 and passed)
        if self._server is not None:
            self._state.loop.run(self._server.close())
        if self._state.guard is not None:
            for port in self._owned:
                self._state.guard.disown(port)
        self._owned.clear()
        return problems

    def _replace(self, recorded: Path, keep: bool) -> list[str]:
        """Record mode all: the new recording takes the cassette's place, or it is dropped
        and the cassette stays as it was."""
        assert isinstance(self.path, Path)
        if keep and recorded.exists():
            self._remove()
            shutil.move(recorded, self.path)
            return []
        remove_sqlite_file(recorded)
        if self._recorder is None:
            return []  # nothing was recorded: nothing to say
        return [f"sse-recorder: record mode all: {self._shown()} kept as it was (the test or "
                "its recording failed, or recorded nothing)"]

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
_PASSED = pytest.StashKey[bool]()  # the test's call phase passed (set by makereport)


@pytest.fixture
def sse_cassette(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SSECassette]:
    """A replay server (or recorder) for this test's cassette; see `SSECassette`."""
    item = request.node
    try:
        settings = CassetteSettings.for_item(item)
    except ValueError as exc:
        fail(f"sse-recorder: {exc}")
    if not named(item) and (others := sharing_default_name(item, settings.name)):
        fail(f"sse-recorder: {item.nodeid} and {others[0]} would share the cassette "
             f"{settings.name}: their ids differ only in characters a file name "
             "cannot hold; name one: @pytest.mark.sse_cassette(\"NAME\")")
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
        problems = cassette._stop(passed=item.stash.get(_PASSED, False))
        late = cassette.take_unmatched_report()
        if late or problems:
            fail("\n\n".join([*problems, late] if late else problems))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a test that passed despite unmatched requests or blocked connections into a
    failure, and add the explanation to one that failed (usually on the 404 those requests
    got, or on the connection error)."""
    report = yield
    guard = item.config.stash[_STATE].guard
    blocked = guard.take_blocked() if guard is not None else []
    if report.skipped:
        return report
    if blocked:
        _explain(report, "sse-recorder: blocked connections", _blocked_report(blocked))
    cassette = item.stash.get(_CASSETTE, None)
    if cassette is not None and report.when == "call":
        text = cassette.take_unmatched_report()
        if text:
            _explain(report, "sse-recorder: unmatched requests", text)
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


def _explain(report: pytest.TestReport, title: str, text: str) -> None:
    """Fail a passing report with `text`, or add it to a failing one's traceback."""
    if report.passed:
        report.outcome = "failed"
        report.longrepr = text
    elif callable(add := getattr(report.longrepr, "addsection", None)):
        add(title, text)  # shown right after the traceback
    else:
        report.sections.append((title, text))


def _blocked_report(blocked: list[str]) -> str:
    count = f"{len(blocked)} connection{'s' if len(blocked) > 1 else ''}"
    return (f"sse-recorder: --sse-block-network blocked {count} from this test: "
            f"{', '.join(blocked)}\npoint the client at sse_cassette.base_url (or proxy_url), "
            "or allow a host with --sse-allowed-hosts / ini sse_allowed_hosts")

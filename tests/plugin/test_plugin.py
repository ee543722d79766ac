"""The pytest plugin as users meet it: inner pytest runs (pytester, in subprocesses).

Each inner run is a real `pytest` process with the plugin loaded from its entry point,
cassettes placed where the plugin looks by default, and warnings as errors. Recording
runs go through the real `sse-recorder record` against the demo upstream.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sse_recorder.sse import Event, parse
from sse_recorder.store.cassette import Cassette
from tests.helpers import REPO, SSE_RECORDER, RecordDemo, start
from tests.integration.support import load

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""
PROMPT = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": PROMPT}


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(record_demo: RecordDemo) -> Path:
    """A cassette recorded from the demo upstream: #1 GET /ci/logs, #2 a streamed chat."""

    def traffic(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/ci/logs").status_code == 200
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

    return record_demo("recorded", traffic)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """An empty project with warnings as errors, as strict as this repository's own."""
    pytester.makeini(INI)
    return pytester


def place(pytester: pytest.Pytester, source: Path, module: str, name: str) -> Path:
    """Copy a cassette to where the plugin looks by default for `module`'s test `name`."""
    target = pytester.path / "cassettes" / module / f"{name}.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A pytest of its own, without Hypothesis's plugin (0.6 s of each run's start-up)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                         *args, timeout=90)


def urls(path: Path) -> list[str]:
    return [r.interaction.request.url.split("/", 3)[3] for r in asyncio.run(load(path))]


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# -- replaying -----------------------------------------------------------------------------


def test_a_replayed_test_passes_sync_async_and_named_by_default(
    suite: pytest.Pytester, recorded: Path
) -> None:
    for name in ("test_sync", "TestNaming-test_named-a-b"):
        place(suite, recorded, "test_replay", name)
    suite.makepyfile(test_replay='''
        import httpx, httpx_sse, pytest

        def test_sync(sse_cassette):
            response = httpx.get(sse_cassette.base_url + "/ci/logs")
            assert response.status_code == 200 and "workflow_run" in response.text
            assert [(s.method, s.target, s.interaction_id, s.status, s.outcome)
                    for s in sse_cassette.served] == [("GET", "/ci/logs", 1, 200, "clean")]
            assert sse_cassette.unmatched == [] and not sse_cassette.recording

        @pytest.mark.sse_cassette("test_sync")
        async def test_async(sse_cassette):
            async with httpx.AsyncClient(base_url=sse_cassette.base_url) as client:
                async with httpx_sse.aconnect_sse(client, "GET", "/ci/logs") as source:
                    events = [e async for e in source.aiter_sse()]
            assert [e.id for e in events if e.event == "workflow_run"][0] == "1"

        class TestNaming:
            @pytest.mark.parametrize("part", ["a/b"])
            def test_named(self, sse_cassette, part):
                assert sse_cassette.name == "TestNaming-test_named-a-b"
                assert sse_cassette.path.parts[-3:] == (
                    "cassettes", "test_replay", "TestNaming-test_named-a-b.sqlite")
                assert httpx.get(sse_cassette.base_url + "/ci/logs").status_code == 200
    ''')
    result = run(suite)
    result.assert_outcomes(passed=3)


def test_an_unmatched_request_fails_the_test_naming_the_nearest_recording(
    suite: pytest.Pytester, recorded: Path
) -> None:
    place(suite, recorded, "test_unmatched", "base")
    suite.makepyfile(test_unmatched='''
        import httpx, pytest

        pytestmark = pytest.mark.sse_cassette("base")
        BODY = {"model": "gpt-5", "stream": True,
                "messages": [{"role": "user", "content": "Say hello"}]}

        def test_quiet(sse_cassette):
            response = httpx.post(sse_cassette.base_url + "/v1/chat/completions", json=BODY)
            assert response.status_code == 404  # on its own, this test would pass

        def test_raises(sse_cassette):
            httpx.post(sse_cassette.base_url + "/v1/chat/completions",
                       json=BODY).raise_for_status()
    ''')
    result = run(suite)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*_ test_quiet _*",
        "sse-recorder: 1 request not in cassette cassettes/test_unmatched/base.sqlite "
        "(record mode none):",
        "sse-recorder: no recorded interaction matches POST /v1/chat/completions",
        "nearest recording: #2 POST http://*/v1/chat/completions",
        '  differs in body field model: recorded "gpt-4o-mini", got "gpt-5"',
        "to record what is missing: --sse-record-mode=new_episodes --sse-upstream=URL*",
        "*_ test_raises _*",
        "E       httpx.HTTPStatusError: Client error '404 Not Found'*",
        "*- sse-recorder: unmatched requests -*",
        '  differs in body field model: recorded "gpt-4o-mini", got "gpt-5"',
    ])
    stopped = run(suite, "-x")  # the converted failure counts for -x like any other
    stopped.assert_outcomes(failed=1)


def test_cassettes_that_cannot_be_replayed_fail_with_one_line_and_stay_untouched(
    suite: pytest.Pytester, recorded: Path
) -> None:
    cassettes = suite.path / "cassettes" / "test_broken"
    cassettes.mkdir(parents=True)
    garbage = b"not a cassette at all " * 100
    for mode in ("none", "once", "new_episodes", "all"):
        (cassettes / f"garbage-{mode}.sqlite").write_bytes(garbage)
    (cassettes / "empty.sqlite").write_bytes(b"")
    (cassettes / "truncated.sqlite").write_bytes(recorded.read_bytes()[:9000])
    before = {p.name: p.read_bytes() for p in cassettes.iterdir()}
    garbage_tests = "".join(
        f"@pytest.mark.sse_cassette('garbage-{mode}', record_mode='{mode}', "
        f"upstream='http://127.0.0.1:9')\ndef test_garbage_{mode}(sse_cassette):\n    pass\n\n"
        for mode in ("none", "once", "new_episodes", "all")
    )
    suite.makepyfile(test_broken=textwrap.dedent('''
        import pytest

        @pytest.mark.sse_cassette("empty", record_mode="once")
        def test_empty(sse_cassette):
            pass

        @pytest.mark.sse_cassette("truncated", record_mode="once")
        def test_truncated(sse_cassette):
            pass

        @pytest.mark.sse_cassette("missing")
        def test_missing(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", colour="blue")
        def test_unknown_argument(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", match="method,colour")
        def test_bad_match(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", ignore_headers=["X-Trace"])
        def test_idle_ignore(sse_cassette):
            pass

        # what an audit found: tracebacks, a seed error that never named the seed, and
        # speed=0 replaying instantly where --sse-speed=0 is refused
        @pytest.mark.sse_cassette("empty", match=5)
        def test_match_not_text(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", seed=[1])
        def test_seed_list(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", seed="abc")
        def test_seed_text(sse_cassette):
            pass

        @pytest.mark.sse_cassette("empty", speed=0)
        def test_speed_zero(sse_cassette):
            pass
    ''') + garbage_tests)
    result = run(suite)
    result.assert_outcomes(errors=14)
    assert "During handling" not in result.stdout.str()  # each message once
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines_random([
        "sse-recorder: */garbage-none.sqlite: not a readable cassette: file is not a database",
        "sse-recorder: */garbage-once.sqlite: not a readable cassette: file is not a database",
        "sse-recorder: */garbage-new_episodes.sqlite: not a readable cassette: file is not a "
        "database (record mode new_episodes never records over anything but a cassette*",
        "sse-recorder: */garbage-all.sqlite: not a readable cassette: file is not a database "
        "(record mode all never records over anything but a cassette*",
        "sse-recorder: */empty.sqlite: an empty SQLite file, not an sse-recorder cassette",
        "sse-recorder: */truncated.sqlite: *",
        "sse-recorder: cassettes/test_broken/missing.sqlite: no such cassette (record mode none "
        "never records); record it with --sse-record-mode=once --sse-upstream=URL",
        "sse-recorder: unknown sse_cassette argument(s) colour; known: record_mode, *",
        "sse-recorder: bad --match part 'colour': *",
        "sse-recorder: ignore_headers=['x-trace'] does nothing: match compares no headers",
        "sse-recorder: match must be a string or a list of strings, got 5",
        "sse-recorder: seed must be a whole number, not [[]1]",
        "sse-recorder: seed must be a whole number, not 'abc'",
        "sse-recorder: *speed*",
    ])
    assert {p.name: p.read_bytes() for p in cassettes.iterdir()} == before


# -- record modes --------------------------------------------------------------------------


def test_once_records_a_missing_cassette_then_replays_it_with_the_upstream_gone(
    suite: pytest.Pytester, tmp_path: Path
) -> None:
    upstream = start([SSE_RECORDER, "demo-upstream", "--port", "0"], tmp_path / "upstream.txt")
    suite.makepyfile(test_vendor='''
        import openai

        def test_chat(sse_cassette):
            client = openai.OpenAI(base_url=sse_cassette.base_url + "/v1", api_key="sk-test",
                                   max_retries=0)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": "Say hello"}])
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == "안녕하세요! SSE 데모 업스트림입니다."
    ''')
    flags = ["--sse-record-mode=once", f"--sse-upstream={upstream.url}"]
    cassette = suite.path / "cassettes" / "test_vendor" / "test_chat.sqlite"
    try:
        run(suite, *flags).assert_outcomes(passed=1)
    finally:
        upstream.stop()
    assert urls(cassette) == ["v1/chat/completions"]  # created, one interaction
    assert not Path(f"{cassette}-wal").exists()
    recorded = snapshot(cassette)
    run(suite, *flags).assert_outcomes(passed=1)  # upstream stopped: served from the cassette
    run(suite).assert_outcomes(passed=1)  # and in the default mode, none
    assert snapshot(cassette) == recorded  # untouched: same bytes, same mtime


def test_new_episodes_appends_what_is_missing_and_all_rewrites(
    suite: pytest.Pytester, recorded: Path, demo_upstream: str
) -> None:
    cassette = place(suite, recorded, "test_modes", "episodes")
    suite.makepyfile(test_modes='''
        import httpx, pytest

        @pytest.mark.sse_cassette("episodes", record_mode="new_episodes")
        def test_logs_and_deploy(sse_cassette):
            assert sse_cassette.recording
            for target in ("/ci/logs", "/deploy"):
                assert httpx.get(sse_cassette.base_url + target).status_code == 200
    ''')
    run(suite, f"--sse-upstream={demo_upstream}").assert_outcomes(passed=1)
    # /ci/logs was answered from the cassette, only /deploy was new: appended
    assert urls(cassette) == ["ci/logs", "v1/chat/completions", "deploy"]
    appended = cassette.read_bytes()
    # the command line wins over the marker: all re-records from scratch
    run(suite, "--sse-record-mode=all", f"--sse-upstream={demo_upstream}").assert_outcomes(
        passed=1)
    assert urls(cassette) == ["ci/logs", "deploy"]  # rewritten: only this run's requests
    assert cassette.read_bytes() != appended
    assert not Path(f"{cassette}-wal").exists()


def test_new_episodes_matches_by_the_markers_rules(
    suite: pytest.Pytester, recorded: Path, demo_upstream: str
) -> None:
    """new_episodes replays what matches under the marker's own rules (its ignore_query
    here) and records nothing again: a query parameter that changes every run, ignored,
    once grew the cassette by a duplicate per run."""
    cassette = place(suite, recorded, "test_ignored", "episodes")
    suite.makepyfile(test_ignored='''
        import time
        import httpx, pytest

        @pytest.mark.sse_cassette("episodes", record_mode="new_episodes", ignore_query=["t"])
        def test_logs(sse_cassette):
            url = f"{sse_cassette.base_url}/ci/logs?t={time.time_ns()}"
            assert httpx.get(url).status_code == 200
    ''')
    before = urls(cassette)
    run(suite, f"--sse-upstream={demo_upstream}").assert_outcomes(passed=1)
    run(suite, f"--sse-upstream={demo_upstream}").assert_outcomes(passed=1)
    assert urls(cassette) == before  # answered from the cassette both times


def test_ids_that_would_share_a_cassette_file_fail_naming_both(
    suite: pytest.Pytester,
) -> None:
    """`[a/b]` and `[a-b]` both make `test_p-a-b.sqlite`: instead of one test replaying the
    other's recording, both fail saying so; a named cassette may be shared on purpose."""
    suite.makepyfile(test_ids='''
        import pytest

        @pytest.mark.parametrize("q", ["a/b", "a-b"])
        def test_p(sse_cassette, q):
            pass

        @pytest.mark.sse_cassette("shared")
        @pytest.mark.parametrize("q", ["x y", "x-y"])
        def test_named(sse_cassette, q):
            pass
    ''')
    result = run(suite)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines_random([
        "*sse-recorder: test_ids.py::test_p[[]a/b] and test_ids.py::test_p[[]a-b] would share "
        "the cassette test_p-a-b: *name one*",
        "*sse-recorder: test_ids.py::test_p[[]a-b] and test_ids.py::test_p[[]a/b] would share*",
    ])
    # the named pair is just missing (how often the summary repeats it depends on its width)
    result.stdout.fnmatch_lines(["*cassettes/test_ids/shared.sqlite: no such cassette*"])
    assert not [line for line in result.stdout.lines
                if "would share" in line and "test_named" in line]


def test_all_keeps_the_cassette_when_its_recording_fails(
    suite: pytest.Pytester, recorded: Path
) -> None:
    """Record mode all records beside the cassette and replaces it only once the test
    passed: an upstream that is down (a nightly re-record on a bad night) loses nothing,
    and the failure says what the recorder saw."""
    cassette = place(suite, recorded, "test_nightly", "base")
    before = snapshot(cassette)
    suite.makepyfile(test_nightly='''
        import httpx, pytest

        @pytest.mark.sse_cassette("base", record_mode="all", upstream="http://127.0.0.1:9")
        def test_logs(sse_cassette):
            assert httpx.get(sse_cassette.base_url + "/ci/logs").status_code == 200
    ''')
    result = run(suite)
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines_random([
        "*sse-recorder: record mode all: cassettes/test_nightly/base.sqlite kept as it was*",
        "*sse-recorder: the recorder's last words while recording*",
    ])
    assert snapshot(cassette) == before  # same bytes, same mtime
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["base.sqlite"]


def test_the_command_line_record_mode_wins_over_the_marker(
    suite: pytest.Pytester, recorded: Path
) -> None:
    cassette = place(suite, recorded, "test_override", "base")
    before = snapshot(cassette)
    suite.makepyfile(test_override='''
        import httpx, pytest

        @pytest.mark.sse_cassette("base", record_mode="all", upstream="http://127.0.0.1:9")
        def test_logs(sse_cassette):
            assert sse_cassette.record_mode == "none" and not sse_cassette.recording
            assert httpx.get(sse_cassette.base_url + "/ci/logs").status_code == 200
    ''')
    run(suite, "--sse-record-mode=none").assert_outcomes(passed=1)
    assert snapshot(cassette) == before  # the marker's "all" would have deleted it


def test_once_records_over_a_cassette_a_failed_recording_left_empty(
    suite: pytest.Pytester, demo_upstream: str
) -> None:
    """A `once` run whose upstream was down left a cassette with no interaction: the next
    `once` run records it instead of answering 404 from it; `none` says what it is."""
    cassette = suite.path / "cassettes" / "test_refill" / "test_logs.sqlite"
    cassette.parent.mkdir(parents=True)

    async def empty() -> None:  # what older releases left (this one removes it on close)
        recording = await Cassette.open_for_recording(suite.path / "failed.sqlite")
        await recording.finish_recording()
        shutil.copyfile(suite.path / "failed.sqlite", cassette)
        await recording.close()

    asyncio.run(empty())
    assert urls(cassette) == []
    suite.makepyfile(test_refill='''
        import httpx

        def test_logs(sse_cassette):
            assert httpx.get(sse_cassette.base_url + "/ci/logs").status_code == 200
    ''')
    emptied = run(suite)  # none: a clear error, not a 404
    emptied.assert_outcomes(errors=1)
    emptied.stdout.fnmatch_lines([
        "sse-recorder: cassettes/test_refill/test_logs.sqlite: the cassette holds no response "
        "to replay (a recording that failed?); record it again with --sse-record-mode=once*"])
    recorder = suite.path / "bin" / "my-sse-recorder"
    recorder.parent.mkdir()
    recorder.write_text(f"#!{sys.executable}\nfrom sse_recorder.cli import main\nmain()\n")
    recorder.chmod(0o755)
    result = run(suite, "--sse-record-mode=once", f"--sse-upstream={demo_upstream}",
                 f"--sse-recorder-executable={recorder}",
                 "--sse-block-network")  # the test reaches its recorder, the recorder upstream
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"sse-recorder: recording with {recorder} "
                                 "(sse_recorder_executable)"])
    assert urls(cassette) == ["ci/logs"]


def test_a_configured_recorder_without_mitmproxy_is_named_not_run(
    suite: pytest.Pytester
) -> None:
    recorder = suite.path / "core-only-sse-recorder"  # `python -S`: no site-packages
    recorder.write_text(f"#!{sys.executable} -S\nraise SystemExit('ran')\n")
    recorder.chmod(0o755)
    suite.makepyfile(test_lacking='''
        def test_logs(sse_cassette):
            sse_cassette.base_url
    ''')
    result = run(suite, "--sse-record-mode=once", "--sse-upstream=http://127.0.0.1:9",
                 f"--sse-recorder-executable={recorder}")
    result.assert_outcomes(failed=1)
    message = (f"sse_recorder_executable = {recorder}: its Python cannot import mitmproxy; "
               "install the recorder with `pipx install 'sse-recorder[record]'` (or `uv tool "
               "install 'sse-recorder[record]'`)")
    result.stdout.fnmatch_lines([f"sse-recorder: cannot record: {message}",  # the header
                                 "sse-recorder: cannot record cassettes/test_lacking/"
                                 f"test_logs.sqlite: {message}"])
    assert not (suite.path / "cassettes").exists()


def test_a_relative_marker_path_that_does_not_exist_says_where_it_was_looked_for(
    suite: pytest.Pytester
) -> None:
    suite.mkpydir("sub")
    suite.path.joinpath("sub", "test_paths.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.sse_cassette(path="data/chat.sqlite")
        def test_chat(sse_cassette):
            pass
    '''))
    result = run(suite)
    result.assert_outcomes(errors=1)
    looked = suite.path / "sub" / "data" / "chat.sqlite"
    result.stdout.fnmatch_lines([
        "sse-recorder: sub/data/chat.sqlite (path='data/chat.sqlite' is relative to the test "
        f"file's directory: looked for {looked}): no such cassette (record mode none*"])
    markers = run(suite, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.sse_cassette(*path= is relative to the test "
                                  "file's directory (default: cassettes/<test module>/<name>"
                                  ".sqlite there)"])


# -- --sse-block-network -------------------------------------------------------------------


@pytest.fixture
def elsewhere() -> Iterator[socket.socket]:
    """A loopback server the fixture does not own: "the network" for these tests."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


def connections(listener: socket.socket) -> int:
    """How many connections reached `listener` (all queued ones are accepted)."""
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


BLOCKED = '''
import os, socket

import httpx, openai, pytest

PORT = int(os.environ["ELSEWHERE_PORT"])


@pytest.mark.sse_cassette("base")
def test_replay_passes(sse_cassette):
    response = httpx.get(sse_cassette.base_url + "/ci/logs")
    assert response.status_code == 200 and "workflow_run" in response.text


@pytest.mark.sse_cassette("base")
def test_sdk_left_on_another_url(sse_cassette):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="sk-test",
                           max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                   messages=[{"role": "user", "content": "Say hello"}])


@pytest.mark.sse_cassette("base")
def test_error_swallowed(sse_cassette):
    try:
        socket.create_connection(("localhost", PORT), timeout=5).close()
    except OSError:
        pass


def test_without_the_fixture():
    sock = socket.socket()
    try:
        assert sock.connect_ex(("127.0.0.1", PORT)) == 0
    finally:
        sock.close()
'''


@pytest.mark.parametrize(("allowed", "says"), [
    ("127.0.0.1:abc", "'127.0.0.1:abc': expected host or host:port"),
    ("localhost,::::", "'::::': not an IPv6 address"),
    ("h:0", "'h:0': expected host or host:port (a port from 1 to 65535)"),
])
def test_a_malformed_allowed_host_is_a_usage_error(suite: pytest.Pytester, allowed: str,
                                                   says: str) -> None:
    """It was accepted, and the host it meant was then blocked (an audit found it)."""
    suite.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = run(suite, "--sse-block-network", f"--sse-allowed-hosts={allowed}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"sse_allowed_hosts: {says}" in result.stderr.str()


def test_block_network_fails_a_test_that_connects_anywhere_but_its_replay(
    suite: pytest.Pytester, recorded: Path, elsewhere: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = elsewhere.getsockname()[1]
    monkeypatch.setenv("ELSEWHERE_PORT", str(port))
    place(suite, recorded, "test_blocked", "base")
    suite.makepyfile(test_blocked=BLOCKED)
    result = run(suite, "--sse-block-network")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["sse-recorder: network blocked except the cassettes' servers "
                                 "on 127.0.0.1 and nothing else"])
    result.stdout.fnmatch_lines_random([
        "*openai.APIConnectionError: Connection error.*",
        "*- sse-recorder: blocked connections -*",
        f"sse-recorder: --sse-block-network blocked 1 connection from this test: "
        f"127.0.0.1:{port}",
        f"sse-recorder: --sse-block-network blocked 1 connection from this test: "
        f"localhost:{port}",
        f"*NetworkBlocked: sse-recorder: --sse-block-network blocked a connection to "
        f"127.0.0.1:{port} (no cassette is being served)*",
    ])
    assert connections(elsewhere) == 0
    # an allowed host is reached, and without the option nothing is blocked
    run(suite, "--sse-block-network", f"--sse-allowed-hosts=localhost,127.0.0.1:{port}",
        "-k", "swallowed or without").assert_outcomes(passed=2)
    assert connections(elsewhere) >= 2
    run(suite, "-k", "without").assert_outcomes(passed=1)
    assert connections(elsewhere) == 1


# -- parallel, deterministic, proxy, faults ------------------------------------------------


def test_xdist_workers_each_serve_their_own_replays_in_any_order(
    suite: pytest.Pytester, recorded: Path
) -> None:
    place(suite, recorded, "test_parallel", "base")
    suite.makeconftest('''
        def pytest_collection_modifyitems(items):
            items.reverse()
    ''')
    suite.makepyfile(test_parallel='''
        import os, httpx, pytest

        @pytest.mark.sse_cassette("base")
        @pytest.mark.parametrize("n", range(8))
        def test_logs(sse_cassette, n):
            assert os.environ["PYTEST_XDIST_WORKER"] in ("gw0", "gw1")
            target = "/ci/logs" if n % 2 else "/v1/chat/completions"
            method = "GET" if n % 2 else "POST"
            body = None if n % 2 else {"model": "gpt-4o-mini", "stream": True,
                                       "messages": [{"role": "user", "content": "Say hello"}]}
            response = httpx.request(method, sse_cassette.base_url + target, json=body)
            assert response.status_code == 200
            assert [s.outcome for s in sse_cassette.served] == ["clean"]
    ''')
    result = run(suite, "-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*2 workers [[]8 items[]]*"])


DETERMINISM = '''
import json, os, socket, time
from urllib.parse import urlsplit

import h11


def http_chunks(base_url, target):
    """The response's HTTP chunks exactly as framed on the wire, however TCP split them."""
    url = urlsplit(base_url)
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(conn.send(h11.Request(method="GET", target=target,
                                           headers=[("Host", url.netloc)]))
                     + conn.send(h11.EndOfMessage()))
        chunks, current = [], b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                current += event.data
                if event.chunk_end:
                    chunks.append(current.decode())
                    current = b""
            elif isinstance(event, h11.EndOfMessage):
                return chunks


def test_chunks(sse_cassette):
    started = time.monotonic()
    chunks = http_chunks(sse_cassette.base_url, "/ci/logs")
    elapsed = time.monotonic() - started
    with open(os.environ["SSE_PLUGIN_OUT"], "a") as out:
        out.write(json.dumps({"chunks": chunks, "elapsed": elapsed}) + "\\n")
'''


def test_replaying_twice_gives_the_same_events_in_the_same_chunks(
    suite: pytest.Pytester, recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place(suite, recorded, "test_determinism", "test_chunks")
    suite.makepyfile(test_determinism=DETERMINISM)
    out = tmp_path / "runs.jsonl"
    monkeypatch.setenv("SSE_PLUGIN_OUT", str(out))
    run(suite).assert_outcomes(passed=1)  # instant, the default
    run(suite, "--sse-speed=1").assert_outcomes(passed=1)  # at the recorded pace
    instant, paced = (json.loads(line) for line in out.read_text().splitlines())

    interaction, stored, _ = asyncio.run(load(recorded))[0]
    assert interaction.end_offset_ns is not None
    chunks, duration = [c.data.decode() for c in stored], interaction.end_offset_ns / 1e9
    assert instant["chunks"] == paced["chunks"] == chunks
    events = [i for i in parse("".join(chunks).encode()) if isinstance(i, Event)]
    assert len(events) >= 10
    assert instant["elapsed"] < min(0.25, duration / 2)
    assert paced["elapsed"] >= duration * 0.8


PROXY = '''
import ssl

import httpx, openai, pytest

import sse_recorder.testing.plugin as plugin

TEXT = "안녕하세요! SSE 데모 업스트림입니다."


def chat(sse_cassette):
    """The SDK keeps its real URL: only its HTTP client goes through the proxy."""
    tls = ssl.create_default_context(cafile=str(sse_cassette.ca_cert))
    http_client = httpx.Client(proxy=sse_cassette.proxy_url, verify=tls)
    client = openai.OpenAI(api_key="sk-test", max_retries=0, http_client=http_client)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Say hello"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    http_client.close()
    return text


@pytest.mark.sse_cassette("base")
def test_in_process_proxy(sse_cassette):
    assert chat(sse_cassette) == TEXT
    assert [(s.target, s.interaction_id, s.outcome) for s in sse_cassette.served] == [
        ("/v1/chat/completions", 2, "clean")]


@pytest.mark.sse_cassette("base")
def test_proxy_subprocess_without_mitmproxy_here(sse_cassette, monkeypatch):
    monkeypatch.setattr(plugin, "_import_mitmproxy", lambda: False)
    assert chat(sse_cassette) == TEXT
    assert [(s.target, s.interaction_id, s.outcome) for s in sse_cassette.served] == [
        ("/v1/chat/completions", 2, "clean")]
'''


def test_proxy_mode_serves_clients_that_keep_their_real_https_urls(
    suite: pytest.Pytester, recorded: Path
) -> None:
    place(suite, recorded, "test_proxy", "base")
    suite.makepyfile(test_proxy=PROXY)
    run(suite).assert_outcomes(passed=2)
    # the proxies (in-process and subprocess) and the replay server are the fixture's own
    run(suite, "--sse-block-network").assert_outcomes(passed=2)


def test_marker_faults_cut_the_replayed_stream(suite: pytest.Pytester, recorded: Path) -> None:
    place(suite, recorded, "test_faults", "base")
    suite.makepyfile(test_faults='''
        import httpx, httpx_sse, pytest

        @pytest.mark.sse_cassette("base", faults=["drop:after_event=3,how=rst"], seed=7)
        def test_dropped(sse_cassette):
            events = []
            with pytest.raises(httpx.TransportError):
                with httpx.Client(base_url=sse_cassette.base_url) as client:
                    with httpx_sse.connect_sse(client, "GET", "/ci/logs") as source:
                        events.extend(source.iter_sse())
            assert 1 <= len([e for e in events if e.data]) <= 3  # of 13 recorded

        @pytest.mark.sse_cassette("base", faults=["explode:now=1"])
        def test_bad_spec(sse_cassette):
            pass
    ''')
    result = run(suite)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["sse-recorder: explode:now=1: unknown fault type 'explode'*"])


# -- the examples --------------------------------------------------------------------------


def test_the_examples_pass_from_their_committed_cassettes(tmp_path: Path) -> None:
    """From the clone, and from a copy outside it, without pytest-asyncio (disabled with
    `-p no:asyncio`, as if not installed) and with the network blocked: `examples/pytest.ini`
    keeps the repository's configuration out, so a user needs only the plugin and SDKs."""
    examples = REPO / "examples"
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    assert config["ini_options"]["testpaths"] == ["tests"]  # a bare `pytest` skips examples/
    cassettes = sorted(examples.glob("**/cassettes/**/*.sqlite"))
    assert len(cassettes) == 4  # three SDK streams and the browser page's
    before = {p: snapshot(p) for p in cassettes}
    copy = tmp_path / "elsewhere"
    shutil.copytree(examples, copy / "examples")
    for cwd in (REPO, copy):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "examples", "-p", "no:asyncio", "-p",
             "no:cacheprovider", "--sse-block-network"],
            cwd=cwd, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"rootdir: {cwd / 'examples'}\nconfigfile: pytest.ini" in done.stdout
        assert "5 passed" in done.stdout  # four SDK tests and one browser test
    assert {p: snapshot(p) for p in cassettes} == before  # replayed, never re-recorded

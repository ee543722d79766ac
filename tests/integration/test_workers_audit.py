"""`replay --workers N` where an audit found it failing: a port another supervisor holds, a
closed stderr, a replacement that can never start, no file descriptors left, the address
printed, and the number of workers set by the environment."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import SSE_RECORDER, read_line
from tests.integration import test_workers
from tests.integration.test_workers import Replay, alive, children, holder, read_until

cassette = test_workers.cassette  # the fixtures of the workers' suite
replay = test_workers.replay

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll `condition()` until it is true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_replay(*args: str, env: dict[str, str] | None = None,
               preexec_fn: Callable[[], object] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """`sse-recorder replay ARGS` to its end; a failure if it is still serving after 20 s."""
    with subprocess.Popen([SSE_RECORDER, "replay", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                          env=env, preexec_fn=preexec_fn) as popen:
        try:
            out, err = popen.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            popen.kill()
            out, err = popen.communicate()
            pytest.fail(f"still running after 20 s: stdout {out!r}, stderr {err!r}")
        return subprocess.CompletedProcess(popen.args, popen.returncode, out, err)


def assert_one_line_exit_2(run: subprocess.CompletedProcess[str], message: str) -> None:
    assert run.returncode == 2 and not run.stdout, (run.returncode, run.stdout, run.stderr)
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr


# -- 1: a port another supervisor holds ------------------------------------------------------


def test_a_port_another_supervisor_listens_on_is_refused(
    replay: type[Replay], cassette: Path
) -> None:
    """Both would have SO_REUSEPORT: without a check, the second joins the first's port and
    the kernel splits the connections between two cassettes."""
    first = replay("--workers", "2")
    run = run_replay(str(cassette), "--workers", "2", "--listen-port", str(first.port))
    assert_one_line_exit_2(
        run, f"sse-recorder: cannot listen on 127.0.0.1:{first.port}: address already in use")


# -- 3: a closed stderr ------------------------------------------------------------------------


def test_a_worker_dying_while_stderr_is_closed_is_replaced(cassette: Path) -> None:
    """`replay --workers 2 2>&1 | head -1`: the line saying a worker died is lost, and the
    supervisor goes on: the worker is replaced and takes connections."""
    with subprocess.Popen([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0",
                           "--workers", "2"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) as popen:
        try:
            port = int(read_line(popen, 30).rsplit(":", 1)[1])
            assert popen.stdout is not None
            popen.stdout.close()  # what `head -1` does once it has its line
            workers = children(popen.pid)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            until(lambda: len(children(popen.pid) - {victim}) == 2 or popen.poll() is not None,
                  "a replacement")
            assert popen.poll() is None, f"the supervisor exited with {popen.returncode}"
            (newcomer,) = children(popen.pid) - workers

            def newcomer_serves() -> bool:
                conns = [socket.create_connection(("127.0.0.1", port), timeout=10)
                         for _ in range(8)]
                try:
                    for conn in conns:
                        conn.sendall(b"GET /ticks HTTP/1.1\r\nHost: x\r\n\r\n")
                        assert conn.recv(12).startswith(b"HTTP/1.1 200")
                    return newcomer in {holder(conn, children(popen.pid)) for conn in conns}
                finally:
                    for conn in conns:
                        conn.close()

            until(newcomer_serves, "the replacement to take connections")
            assert popen.poll() is None
        finally:
            popen.send_signal(signal.SIGTERM)
            popen.wait(15)


# -- 4: a replacement that can never start ------------------------------------------------------


def test_replacements_that_keep_failing_to_start_stop_the_supervisor(
    replay: type[Replay], cassette: Path, tmp_path: Path
) -> None:
    """The cassette is gone: every replacement exits at once. After a few, the supervisor
    says why in one line and stops, instead of leaving the dead worker's socket to queue
    connections nobody will accept."""
    copy = tmp_path / "doomed.sqlite"
    shutil.copy(cassette, copy)
    server = replay("--workers", "2", of=copy)
    workers = server.workers()
    for path in tmp_path.glob("doomed.sqlite*"):
        path.unlink()
    os.kill(min(workers), signal.SIGKILL)
    try:
        status = server.process.popen.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("the supervisor still retries after 30 s:\n" + server.log.read_text())
    assert status == 1
    lines = server.log.read_text().splitlines()
    assert "failed to start 5 times in a row: giving up" in lines[-1], lines
    assert "exited with status 2" in lines[-1]  # why: the cassette could not be opened
    assert sum("no such cassette" in line for line in lines) == 5, lines  # each said why
    until(lambda: not any(alive(pid) for pid in workers), "the workers to stop")


# -- 5: no file descriptor left ----------------------------------------------------------------


def _few_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (50, 50))


@pytest.mark.parametrize(("count", "message"), [
    (30, "cannot start worker "),  # the supervisor's pipe to a worker
    (45, "cannot supervise the workers: too many open files"),  # its own wake-up pipe
])
def test_no_file_descriptor_left_is_one_line_and_exit_2(
    cassette: Path, count: int, message: str
) -> None:
    run = run_replay(str(cassette), "--workers", str(count), preexec_fn=_few_files)
    assert_one_line_exit_2(run, message)
    assert "too many open files" in run.stderr


# -- 6: the address printed ---------------------------------------------------------------------


def test_workers_print_the_address_one_process_prints(replay: type[Replay]) -> None:
    one = replay("--listen-host", "localhost")
    two = replay("--listen-host", "localhost", "--workers", "2")
    assert two.process.url.rsplit(":", 1)[0] == one.process.url.rsplit(":", 1)[0]
    assert "localhost" not in two.process.url


# -- 7: SSE_RECORDER_WORKERS --------------------------------------------------------------------


def test_errors_blame_the_environment_variable_not_the_flag(cassette: Path) -> None:
    env = {**os.environ, "SSE_RECORDER_WORKERS": "2"}
    run = run_replay(str(cassette), "--control-port", "0", env=env)
    assert_one_line_exit_2(run, "--control-port needs one process, not SSE_RECORDER_WORKERS=2")
    assert "--workers" not in run.stderr
    env["SSE_RECORDER_WORKERS"] = "garbage"
    run = run_replay(str(cassette), env=env)
    assert_one_line_exit_2(run, "SSE_RECORDER_WORKERS takes a number of processes")


def test_the_environment_variable_is_not_read_for_the_proxy(
    cassette: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "SSE_RECORDER_WORKERS": "garbage"}
    with subprocess.Popen([SSE_RECORDER, "replay", str(cassette), "--proxy", "--listen-port",
                           "0", "--confdir", str(tmp_path / "mitmproxy")], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as popen:
        try:
            assert read_line(popen, 30).startswith("http://127.0.0.1:")
        except EOFError:
            assert popen.stderr is not None
            pytest.fail(popen.stderr.read().decode())
        finally:
            popen.send_signal(signal.SIGTERM)
            assert popen.wait(15) == 0


# -- 8: every address the host names ----------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_every_interface_means_ipv4_and_ipv6_on_one_port(replay: type[Replay]) -> None:
    """`--listen-host ""` is every interface of both families (the workers listened on IPv4
    only), on the one port printed (one process given port 0 had a port per family)."""
    single = replay("--listen-host", "")
    spread = replay("--listen-host", "", "--workers", "2")
    pinned = replay("--listen-host", "", "--workers", "2", "--pin-clients")
    for family, loopback in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for server in (single, spread, pinned):
            workers = server.workers() or {server.pid}
            served = set()
            for _ in range(12):
                with socket.socket(family, socket.SOCK_STREAM) as conn:
                    conn.settimeout(10)
                    conn.connect((loopback, server.port))
                    conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert b"data: " in read_until(conn, b"\n\n")  # its response began
                    served.add(holder(conn, workers))
            # both workers listen on each address; pinned, one address meets one worker
            assert len(served) == (2 if server is spread else 1), (loopback, served)


def test_a_port_taken_on_a_later_address_is_tried_again(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0 on two addresses: the first one's free port may be taken on the second (by
    another program); another free port is tried, not a failure."""
    from sse_recorder.wire import listening

    calls = []
    real = listening._listen_on

    def taken_once(*args: object) -> listening.Listeners:
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(listening, "_listen_on", taken_once)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 0))])
    listeners = listening.listen("localhost", 0, 2)
    try:
        assert len(calls) == 2 and len(listeners.groups) == 2
        assert {sock.getsockname()[1] for sock in listeners.sockets} == {listeners.port}
        assert listeners.for_worker(1) == (listeners.groups[0][1], listeners.groups[1][1])
    finally:
        listeners.close()
    tries = []

    def always_taken(*args: object) -> listening.Listeners:
        tries.append(args)
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(listening, "_listen_on", always_taken)
    with pytest.raises(OSError):  # tried a bounded number of times, then said
        listening.listen("localhost", 0, 2)
    assert len(tries) == listening.PORT_TRIES
    tries.clear()
    with socket.socket() as probe:  # a free port, asked for by number
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(OSError):  # a port asked for is not another's to pick
        listening.listen("localhost", free, 2)
    assert len(tries) == 1

"""`sse-recorder replay --workers N`: one address, N real worker processes.

Which worker holds a connection is read from /proc (the server end's socket inode, found in
/proc/net/tcp{,6}, among each worker's file descriptors), so the tests prove where a
connection landed instead of inferring it from timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sse_recorder.demo.upstream import tick_event
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.replay.records import Served
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)
from tests.helpers import SSE_RECORDER, Process, start
from tests.integration.support import in_thread

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SSE = (("content-type", "text/event-stream"), ("cache-control", "no-cache"),
       ("transfer-encoding", "chunked"))
TICKS = 10  # /ticks: 10 events 20 ms apart
SLOW = 200  # /slow: 200 events 100 ms apart, long enough to hold while a worker dies
ORDER = (b'{"n": "first"}', b'{"n": "second"}')  # GET /order, recorded twice


async def write_cassette(path: Path) -> None:
    """The cassette the tests serve, written with the recorder's own batch API."""
    cassette = await Cassette.open_for_recording(path)
    try:
        entries: list[tuple[str, tuple[tuple[str, str], ...], list[tuple[int, bytes]]]] = [
            ("/ticks", SSE, [(i * 20_000_000, tick_event(i)) for i in range(TICKS)]),
            ("/slow", SSE, [(i * 100_000_000, tick_event(i)) for i in range(SLOW)]),
        ]
        for body in ORDER:
            entries.append(("/order", (("content-type", "application/json"),
                                       ("content-length", str(len(body)))), [(0, body)]))
        for target, headers, chunks in entries:
            iid = cassette.allocate_id()
            request = RecordedRequest("GET", f"http://127.0.0.1{target}", (("host", "x"),))
            await cassette.write(WriteBatch(
                starts=[InteractionStart(iid, time.time(), request)],
                heads=[HeadUpdate(iid, ResponseHead(200, "OK", headers), 0,
                                  headers is SSE)],
                chunks=[(iid, seq, ns, data) for seq, (ns, data) in enumerate(chunks)],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, chunks[-1][0], None)]))
        await cassette.finish_recording()
    finally:
        await cassette.close()


@pytest.fixture(scope="module")
def cassette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workers") / "cassette.sqlite"
    in_thread(write_cassette(path))
    return path


class Replay:
    """A running `sse-recorder replay --workers N` and what /proc says about it."""

    def __init__(self, cassette: Path, log: Path, *options: str) -> None:
        self.log = log
        self.process = start([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0",
                              *options], log)
        self.port = int(self.process.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def workers(self) -> set[int]:
        return children(self.pid)

    def stream(self, path: str = "/slow", source: str = "127.0.0.1",
               last_event_id: str | None = None) -> socket.socket:
        """A connection from `source` whose response has begun (so a worker accepted it)."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                        source_address=(source, 0))
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        read_until(conn, b"\n\n")
        return conn

    def stderr_lines(self, *parts: str, count: int = 1, timeout: float = 10) -> list[str]:
        """Stderr lines holding every part, once there are `count` (deadline `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log.read_text(errors="replace").splitlines()
                     if all(part in line for part in parts)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        workers = self.workers()
        status = self.process.stop(sig)
        assert not {pid for pid in workers if alive(pid)}, "a worker outlived the supervisor"
        return status


@pytest.fixture
def replay(cassette: Path, tmp_path: Path) -> Iterator[type[Replay]]:
    """`replay(*options)` starts a replay of the module's cassette; all stop at the end."""
    started: list[Replay] = []

    class Started(Replay):
        def __init__(self, *options: str, of: Path = cassette) -> None:
            super().__init__(of, tmp_path / f"replay-{len(started)}.txt", *options)
            started.append(self)

    yield Started
    for each in started:
        each.stop()  # (one that exited already is reaped, its pipe closed)


# -- /proc -------------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _address(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    if len(host) == 8:
        return socket.inet_ntoa(struct.pack("<I", int(host, 16))), int(port, 16)
    raw = b"".join(struct.pack("<I", int(host[i:i + 8], 16)) for i in range(0, 32, 8))
    return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)


def holder(conn: socket.socket, pids: set[int]) -> int:
    """The process among `pids` holding the server end of `conn`."""
    client = conn.getsockname()[:2]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if _address(fields[2]) == client:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no process of {pids} holds the server end of {client}")


def read_until(conn: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data:
        piece = conn.recv(65536)
        if not piece:
            raise EOFError(f"connection closed before {marker!r}: {data[-200:]!r}")
        data += piece
        assert len(data) < limit
    return data


# -- serving ---------------------------------------------------------------------------------


def test_two_workers_serve_one_address(replay: type[Replay]) -> None:
    server = replay("--workers", "2")
    workers = server.workers()
    assert len(workers) == 2
    streams = [server.stream() for _ in range(16)]
    holders = [holder(conn, workers) for conn in streams]
    assert set(holders) == workers  # the kernel spread them: both serve
    for conn in streams:  # and each goes on with the recording
        assert b'data: {"i": 1}' in read_until(conn, b'data: {"i": 1}')
        conn.close()
    body = httpx.get(f"{server.process.url}/ticks", timeout=10).text
    assert body == b"".join(tick_event(i) for i in range(TICKS)).decode()
    assert server.stop(signal.SIGINT) == 0  # Ctrl-C stops them all


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    replay: type[Replay],
) -> None:
    server = replay("--workers", "2")
    workers = server.workers()
    streams = [server.stream() for _ in range(12)]
    by_worker = {pid: [c for c in streams if holder(c, workers) == pid] for pid in workers}
    victim, survivor = sorted(workers, key=lambda pid: -len(by_worker[pid]))
    assert by_worker[survivor], "the kernel gave one worker every connection"
    os.kill(victim, signal.SIGKILL)
    # at once, before the replacement: the ones hashed to the victim's socket wait for it
    meanwhile = [server.stream() for _ in range(8)]
    lines = server.stderr_lines("serving again")
    assert lines, server.log.read_text()
    assert server.stderr_lines(f"(pid {victim}) was killed by SIGKILL; starting another")
    for conn in by_worker[survivor]:  # the survivor's streams never stopped
        assert b'data: {"i": 6}' in read_until(conn, b'data: {"i": 6}')
    for conn in by_worker[victim]:  # the victim's ended with it
        conn.settimeout(5)
        with pytest.raises((EOFError, ConnectionError)):
            read_until(conn, b'data: {"i": 199}')
    replaced = server.workers()
    assert len(replaced) == 2 and survivor in replaced and victim not in replaced
    (newcomer,) = replaced - {survivor}
    fresh = [server.stream() for _ in range(12)]
    assert newcomer in {holder(conn, replaced) for conn in fresh}  # it takes connections
    for conn in [*streams, *meanwhile, *fresh]:
        conn.close()


def test_one_fault_log_of_whole_lines(replay: type[Replay], tmp_path: Path) -> None:
    """Both workers append long lines to one file at the same time: every line is whole."""
    fault_log = tmp_path / "faults.jsonl"
    server = replay("--workers", "2", "--instant", "--fault-log", str(fault_log),
                    "--log-format", "json", "--fault", "inject:shape=warning,per=event,p=1")

    def fetch(_: int) -> int:
        response = httpx.get(f"{server.process.url}/ticks", timeout=10,
                             headers={"connection": "close"})  # a new connection each
        return response.text.count("event: warning")

    with ThreadPoolExecutor(8) as pool:
        injected = list(pool.map(fetch, range(40)))
    assert len(set(injected)) == 1 and injected[0] >= TICKS  # the same faults every time
    server.stop()
    lines = fault_log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a torn line would not parse
    assert len(records) == 40 and all(len(r["faults"]) == injected[0] for r in records)
    assert min(len(line) for line in lines) > 1000  # long enough to tear if it could
    logged = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]
    assert len(logged) == 40
    # each worker numbers its own responses: the worker says whose number it is
    for named in (records, logged):
        assert {r["worker"] for r in named} == {1, 2}  # 40 connections: both served
        assert len({(r["worker"], r["number"]) for r in named}) == 40
        assert all(Served.from_record(r).record() == r for r in named)


# -- pinning -------------------------------------------------------------------------------------


def test_pin_clients_keeps_one_address_on_one_worker(replay: type[Replay]) -> None:
    """127.0.0.2 and 127.0.0.3 differ by one modulo 2: each gets a worker of its own, and
    the order of repeated identical requests holds per client."""
    server = replay("--workers", "2", "--pin-clients")
    workers = server.workers()
    places: dict[str, set[int]] = {}
    for source in ("127.0.0.2", "127.0.0.3"):
        streams = [server.stream(source=source) for _ in range(6)]
        places[source] = {holder(conn, workers) for conn in streams}
        for conn in streams:
            conn.close()
    assert all(len(pids) == 1 for pids in places.values()), places
    assert places["127.0.0.2"] != places["127.0.0.3"]
    for source in ("127.0.0.2", "127.0.0.3"):
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, timeout=10) as client:
            bodies = [client.get(f"{server.process.url}/order",
                                 headers={"connection": "close"}).content for _ in range(3)]
        assert bodies == [ORDER[0], ORDER[1], ORDER[1]]  # recorded order, then the last


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    (("--workers", "0"), "--workers takes a number of processes (1 or more) or auto"),
    (("--workers", "many"), "--workers takes a number of processes"),
    (("--pin-clients",), "--pin-clients needs --workers 2 or more"),
    (("--proxy", "--workers", "2"), "--workers does nothing with --proxy"),
])
def test_bad_worker_options_exit_2_in_one_line(
    cassette: Path, options: tuple[str, ...], message: str
) -> None:
    run = subprocess.run([SSE_RECORDER, "replay", str(cassette), *options],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and not run.stdout
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr


def test_a_bad_cassette_is_reported_once(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    run = subprocess.run([SSE_RECORDER, "replay", str(missing), "--workers", "3"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and not run.stdout
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("sse-recorder: "), run.stderr


def test_a_busy_port_is_reported_once(cassette: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([SSE_RECORDER, "replay", str(cassette), "--workers", "2",
                              "--listen-port", str(port)],
                             capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and not run.stdout
    assert run.stderr.count("\n") == 1 and "address already in use" in run.stderr.lower()


def test_workers_auto_is_one_per_cpu_and_warns_once(replay: type[Replay]) -> None:
    server = replay("--workers", "auto", "--fault", "refuse:route=api.example.com/none")
    assert len(server.workers()) == len(os.sched_getaffinity(0))
    server.stop()
    assert server.log.read_text().count("sse-recorder: warning: ") == 1


def test_the_environment_sets_the_workers(cassette: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SSE_RECORDER_WORKERS": "2"}
    process = Process([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0"],
                      tmp_path / "env.txt", env=env)
    try:
        assert len(children(process.popen.pid)) == 2
    finally:
        assert process.stop() == 0
    proxy = Process([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0", "--proxy",
                     "--confdir", str(tmp_path / "mitmproxy")], tmp_path / "proxy.txt", env=env)
    try:  # the proxy is one process: the environment's workers do not apply
        assert proxy.url.startswith("http://") and not children(proxy.popen.pid)
    finally:
        assert proxy.stop() == 0


def test_a_killed_supervisor_takes_its_workers_along(replay: type[Replay]) -> None:
    server = replay("--workers", "2")
    workers = server.workers()
    os.kill(server.pid, signal.SIGKILL)
    server.process.popen.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(pid) for pid in workers)


def test_without_reuseport_the_workers_share_one_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_recorder.wire import listening

    monkeypatch.setattr(listening, "REUSEPORT", False)
    listeners = listening.listen("127.0.0.1", 0, 3)
    try:
        assert len(listeners.sockets) == 1 and listeners.port
        assert {listeners.for_worker(i) for i in range(3)} == {(listeners.sockets[0],)}
        with socket.create_connection(("127.0.0.1", listeners.port), timeout=5):
            conn, _ = listeners.sockets[0].accept()  # it listens
            conn.close()
    finally:
        listeners.close()

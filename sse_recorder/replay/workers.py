"""`replay --workers N`: one listening address served by N processes.

Why processes: one Python process tops out near 100,000 timed sends per second and cannot
use a second core. Each worker is a fork of the supervising process with its own event loop
and its own cassette reader; the supervisor only holds the listening sockets, prints the URL
once every worker is ready, reports and replaces a worker that dies (and stops them all when
its replacements keep failing to start), and stops them all on SIGINT or SIGTERM.

How connections reach the workers:
- SO_REUSEPORT (Linux, the BSDs): one listening socket per worker on the same address; the
  kernel spreads connections over them by a hash of both ends. The supervisor keeps every
  socket open, so the connections hashed to a worker that died wait in its queue for its
  replacement instead of being refused;
- a shared listening socket where SO_REUSEPORT is missing: every worker accepts from it;
- `pin` (Linux): a classic BPF program picks the socket by the client's address (its last
  32 bits, modulo N), so every connection from one client address meets the same worker and
  that worker's per-server state (the order of repeated identical requests, the response
  numbers faults are drawn from).

Logs: the workers write to the stderr they inherit, a whole line per write(2); the fault log
is opened by each worker in append mode and gets a whole line per write(2), so lines never
interleave within a line.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sse_recorder.errors import ConfigError, SSERecorderError

__all__ = ["AUTO", "Listeners", "Seat", "StartError", "Supervisor", "listen", "worker_count"]

AUTO = "auto"
BACKLOG = 4096
STOP_TIMEOUT = 10.0  # seconds for the workers to stop after SIGTERM, then SIGKILL
QUICK_DEATH = 1.0  # a worker that dies sooner than this is restarted after a growing delay
MAX_DELAY = 8.0
# Replacements that exit before they serve, in a row, before the supervisor gives up. Five
# cover at least 3.75 s of retries (0.25 + 0.5 + 1 + 2 s apart): enough for a passing
# shortage (file descriptors, memory, a locked cassette). A cause that outlasts them (the
# cassette deleted or damaged) is not going away, and meanwhile the dead worker's socket
# keeps queueing its share of new connections, which would wait for ever.
MAX_FAILED_STARTS = 5


class StartError(SSERecorderError):
    """A worker process could not be created (no file descriptor or memory left)."""

    def __init__(self, what: str, exc: OSError) -> None:
        self.reason = (exc.strerror or str(exc)).lower()
        super().__init__(f"{what}: {self.reason}")


def worker_count(text: str, source: str = "--workers") -> int:
    """`N` (at least 1) or `auto`: the CPUs this process may run on. `source` names where
    `text` came from (the option, or the environment variable) in the error."""
    if text.strip().lower() == AUTO:
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{source} takes a number of processes (1 or more) or {AUTO}, "
                          f"not {text!r}")
    return count


# -- listening -------------------------------------------------------------------------------


@dataclass
class Listeners:
    """The listening sockets, a group per address the host names (`""`: IPv4 and IPv6),
    all on one port: in each group one socket per worker (SO_REUSEPORT), or one they
    share."""

    host: str
    port: int
    groups: list[list[socket.socket]]

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for group in self.groups for sock in group]

    def for_worker(self, index: int) -> tuple[socket.socket, ...]:
        """Its own socket in each group, or the shared ones."""
        return tuple(group[index % len(group)] for group in self.groups)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


REUSEPORT = hasattr(socket, "SO_REUSEPORT")
SO_ATTACH_REUSEPORT_CBPF = 51  # Linux, <asm-generic/socket.h>
SKF_NET_OFF = -0x100000  # classic BPF: loads relative to the network header
# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}: load a word, A %= k, return A
LD_W_ABS, ALU_MOD_K, RET_A = 0x20, 0x94, 0x16
# where the last 32 bits of the source address are in the IP header
SOURCE_WORD: dict[int, int] = {socket.AF_INET: 12, socket.AF_INET6: 20}


_Address = tuple[int, int, int, tuple[Any, ...]]  # family, type, protocol, socket address
PORT_TRIES = 8  # port 0 on several addresses: free ports tried (see `listen`)


def listen(host: str, port: int, count: int, pin: bool = False) -> Listeners:
    """Listening sockets on `host:port` (port 0: a free one) for `count` workers: on every
    address `host` names, as one process listens (`""`: every interface, IPv4 and IPv6),
    but on one port for all of them (one process given port 0 gets one per address).

    Raises OSError when the address cannot be listened on, ConfigError when `pin` is
    asked where the kernel cannot do it."""
    if pin and not (REUSEPORT and sys.platform.startswith("linux")):
        raise ConfigError("--pin-clients needs Linux (SO_REUSEPORT with a BPF program)")
    addresses: list[_Address] = list(dict.fromkeys(
        (family, kind, proto, address) for family, kind, proto, _, address
        in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE)))
    if port and REUSEPORT:
        for address in addresses:
            _check_free(*address)
    # port 0 on several addresses: another program may hold the first one's free port on a
    # later address; another free port is tried then
    for _ in range(PORT_TRIES - 1 if not port and len(addresses) > 1 else 0):
        try:
            return _listen_on(addresses, count, pin)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    return _listen_on(addresses, count, pin)  # the last try: its error is the caller's


def _listen_on(addresses: Sequence[_Address], count: int, pin: bool) -> Listeners:
    """A group of sockets per address, all on the port the first one binds."""
    groups: list[list[socket.socket]] = []
    port = int(addresses[0][3][1])
    try:
        for family, kind, proto, address in addresses:
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(count if REUSEPORT else 1):
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if REUSEPORT:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                port = sock.getsockname()[1]  # port 0: the others join the port it got
                sock.listen(BACKLOG)  # the kernel numbers the group's sockets in listen order
            if pin:
                _pin_by_source(group[0], family, count)
    except BaseException:
        for sock in (sock for group in groups for sock in group):
            sock.close()
        raise
    first = groups[0][0].getsockname()
    return Listeners(str(first[0]), int(first[1]), groups)  # the URL one process prints


def _check_free(family: int, kind: int, proto: int, address: tuple[Any, ...]) -> None:
    """Raise OSError (EADDRINUSE) when something listens on `address` already.

    The workers' sockets cannot tell: with SO_REUSEPORT they would join any other
    SO_REUSEPORT listener of this user there (another `replay --workers`), and the kernel
    would split the traffic between the two. A socket without it, bound the way one process
    binds (SO_REUSEADDR, as asyncio does), fails on a busy port instead. It is closed before
    the workers' sockets bind: a process taking the port in between is not caught."""
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)


def _pin_by_source(sock: socket.socket, family: int, count: int) -> None:
    """Attach to the reuseport group the program that picks socket `source % count`."""
    program = [(LD_W_ABS, 0, 0, (SKF_NET_OFF + SOURCE_WORD[family]) & 0xFFFFFFFF),
               (ALU_MOD_K, 0, 0, count), (RET_A, 0, 0, 0)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise ConfigError(f"--pin-clients: the kernel refused the BPF program "
                          f"({exc.strerror})") from None


# -- supervising -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """What one worker serves from."""

    index: int  # 0..N-1
    sockets: tuple[socket.socket, ...]  # listening, one per address: serve each
    first: bool  # the first worker's first start: it alone prints start-up warnings


@dataclass
class _Worker:
    index: int
    pid: int = 0
    status: int = -1  # the read end of the worker's stdout: its URL line says it is ready
    ready: bool = False
    started: float = 0.0
    delay: float = 0.0  # before the next restart when it keeps dying quickly
    failed_starts: int = 0  # replacements in a row that ended before they served
    due: float | None = None  # when to start it again


@dataclass
class Supervisor:
    """Start `count` forks running `serve(seat)` (which returns an exit status), print the
    URL once all are ready, replace those that die, stop all on SIGINT/SIGTERM."""

    listeners: Listeners
    count: int
    serve: Callable[[Seat], int]
    ready: Callable[[], None]  # every worker is serving: print the URL
    report: Callable[[str], None]  # one line about the workers
    workers: list[_Worker] = field(default_factory=list)
    _selector: selectors.BaseSelector = field(init=False)
    _stopping: bool = False
    _announced: bool = False
    _wake: tuple[int, int] = (-1, -1)  # the signal wake-up pipe

    def run(self) -> int:
        """Supervise until signalled (0), until the first worker fails to start (its exit
        status: it printed why), or until a worker's replacements keep failing to start (1).
        Raises StartError when a first worker cannot be created: the others are stopped."""
        try:
            self._selector = selectors.DefaultSelector()
            wake_r, wake_w = self._wake = os.pipe()
        except OSError as exc:
            self.listeners.close()
            raise StartError("cannot supervise the workers", exc) from None
        os.set_blocking(wake_w, False)
        previous = {sig: signal.signal(sig, self._signalled)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self._selector.register(wake_r, selectors.EVENT_READ)
        self.workers = [_Worker(i) for i in range(self.count)]
        try:
            self._start(self.workers[0])  # alone first: a bad cassette is reported once
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()
            self._selector.close()
            os.close(wake_r)
            os.close(wake_w)
            self.listeners.close()

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _loop(self, wake_r: int) -> int:
        while not self._stopping:
            now = time.monotonic()
            dues = [w.due for w in self.workers if w.due is not None]
            timeout = max(0.0, min(dues) - now) if dues else None
            for key, _ in self._selector.select(timeout):
                if key.fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    continue
                worker: _Worker = key.data
                ended = self._read(worker)
                if ended is not None and not self._stopping:
                    failed = self._ended(worker, *ended)
                    if failed is not None:
                        return failed
            now = time.monotonic()
            for worker in self.workers:
                if worker.due is not None and worker.due <= now and not self._stopping:
                    worker.due = None
                    failed = self._restart(worker)
                    if failed is not None:
                        return failed
        return 0

    def _restart(self, worker: _Worker) -> int | None:
        """Start a replacement; one that cannot be created counts as a failed start."""
        try:
            self._start(worker)
        except StartError as exc:
            worker.started = time.monotonic()
            return self._replace(worker, f"could not be started ({exc.reason})", ready=False)
        return None

    def _read(self, worker: _Worker) -> tuple[int, int] | None:
        """Read what the worker printed; once it ended, its pid and exit status."""
        data = os.read(worker.status, 4096)
        if data:  # it prints one line, its URL, once it serves
            if not worker.ready:
                worker.ready = True
                self._on_ready(worker)
            return None
        self._selector.unregister(worker.status)
        os.close(worker.status)
        worker.status = -1
        pid, worker.pid = worker.pid, 0
        return pid, os.waitpid(pid, 0)[1]

    def _on_ready(self, worker: _Worker) -> None:
        if self._stopping:
            return
        if not self._announced:
            if worker.index == 0:  # the cassette opens: start the others all at once
                for other in self.workers[1:]:
                    self._start(other)
            if all(w.ready for w in self.workers):
                self._announced = True
                self.ready()
        else:
            self.report(f"worker {worker.index + 1} of {self.count} (pid {worker.pid}) "
                        "is serving again")

    def _ended(self, worker: _Worker, pid: int, status: int) -> int | None:
        """A worker ended on its own: the exit status to stop with (a start-up failure),
        else None, with its replacement scheduled."""
        how = _how(status)
        if not self._announced:  # it printed why it could not start
            if worker.index != 0:
                self.report(f"worker {worker.index + 1} of {self.count} {how} while starting")
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1
        return self._replace(worker, f"(pid {pid}) {how}", worker.ready)

    def _replace(self, worker: _Worker, what: str, ready: bool) -> int | None:
        """Schedule the replacement of a worker that ended (`what` happened to it), sooner
        if it lived long; None, or 1 when its replacements keep failing to start."""
        name = f"worker {worker.index + 1} of {self.count}"
        worker.failed_starts = 0 if ready else worker.failed_starts + 1
        if worker.failed_starts >= MAX_FAILED_STARTS:
            self.report(f"{name} {what}; it failed to start {worker.failed_starts} times in a "
                        "row: giving up, stopping every worker")
            return 1
        lived = time.monotonic() - worker.started
        worker.delay = (min(max(worker.delay * 2, 0.25), MAX_DELAY)
                        if lived < QUICK_DEATH else 0.0)
        worker.ready = False
        worker.due = time.monotonic() + worker.delay
        after = f" in {worker.delay:g} s" if worker.delay else ""
        self.report(f"{name} {what}; starting another{after}")
        return None

    def _start(self, worker: _Worker) -> None:
        """Fork the worker; StartError when the system has no pipe or process to spare."""
        seat = Seat(worker.index, self.listeners.for_worker(worker.index),
                    first=worker.index == 0 and worker.started == 0.0)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed stderr loses its line
                stream.flush()  # or the child would write the parent's buffer again
        read = write = -1
        try:
            read, write = os.pipe()
            pid = os.fork()
        except OSError as exc:
            for fd in (read, write):
                if fd >= 0:
                    os.close(fd)
            raise StartError(f"cannot start worker {worker.index + 1} of {self.count}",
                             exc) from None
        if pid == 0:  # the worker
            os.close(read)
            os._exit(self._child(seat, write))
        os.close(write)
        worker.pid, worker.status, worker.started = pid, read, time.monotonic()
        self._selector.register(read, selectors.EVENT_READ, worker)

    def _child(self, seat: Seat, status: int) -> int:
        """In the fork: leave the supervisor's state behind, serve, return the exit status."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)  # until the worker's loop takes them
            _die_with_parent()
            self._selector.close()
            for fd in self._wake:
                os.close(fd)
            for other in self.workers:
                if other.status >= 0:
                    os.close(other.status)
            for sock in self.listeners.sockets:
                if sock not in seat.sockets:
                    sock.close()
            os.dup2(status, 1)  # the worker's first stdout line (its URL) says it is ready
            os.close(status)
            code = self.serve(seat)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()  # the worker's log is flushed at exit
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(BaseException):
                    stream.flush()
        return code

    def _stop_all(self) -> None:
        """SIGTERM to every worker, SIGKILL to those still there after STOP_TIMEOUT; a
        worker has ended when its stdout pipe closes."""
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(w.status >= 0 for w in self.workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in self._selector.select(remaining):
                if isinstance(key.data, _Worker):
                    self._read(key.data)
                else:  # the signal wake-up pipe
                    os.read(key.fd, 512)
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
                worker.pid = 0
            if worker.status >= 0:
                self._selector.unregister(worker.status)
                os.close(worker.status)
                worker.status = -1


def _how(status: int) -> str:
    """How a worker ended, in words."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"was killed by {signal.Signals(number).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call
        os._exit(1)

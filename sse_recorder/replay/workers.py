"""`replay --workers N`: one listening address served by N processes.

Why processes: one Python process tops out near 100,000 timed sends per second and cannot
use a second core. Each worker is a fork of the supervising process with its own event loop
and its own cassette reader; the supervisor only holds the listening sockets, prints the URL
once every worker is ready, reports and replaces a worker that dies (and stops them all when
its replacements keep failing to start), and stops them all on SIGINT or SIGTERM.

How connections reach the workers: `wire.listening` (a socket per worker and address with
SO_REUSEPORT, one shared socket elsewhere; `--pin-clients` keeps each client address on one
worker, and on that worker's per-server state: the order of repeated identical requests,
the response numbers faults are drawn from). The supervisor keeps every socket open, so the
connections hashed to a worker that died wait in its queue for its replacement instead of
being refused.

Logs: the workers write to the stderr they inherit, a whole line per write(2); the fault log
is opened by each worker in append mode and gets a whole line per write(2), so lines never
interleave within a line.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from sse_recorder.errors import ConfigError, SSERecorderError
from sse_recorder.wire.listening import Listeners

__all__ = ["AUTO", "Seat", "StartError", "Supervisor", "worker_count"]

AUTO = "auto"
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

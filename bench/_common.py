"""Helpers shared by the `bench/*_bench.py` scripts.

Why they exist: every benchmark starts real processes on 127.0.0.1 and must stop by itself on
a noisy 2-core box, so process start-up waits for an explicit readiness line (no sleeps),
every child dies with the script, and results are compared as ratios taken in the same run.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


class BenchError(RuntimeError):
    """A benchmark could not run (a process failed to start, a client error...)."""


class Deadline(BenchError):
    """The script's overall time bound ran out."""


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter, so any venv works.

    `sys.executable` is deliberately not resolved: a venv's `python` is a symlink.
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise BenchError(f"{name} not found next to {sys.executable}")
    return str(path)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound the whole run: SIGALRM interrupts whatever blocks, `finally` blocks still clean up."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise Deadline(f"benchmark exceeded its {seconds:.0f} s bound")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Service:
    """A background process whose output goes to a log file, polled for a readiness line.

    A file rather than a pipe: mitmdump logs every flow, and an undrained pipe would block it.
    """

    def __init__(self, name: str, args: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first match of `pattern` in the output; fails if the process exits first."""
        assert self.popen is not None, "start() first"
        regex = re.compile(pattern, re.MULTILINE)
        end = time.monotonic() + timeout
        while True:
            found = regex.search(self.output())
            if found is not None:
                return found
            if self.popen.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.popen.returncode} before printing "
                    f"{pattern!r}:\n{self.output()[-2000:]}"
                )
            if time.monotonic() > end:
                raise BenchError(f"{self.name}: no {pattern!r} within {timeout} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (mitmdump then runs `done`, which flushes a recording); SIGKILL if stuck."""
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise BenchError(f"{self.name} did not stop within {timeout} s") from None


def cpu_times(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds of a process, all threads (Linux /proc), or None
    elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def loop_thread_cpu_ns(pid: int) -> int | None:
    """CPU time of a process's main thread in ns (Linux schedstat), or None elsewhere: for a
    slow stream's few ms per round, where /proc/PID/stat's 10 ms ticks are too coarse. The
    main thread is the proxy's event loop, where a recorder's per-chunk work runs."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, all threads (Linux /proc), or None elsewhere.

    Wall-clock rates hide work a process defers; its CPU time does not.
    """
    times = cpu_times(pid)
    return None if times is None else sum(times)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a supervisor's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def busy_cpu_seconds() -> float | None:
    """CPU time all CPUs spent busy, hypervisor steal included (Linux /proc/stat), or None."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """How busy the box was with *other* work while a section ran, in CPUs.

    The box is shared (other sessions run tests in parallel): a reader of the results needs
    to know whether a figure was taken on a quiet machine.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = [*pids, os.getpid()]
        self._start = self._sample()

    def _sample(self) -> tuple[float, float | None, float | None]:
        own = [cpu_seconds(pid) for pid in self.pids]
        own_total = None if any(v is None for v in own) else sum(v for v in own if v is not None)
        return time.monotonic(), busy_cpu_seconds(), own_total

    def cpus(self) -> float:
        """Average CPUs used by other processes since construction (NaN if unknown)."""
        t0, busy0, own0 = self._start
        t1, busy1, own1 = self._sample()
        if None in (busy0, busy1, own0, own1) or t1 <= t0:
            return math.nan
        assert busy0 is not None and busy1 is not None and own0 is not None and own1 is not None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

    def describe(self) -> str:
        value = self.cpus()
        if math.isnan(value):
            return "other processes' CPU use during this section: unknown"
        return f"other processes used {value:.2f} of {os.cpu_count()} CPUs during this section"


def demo_upstream(log_dir: Path) -> tuple[Service, str]:
    """`sse-recorder demo-upstream --port 0`; its first stdout line is its base URL."""
    service = Service("upstream", [venv_bin("sse-recorder"), "demo-upstream", "--port", "0"],
                      log_dir).start()
    return service, service.wait_for(r"^(http://\S+)$")[1]


def reverse_mitmdump(
    name: str, upstream: str, log_dir: Path, script: Path, options: Sequence[str] = ()
) -> tuple[Service, str]:
    """`mitmdump` in reverse mode on a free port, with a private confdir; returns its URL."""
    args = [
        venv_bin("mitmdump"), "--mode", f"reverse:{upstream}",
        "--listen-host", "127.0.0.1", "--listen-port", "0",
        "--set", f"confdir={log_dir / ('conf-' + name)}", "-s", str(script),
    ]
    for option in options:
        args += ["--set", option]
    service = Service(name, args, log_dir).start()
    found = service.wait_for(r"listening at (127\.0\.0\.1):(\d+)")
    return service, f"http://{found[1]}:{found[2]}"


class Client:
    """The persistent `bench/_client.py` process: one JSON request and reply per line."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "_client.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self._read()  # {"ready": true} once imports are done

    def _read(self) -> dict[str, Any]:
        stdout: TextIO | None = self.popen.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise BenchError(f"client exited with {self.popen.wait()}")
        return dict(json.loads(line))

    def get(self, url: str, *, stamps: bool = False, timeout: float = 60) -> dict[str, Any]:
        """Fetch `url` in the client process; raises if the request failed outright."""
        assert self.popen.stdin is not None
        request = {"url": url, "stamps": stamps, "timeout": timeout}
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise BenchError(f"client: GET {url}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A compact left-aligned first column, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


@dataclass
class Summary:
    """One PASS/MISS line per target, printed last."""

    lines: list[tuple[str, str, bool]] = field(default_factory=list)
    failed: bool = False  # a correctness failure, not a missed target

    def add(self, name: str, text: str, ok: bool) -> None:
        self.lines.append((name, text, ok))

    def print(self) -> None:
        print("\nSUMMARY")
        width = max((len(name) for name, _, _ in self.lines), default=0)
        text_width = max((len(text) for _, text, _ in self.lines), default=0)
        for name, text, ok in self.lines:
            print(f"  {verdict(ok)}  {name.ljust(width)}  {text.ljust(text_width)}")


def ms(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1e6:.3f}"

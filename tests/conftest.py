"""Shared fixtures: real processes on 127.0.0.1, ready when they print their URL.

Readiness is the first stdout line (each command prints its URL first), read with a
deadline; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
SSE_RECORDER = str(BIN / "sse-recorder")
MITMDUMP = str(BIN / "mitmdump")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Process:
    """A started command and the URL it announced on its first stdout line."""

    popen: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        elif self.popen.stdout is not None:
            self.popen.stdout.close()
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise
        finally:
            if self.popen.stdout is not None:
                self.popen.stdout.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def read_line(popen: subprocess.Popen[bytes], timeout: float) -> str:
    """One stdout line, or fail after `timeout` seconds / if the process exits."""
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    buffer = b""
    end = time.monotonic() + timeout
    while not buffer.endswith(b"\n"):
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no line from process in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            byte = os.read(fd, 1)
            if not byte:
                raise EOFError(f"process exited with {popen.wait()} before printing a line")
            buffer += byte
    return buffer.decode().strip()


def start(args: list[str], stderr_path: Path, timeout: float = 30, **kw: Any) -> Process:
    with open(stderr_path, "wb") as err:
        popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, **kw
        )
    try:
        url = read_line(popen, timeout)
    except (TimeoutError, EOFError) as exc:
        popen.kill()
        popen.wait()
        raise AssertionError(f"{args[:3]} did not start: {exc}\n{stderr_path.read_text()}") from exc
    return Process(popen, url, stderr_path)


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in demo upstream in its own process; yields its base URL."""
    log = tmp_path_factory.mktemp("upstream") / "stderr.txt"
    process = start([SSE_RECORDER, "demo-upstream", "--port", "0"], log)
    yield process.url
    process.stop()


@pytest.fixture(scope="session")
def mitm_confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mitmproxy confdir (and so one CA) for the whole run."""
    return tmp_path_factory.mktemp("mitmproxy")


def record_args(cassette: Path, confdir: Path, *args: str) -> list[str]:
    """`sse-recorder record` into `cassette` on a free port, with the run's mitmproxy CA."""
    return [SSE_RECORDER, "record", "--cassette", str(cassette), "--listen-port", "0",
            "--confdir", str(confdir), *args]


@dataclass
class RecorderFactory:
    tmp_path: Path
    confdir: Path
    started: list[Process]

    def __call__(self, *args: str, cassette: Path | None = None) -> Process:
        cassette = cassette or self.tmp_path / "cassette.sqlite"
        process = start(record_args(cassette, self.confdir, *args),
                        self.tmp_path / f"recorder-{len(self.started)}.txt")
        self.started.append(process)
        return process


@pytest.fixture
def recorder(tmp_path: Path, mitm_confdir: Path) -> Iterator[RecorderFactory]:
    """Starts `sse-recorder record` processes; stops whichever are still running."""
    factory = RecorderFactory(tmp_path, mitm_confdir, [])
    yield factory
    for process in factory.started:
        process.stop()


RecordDemo = Callable[[str, Callable[[str], object]], Path]


@pytest.fixture(scope="session")
def record_demo(
    demo_upstream: str, mitm_confdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> RecordDemo:
    """`record_demo(name, traffic)`: a new cassette holding what `traffic(url)` sent once
    through a real `sse-recorder record` in front of the demo upstream (reverse mode, so
    `url` is the recorder's); the recorder must then stop cleanly."""

    def record(name: str, traffic: Callable[[str], object]) -> Path:
        workdir = tmp_path_factory.mktemp(name)
        path = workdir / "cassette.sqlite"
        proxy = start(record_args(path, mitm_confdir, "--upstream", demo_upstream),
                      workdir / "recorder.txt")
        try:
            traffic(proxy.url)
        finally:
            assert proxy.stop() == 0, proxy.stderr()
        return path

    return record

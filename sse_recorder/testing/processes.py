"""Child processes that announce their URL: start, read it with a deadline, stop by signal.

Every `sse-recorder` command that listens (record, replay, demo-upstream) prints its URL on
its first stdout line, so that line is the readiness signal and nothing sleeps to wait for
it. Stderr goes to a file, not a pipe: nobody drains it while the process runs, and it is
read afterwards (the replay's JSON records, or why a process failed). Standard library
only, so the pytest plugin, the demo, the tests and the benchmarks share it without pytest.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from sse_recorder.testing import locate

START_TIMEOUT = 60.0  # seconds for a process to print its URL
STOP_TIMEOUT = 30.0  # seconds for a recorder to flush its cassette after SIGTERM


class ProcessError(RuntimeError):
    """A child printed no URL in time, exited first, or did not stop in time."""


def read_line(popen: subprocess.Popen[bytes], timeout: float) -> str:
    """One stdout line; TimeoutError after `timeout` seconds, EOFError if the process exits.

    Byte by byte through `select`, so nothing beyond the line is buffered away from a later
    reader and the deadline holds however the process writes."""
    assert popen.stdout is not None, "stdout must be a pipe"
    fd = popen.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"printed no line in {timeout:g}s")
        if select.select([fd], [], [], remaining)[0]:
            byte = os.read(fd, 1)
            if not byte:
                raise EOFError(f"exited with {popen.wait()} before printing a line")
            buffer += byte
    return buffer.decode().strip()


class Process:
    """A started command and the URL it printed first; stops with a signal and a timeout."""

    def __init__(
        self,
        args: Sequence[str],
        stderr_path: Path,
        *,
        start_timeout: float = START_TIMEOUT,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.args = [str(arg) for arg in args]
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.popen = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err,
                                          stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                          preexec_fn=preexec_fn)
        try:
            self.url = read_line(self.popen, start_timeout)
        except (TimeoutError, EOFError) as exc:
            self.popen.kill()
            self.popen.wait()
            self._close_stdout()
            raise ProcessError(f"`{self.shown}` {exc}{self.stderr_tail()}") from None

    @property
    def shown(self) -> str:
        """The command as messages name it: its first two arguments after the program."""
        return " ".join([Path(self.args[0]).name, *self.args[1:3]])

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 15) -> str:
        """The last stderr lines after a colon and a newline, for error messages ('' if none)."""
        kept = self.stderr().strip().splitlines()[-lines:]
        return ":\n" + "\n".join(kept) if kept else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` (SIGTERM: a recorder flushes and closes its cassette) and wait; returns
        the exit status. Killed, and ProcessError, if it has not exited in `timeout` s."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise ProcessError(f"`{self.shown}` did not stop in {timeout:g}s"
                               f"{self.stderr_tail()}") from None
        finally:
            self._close_stdout()

    def _close_stdout(self) -> None:
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def sse_recorder_executable(needs_mitmproxy: bool = False) -> str:
    """The `sse-recorder` command to run; for recording, the first whose Python has
    mitmproxy (see `locate`). ProcessError naming every candidate if there is none."""
    try:
        return locate.find(needs_mitmproxy).path
    except locate.RecorderNotFound as exc:
        raise ProcessError(str(exc)) from None

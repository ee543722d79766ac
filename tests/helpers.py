"""Helpers the tests import (fixtures and hooks stay in tests/conftest.py).

Where the commands are, and starting real processes on 127.0.0.1 that are ready when they
print their URL: the same `Process` the plugin and the demo use, read with a deadline, so
nothing here sleeps to synchronise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sse_recorder.record.session import RecorderConfig, RecordingSession, WriterMode
from sse_recorder.testing.processes import Process, ProcessError, read_line

__all__ = ["BIN", "MITMDUMP", "REPO", "SSE_RECORDER", "Process", "RecordDemo", "RecorderFactory",
           "read_line", "record_args", "start"]

BIN = Path(sys.executable).parent
SSE_RECORDER = str(BIN / "sse-recorder")
MITMDUMP = str(BIN / "mitmdump")
REPO = Path(__file__).resolve().parent.parent


def start(args: list[str], stderr_path: Path, timeout: float = 30, **kw: Any) -> Process:
    """A started process once it printed its URL; a test failure (with its stderr) if not."""
    try:
        return Process(args, stderr_path, start_timeout=timeout, **kw)
    except ProcessError as exc:
        stderr = stderr_path.read_text(errors="replace")
        raise AssertionError(f"{args[:3]} did not start: {exc}\n{stderr}") from None


def record_args(cassette: Path, confdir: Path, *args: str) -> list[str]:
    """`sse-recorder record` into `cassette` on a free port, with the run's mitmproxy CA."""
    return [SSE_RECORDER, "record", "--cassette", str(cassette), "--listen-port", "0",
            "--confdir", str(confdir), *args]


@dataclass
class RecorderFactory:
    """What the `recorder` fixture yields: `recorder(*args)` starts `sse-recorder record`."""

    tmp_path: Path
    confdir: Path
    started: list[Process]

    def __call__(self, *args: str, cassette: Path | None = None) -> Process:
        cassette = cassette or self.tmp_path / "cassette.sqlite"
        process = start(record_args(cassette, self.confdir, *args),
                        self.tmp_path / f"recorder-{len(self.started)}.txt")
        self.started.append(process)
        return process


# `record_demo(name, traffic)`, the session fixture: see tests/conftest.py
RecordDemo = Callable[[str, Callable[[str], object]], Path]


def task_session(
    path: str, config: RecorderConfig | None = None, **callbacks: Any
) -> RecordingSession:
    """A session whose writer is a task on this loop: the writer's logic without a process
    per test (tests/unit/test_writer_process.py runs the flows through the real process)."""
    config = replace(config or RecorderConfig(), writer=WriterMode.TASK)
    return RecordingSession(path, config, **callbacks)

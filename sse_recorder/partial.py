"""Files being written that are not whole yet, and what removes them when SIGTERM comes.

A command stopped by SIGTERM ends without unwinding (no `finally` runs), so the temporary
file of an import or an export would stay beside its target. Writers register such paths
while they write (`writing`); `removing_on_sigterm` makes SIGTERM remove them before the
process exits, as Ctrl-C's unwinding does.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
TERMINATED = 128 + signal.SIGTERM  # the shell's status for a process SIGTERM ended

_paths: set[Path] = set()


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """`path` (a file, with its SQLite side files, or a directory) is partial until the
    block ends."""
    _paths.add(path)
    try:
        yield path
    finally:
        _paths.discard(path)


def remove_sqlite_file(path: Path) -> None:
    """A SQLite file and its side files, those that exist."""
    for suffix in ("", *SQLITE_SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def remove_all() -> None:
    """Remove every partial path registered (as far as it can: a signal handler's work)."""
    for path in list(_paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            continue
        with suppress(OSError):
            remove_sqlite_file(path)


@contextmanager
def removing_on_sigterm(what: str) -> Iterator[None]:
    """While the block runs, SIGTERM removes the partial paths, says so in one line and
    exits with status 143 (the previous handler is back afterwards). Off the main thread
    (a command run by click's CliRunner in a worker thread) signals cannot be handled, nor
    do they arrive there: the block just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        remove_all()
        sys.stderr.write(f"sse-recorder: {what} stopped (SIGTERM): nothing partial left\n")
        sys.stderr.flush()
        os._exit(TERMINATED)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

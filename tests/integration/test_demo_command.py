"""`sse-recorder demo`, the README's main job, run exactly as `make demo` runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import SSE_RECORDER

pytestmark = pytest.mark.integration


def test_demo_records_replays_and_reports_faithful(tmp_path: Path) -> None:
    done = subprocess.run([SSE_RECORDER, "demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "faithful: every replay has the recorded bytes and ending" in out
    listing = [line.split() for line in out.splitlines() if "/reset" in line and "GET" in line]
    assert listing and listing[0][-1] == "reset"  # the reset stream is recorded as one
    rows = [line for line in out.splitlines() if " chunks " in line]
    assert len(rows) == 7 and all("same bytes" in row for row in rows)
    assert (tmp_path / "demo.sqlite").exists()
    assert not (tmp_path / "demo.sqlite-wal").exists()  # a single self-contained file

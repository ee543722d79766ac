"""`sse-recorder demo`, the README's main job, run exactly as `make demo` runs it: from the
checkout, with the venv's executable not on PATH."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from sse_recorder.demo.walkthrough import REQUESTS, _record_problems, _recorded
from sse_recorder.model import Outcome
from sse_recorder.replay.records import Answer, parse_records
from tests.helpers import BIN, REPO, SSE_RECORDER

pytestmark = pytest.mark.integration


def test_demo_records_replays_and_reports_faithful(tmp_path: Path) -> None:
    # as `make demo` runs it: .venv/bin/sse-recorder, with .venv/bin not on PATH
    env = {**os.environ, "PATH": os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != BIN.resolve())}
    done = subprocess.run([SSE_RECORDER, "demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # it ends with a command that works from here, as printed
    suggestion = out.strip().splitlines()[-1].split("; try: ", 1)[1]
    assert not suggestion.startswith("sse-recorder ")  # not on this PATH
    shown = subprocess.run(shlex.split(suggestion), capture_output=True, text=True,
                           timeout=30, env=env, cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("#2 POST http://127.0.0.1:")
    assert "/v1/chat/completions -> 200 OK" in shown.stdout.splitlines()[0]
    assert "faithful: every replay has the recorded bytes and ending" in out
    listing = [line.split() for line in out.splitlines() if "/reset" in line and "GET" in line]
    assert listing and listing[0][-1] == "reset"  # the reset stream is recorded as one
    rows = [line for line in out.splitlines() if " chunks " in line]
    assert len(rows) == 7 and all("same bytes" in row for row in rows)
    assert (tmp_path / "demo.sqlite").exists()
    assert not (tmp_path / "demo.sqlite-wal").exists()  # a single self-contained file

    # the verdict includes the replayers' own records: each request answered as recorded
    interactions = asyncio.run(_recorded(tmp_path / "demo.sqlite"))
    for speed in ("1", "10"):
        served = parse_records((tmp_path / f"replay-{speed}x.log").read_text())
        assert [(s.answer, s.interaction_id, s.target) for s in served] == [
            (Answer.RECORDED, i.id, r.path) for i, r in zip(interactions, REQUESTS, strict=True)]
        assert served[-1].outcome is Outcome.RESET
        assert _record_problems(speed, served, interactions) == []
    closed = [*served[:-1], dataclasses.replace(served[-1], outcome=Outcome.CLOSED)]
    assert _record_problems("10", closed, interactions) == [
        "replay 10x: GET /reset -> #7 200, ended closed (recorded: #7, ended reset)"]
    unmatched = dataclasses.replace(served[0], answer=Answer.UNMATCHED, interaction_id=None)
    assert _record_problems("10", [unmatched, *served[1:]], interactions) == [
        "replay 10x: GET /v1/models -> 200 unmatched (recorded: #1, ended clean)"]
    assert _record_problems("10", served[1:], interactions) == [
        "replay 10x logged 6 answers to 7 requests"]

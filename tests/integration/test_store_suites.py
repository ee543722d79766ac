"""The record, replay, fault, resume and pytest-plugin suites on both backends: one module,
parametrized by the `store` fixture (a SQLite file, a PostgreSQL cassette). What each
backend is given is recorded once per module through a real `sse-recorder record`; the
checks are the representative ones of each suite (tests/integration/test_record.py,
test_replay.py, test_faults.py and tests/plugin hold the full suites, on SQLite)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sse_recorder.demo.upstream import ci_log_writes, ticks_writes
from sse_recorder.wire.probe import ProbeResult, probe
from tests.helpers import Process, record_args, start
from tests.integration.support import (
    Recording,
    assert_faithful,
    chunk_data,
    in_thread,
    openai_chunks,
    replay_process,
    retrying,
)

pytestmark = pytest.mark.integration

TICKS = "/ticks?n=50&interval_ms=20"  # 50 chunks, 20 ms apart
CI = "/ci/logs"


async def _traffic(url: str) -> tuple[ProbeResult, ProbeResult]:
    ticks = await probe(url + TICKS)
    ci = await probe(url + CI)
    await openai_chunks(url)
    return ticks, ci


@pytest.fixture(scope="module")
def recorded(
    store: Callable[[str], str], demo_upstream: str, mitm_confdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Recording, tuple[ProbeResult, ProbeResult]]:
    """A cassette recorded through `sse-recorder record` into this backend, what it holds
    (read back from the backend), and what the client received while recording."""
    target = store("suite")
    workdir = tmp_path_factory.mktemp("suite")
    proxy = start(record_args(target, mitm_confdir, "--reverse", demo_upstream),  # type: ignore[arg-type]
                  workdir / "recorder.txt")
    try:
        received = in_thread(_traffic(proxy.url))
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    return target, Recording.read(target), received  # type: ignore[arg-type]


@pytest.fixture
def replay(recorded: tuple[str, Recording, object], tmp_path: Path) -> Iterator[
        Callable[..., Process]]:
    started: list[Process] = []

    def make(*options: str) -> Process:
        process = replay_process(recorded[0], tmp_path / f"replay-{len(started)}.txt",  # type: ignore[arg-type]
                                 *options)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def test_record_stores_every_chunk_as_received(
    recorded: tuple[str, Recording, tuple[ProbeResult, ProbeResult]],
) -> None:
    _, recording, (ticks, ci) = recorded
    assert len(recording.items) == 3
    assert_faithful(recording.get(TICKS), chunk_data(ticks))
    assert_faithful(recording.get(CI), chunk_data(ci))
    assert chunk_data(ticks) == ticks_writes(50)
    assert all(r.interaction.outcome.value == "clean" for r in recording.items)


async def test_replay_keeps_chunk_boundaries_and_gaps(
    recorded: tuple[str, Recording, object], replay: Callable[..., Process]
) -> None:
    recording = recorded[1].get(TICKS)
    url = replay().url + TICKS

    async def check() -> None:
        result = await probe(url)
        assert result.status == 200 and result.outcome == "clean"
        assert chunk_data(result) == [c.data for c in recording.chunks]
        errors = [abs(a - b) for a, b in zip(result.gaps_ms(), recording.gaps_ms(),
                                             strict=True)]
        assert statistics.median(errors) < 2.0, errors
        assert sorted(errors)[-3] < 15, errors
        assert abs(result.chunks[0][0] / 1e6 - recording.chunks[0].offset_ns / 1e6) < 15

    await retrying(check)


async def test_fault_drop_after_bytes(
    recorded: tuple[str, Recording, object], replay: Callable[..., Process]
) -> None:
    ticks = recorded[1].get(TICKS)
    result = await probe(replay("--fault", "drop:after_bytes=50,route=/ticks",
                                "--instant").url + TICKS)
    assert result.body == ticks.body[:50] and result.outcome == "closed"


async def test_last_event_id_resumes_after_that_event(
    recorded: tuple[str, Recording, object], replay: Callable[..., Process]
) -> None:
    result = await probe(replay("--instant").url + CI, headers=[("Last-Event-ID", "5")])
    assert result.outcome == "clean"
    assert b"".join(chunk_data(result)) == b"".join(ci_log_writes("5")[1:])


def test_pytest_plugin_replays_from_the_store(
    recorded: tuple[str, Recording, object], tmp_path: Path
) -> None:
    """A test of another project replays the cassette through the plugin's fixture: a file
    named by the marker's `path`, or a store's cassette named by the marker with the store
    in the `sse_store` ini option."""
    target = recorded[0]
    if "://" in target:
        store, name = target.split("?cassette=")
        (tmp_path / "pytest.ini").write_text(f"[pytest]\nsse_store = {store}\n")
        marker = f"sse_cassette({name!r})"
    else:
        marker = f"sse_cassette(path={target!r})"
    (tmp_path / "test_uses_store.py").write_text(f"""
import httpx
import pytest


@pytest.mark.{marker}
def test_ticks(sse_cassette):
    with httpx.Client(base_url=sse_cassette.base_url) as client:
        assert client.get("{TICKS}").text.count("data:") == 50
""")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:hypothesispytest", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout

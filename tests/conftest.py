"""Shared fixtures: real processes on 127.0.0.1, ready when they print their URL.

Readiness is the first stdout line (each command prints its URL first), read with a
deadline; nothing here sleeps to synchronise. Helpers the tests import are in
tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import SSE_RECORDER, RecordDemo, RecorderFactory, record_args, start


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


@pytest.fixture
def recorder(tmp_path: Path, mitm_confdir: Path) -> Iterator[RecorderFactory]:
    """Starts `sse-recorder record` processes; stops whichever are still running."""
    factory = RecorderFactory(tmp_path, mitm_confdir, [])
    yield factory
    for process in factory.started:
        process.stop()


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


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless system Chromium per test worker (Playwright's sync API, so only sync
    tests use it); each test opens its own context with `chromium.new_context()`."""
    from playwright.sync_api import sync_playwright

    from sse_recorder.testing.browser import CHROMIUM_ARGS, find_chromium

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(find_chromium()), args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()

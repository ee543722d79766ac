"""Shared fixtures: real processes on 127.0.0.1, ready when they print their URL.

Readiness is the first stdout line (each command prints its URL first), read with a
deadline; nothing here sleeps to synchronise. Helpers the tests import are in
tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

# pytester (tests/plugin) puts sys.modules back after each test, dropping what the test first
# imported. The store imports Alembic and SQLAlchemy's PostgreSQL dialect on first use, and
# both register themselves in SQLAlchemy for good: imported a second time, they fail
# (SAWarning, an error here). Imported once now, they are in every snapshot.
import alembic.config  # noqa: F401
import alembic.runtime.environment  # noqa: F401
import alembic.script  # noqa: F401
import pytest
import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401

from tests.helpers import SSE_RECORDER, RecordDemo, RecorderFactory, record_args, start


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--replay-workers", metavar="N",
        help="Serve every `sse-recorder replay` process the tests start from N worker "
             "processes (sets SSE_RECORDER_WORKERS; see tests/integration/"
             "test_workers_suites.py).")


def pytest_configure(config: pytest.Config) -> None:
    workers = config.getoption("--replay-workers")
    if workers:
        import os

        os.environ["SSE_RECORDER_WORKERS"] = workers


def pytest_report_header(config: pytest.Config) -> str | None:
    workers = config.getoption("--replay-workers")
    return f"replay workers: {workers}" if workers else None


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


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless system Chromium per test module (Playwright's sync API, so only sync
    tests use it); each test opens its own context with `chromium.new_context()`. Per
    module, not per session: while Playwright's sync API runs, its event loop counts as
    running in this thread, so every later asyncio test of the process would fail."""
    from playwright.sync_api import sync_playwright

    from sse_recorder.testing.browser import CHROMIUM_ARGS, find_chromium

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(find_chromium()), args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


# -- a throwaway PostgreSQL server (the shared cassette store) -------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test worker (`store.throwaway`: Debian's binaries,
    as `nobody` when we are root, 127.0.0.1, a free port, password authentication); yields
    the store URL with no cassette named."""
    from sse_recorder.store.throwaway import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """The suites that run on both backends: `store(name)` is where cassette `name` lives,
    a SQLite file or a cassette of the PostgreSQL store (unique per module and backend)."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("store")
        return lambda name: str(directory / f"{name}.sqlite")
    import uuid

    url = request.getfixturevalue("postgres_url")
    prefix = uuid.uuid4().hex[:12]
    return lambda name: f"{url}?cassette=t{prefix}_{name}"

"""Playwright for pytest users: browser contexts whose traffic goes to the test's cassette.

Playwright's `route.fulfill` takes a whole body, so a routed page gets every event at once;
here the browser talks to the real replay instead, with the recorded chunks, timing, endings
and faults. Two ways:
- proxy mode (`sse_page`, `sse_context`, or `context_args(sse_cassette)` in
  pytest-playwright's `browser_context_args`): the context's proxy is
  `sse_cassette.proxy_url`, so the page keeps its real URLs; in a record mode that proxy is
  the recorder, so record modes work as for any `sse_cassette` client. HTTPS is replayed
  with mitmproxy's certificates, which the context accepts (`ignore_https_errors`);
- base-URL mode: the page reads from `sse_cassette.base_url` (it must be told that URL) and
  `sse_cassette.allow_origin(page_origin)` lets it, the replay's `--cors`.

With pytest-playwright installed, its `browser` (and `browser_context_args`) are used; without
it, one headless Chromium per session is launched from the system (`browser.find_chromium`:
Debian's `chromium`, or $SSE_RECORDER_CHROMIUM), as Playwright's own download is often
unavailable in CI. `launch_options()` gives pytest-playwright's `browser_type_launch_args`
the same executable. Nothing here imports Playwright until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from sse_recorder.testing.browser import CHROMIUM_ARGS, find_chromium
from sse_recorder.testing.outcomes import fail

if TYPE_CHECKING:
    from sse_recorder.testing.plugin import SSECassette

# pytest-playwright's plugin name (its pytest11 entry point)
PYTEST_PLAYWRIGHT = "playwright"
# Chrome asks before a page on a public origin (or one Playwright fulfilled) reaches a
# loopback address such as the replay's; a test has no one to click "allow".
LOCAL_NETWORK = "local-network-access"


def launch_options() -> dict[str, Any]:
    """Launch arguments for the system Chromium: `executable_path` and quiet flags. For
    pytest-playwright, return them from a `browser_type_launch_args` fixture."""
    return {"executable_path": str(find_chromium()), "args": list(CHROMIUM_ARGS)}


def context_args(cassette: SSECassette, bypass: Sequence[str] = ()) -> dict[str, Any]:
    """`new_context` arguments that send every request through the cassette's proxy (the
    replay, or the recorder when recording), except hosts in `bypass` (`host` or
    `host:port`, e.g. the app's own dev server)."""
    proxy = {"server": cassette.proxy_url}
    if bypass:
        proxy["bypass"] = ",".join(bypass)
    return {"proxy": proxy, "ignore_https_errors": True}


def _uses_pytest_playwright(request: pytest.FixtureRequest) -> bool:
    return request.config.pluginmanager.has_plugin(PYTEST_PLAYWRIGHT)


@pytest.fixture(scope="module")
def sse_browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-playwright's `browser` when it is installed, else a headless system Chromium
    per test module: Playwright's sync API (for sync tests) makes its event loop count as
    running in this thread, which would break every later asyncio test of the session
    (`asyncio.run` refuses to start)."""
    if _uses_pytest_playwright(request):
        yield request.getfixturevalue("browser")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        fail("sse-recorder: sse_browser needs Playwright: pip install playwright "
             "(pytest-playwright optional)")
    from sse_recorder.errors import SSERecorderError

    try:
        options = launch_options()
    except SSERecorderError as exc:
        fail(f"sse-recorder: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**options)
        yield browser
        browser.close()


@pytest.fixture
def sse_proxy_bypass() -> Sequence[str]:
    """Hosts the `sse_context` browser reaches directly, not through the cassette (override
    to list the app's own server, e.g. `["localhost:3000"]`)."""
    return ()


@pytest.fixture
def sse_context(
    request: pytest.FixtureRequest, sse_browser: Any, sse_cassette: SSECassette,
    sse_proxy_bypass: Sequence[str],
) -> Iterator[Any]:
    """A browser context whose requests go to this test's cassette (proxy mode), with
    pytest-playwright's `browser_context_args` when it is installed."""
    args: dict[str, Any] = {}
    if _uses_pytest_playwright(request):
        args.update(request.getfixturevalue("browser_context_args"))
    args.update(context_args(sse_cassette, sse_proxy_bypass))
    if sse_browser.browser_type.name == "chromium":
        args["permissions"] = [*args.get("permissions", ()), LOCAL_NETWORK]
    context = sse_browser.new_context(**args)
    yield context
    context.close()


@pytest.fixture
def sse_page(sse_context: Any) -> Any:
    """A page of `sse_context`."""
    return sse_context.new_page()

"""The Playwright fixtures as pytest users meet them: inner pytest runs (pytester, in
subprocesses) whose tests drive a real headless Chromium through `sse_page` (proxy mode:
the page keeps its real URLs) and through `sse_cassette.base_url` with `allow_origin`
(base-URL mode, CORS), recording once from the demo upstream and then replaying.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import textwrap

import pytest

from tests.integration.support import load

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

PAGE = """<!doctype html><meta charset="utf-8"><p id="status">connecting</p><ul id="log"></ul>
<script>
const source = new EventSource("BASE/ci/logs");
source.addEventListener("log_line", (e) => {
  const item = document.createElement("li");
  item.textContent = JSON.parse(e.data).line;
  document.getElementById("log").append(item);
});
source.addEventListener("workflow_run", (e) => {
  const run = JSON.parse(e.data);
  document.getElementById("status").textContent = run.conclusion || run.action;
  if (run.action === "completed") source.close();
});
source.onerror = () => {
  if (source.readyState === EventSource.CLOSED)
    document.getElementById("status").textContent = "failed";
};
</script>"""

SUITE = '''
from playwright.sync_api import expect

PAGE = {page!r}
APP = {app!r}  # the demo upstream: the page's origin in proxy mode
OTHER = "http://app.localhost:5173"  # the page's origin in base-URL mode


def show(page, origin, base=""):
    page.route(f"{{origin}}/app", lambda route: route.fulfill(
        status=200, content_type="text/html; charset=utf-8", body=PAGE.replace("BASE", base)))
    page.goto(f"{{origin}}/app")


def test_proxy_mode(sse_page, sse_cassette):
    show(sse_page, APP)
    expect(sse_page.locator("#status")).to_have_text("success")
    expect(sse_page.locator("#log li")).to_have_count(6)
    print(f"mode={{'recording' if sse_cassette.recording else 'replaying'}} "
          f"served={{[(s.target, s.outcome.value) for s in sse_cassette.served]}}")


def test_base_url_mode(sse_browser, sse_cassette):
    sse_cassette.allow_origin(OTHER)
    context = sse_browser.new_context(permissions=["local-network-access"])
    show(context.new_page(), OTHER, sse_cassette.base_url)
    page = context.pages[0]
    expect(page.locator("#status")).to_have_text("success")
    expect(page.locator("#log li")).to_have_count(6)
    context.close()


def test_base_url_mode_needs_cors(sse_browser, sse_cassette):
    context = sse_browser.new_context(permissions=["local-network-access"])
    show(context.new_page(), OTHER, sse_cassette.base_url)
    expect(context.pages[0].locator("#status")).to_have_text("failed")
    context.close()
'''


def write_suite(pytester: pytest.Pytester, app: str) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_page=SUITE.format(page=PAGE, app=app))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio",
                                         "-p", "no:hypothesispytest", "-s", *args, timeout=120)


def test_record_once_then_replay_in_proxy_and_base_url_modes(
    pytester: pytest.Pytester, demo_upstream: str
) -> None:
    """Record mode once through `sse_page` (the recorder is the context's proxy); then the
    default mode replays the same page from the cassette (the replay served it, the
    cassette stays as recorded), and a page on another origin reads `sse_cassette.base_url`
    once `allow_origin` lets it, and not before (CORS is off by default)."""
    write_suite(pytester, demo_upstream)
    cassettes = pytester.path / "cassettes" / "test_page"
    cassette = cassettes / "test_proxy_mode.sqlite"
    first = run(pytester, "-k", "proxy_mode", "--sse-record-mode=once")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*mode=recording served=[[]]*"])
    recorded = asyncio.run(load(cassette))
    assert [r.interaction.request.url for r in recorded] == [f"{demo_upstream}/ci/logs"]
    before = cassette.read_bytes()
    for name in ("test_base_url_mode", "test_base_url_mode_needs_cors"):
        shutil.copyfile(cassette, cassettes / f"{name}.sqlite")
    second = run(pytester)
    second.assert_outcomes(passed=3)
    # One stream served from the cassette. Its ending is the framing of the proxy's hop to
    # the replay: chunked ('clean'), or a close-delimited body ('closed') when mitmproxy asks
    # for `Connection: close`, which it did in about 1 of 6 suite runs; both end the body.
    served = [line for line in second.stdout.lines if "mode=replaying served=" in line]
    assert len(served) == 1, second.stdout.str()
    assert served[0].endswith(("served=[('/ci/logs', 'clean')]",
                               "served=[('/ci/logs', 'closed')]")), served
    assert cassette.read_bytes() == before


@pytest.mark.skipif(importlib.util.find_spec("pytest_playwright") is None,
                    reason="pytest-playwright is not installed")
def test_with_pytest_playwright_its_browser_is_used(
    pytester: pytest.Pytester, demo_upstream: str
) -> None:
    pytester.makeconftest(textwrap.dedent("""
        import pytest
        from sse_recorder.testing.playwright import launch_options

        @pytest.fixture(scope="session")
        def browser_type_launch_args(browser_type_launch_args):
            return {**browser_type_launch_args, **launch_options()}
    """))
    write_suite(pytester, demo_upstream)
    result = run(pytester, "-k", "proxy_mode", "--sse-record-mode=once")
    result.assert_outcomes(passed=1)

"""A page that streams CI logs with `EventSource`, tested pytest-playwright style against
a cassette: recorded once from the demo upstream, then replayed with no network.

`sse_page` is a Playwright page whose traffic goes to the test's cassette (proxy mode), so
the page keeps its real URLs and gets the recorded stream with its chunks and timing (a
`route.fulfill` would hand it every event at once). The page's own HTML is fulfilled by
Playwright: only the stream is recorded.
"""

import pytest

pytest.importorskip("playwright", reason="the browser example needs playwright")

from playwright.sync_api import Page, expect  # noqa: E402

APP = "http://127.0.0.1:8765"  # the demo upstream the cassette was recorded from

PAGE = """<!doctype html><meta charset="utf-8"><title>CI</title>
<p id="status">connecting</p><ul id="log"></ul>
<script>
const source = new EventSource("/ci/logs");
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
</script>"""


def test_the_ci_page_shows_every_log_line(sse_page: Page) -> None:
    sse_page.route(f"{APP}/", lambda route: route.fulfill(
        status=200, content_type="text/html; charset=utf-8", body=PAGE))
    sse_page.goto(f"{APP}/")
    expect(sse_page.locator("#status")).to_have_text("success")
    expect(sse_page.locator("#log li")).to_have_text([
        "Fetching the repository", "HEAD is now at 1a2b3c4", "pip install -e .[dev]",
        "Successfully installed 42 packages", "collected 128 items", "All tests passed!",
    ])

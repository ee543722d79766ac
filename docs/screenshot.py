"""Make docs/report.png: `sse-recorder report` of the demo cassette, in headless Chromium.

Usage: `python docs/screenshot.py [DEMO_CASSETTE]` (default: demo-out/demo.sqlite, what
`make demo` / `sse-recorder demo` leaves). The page shows three interactions (the index,
then the Anthropic stream with one event's payload opened); the picture is its top.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from sse_recorder.testing.browser import CHROMIUM_ARGS, find_chromium

DOCS = Path(__file__).resolve().parent
IDS = ("3", "5", "7")  # Anthropic messages, heartbeats, the reset


def main() -> None:
    cassette = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out/demo.sqlite")
    exe = Path(sys.executable).parent / "sse-recorder"
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "report.html"
        subprocess.run([str(exe), "report", str(cassette), *IDS, "-o", str(page_path)],
                       check=True, stdout=subprocess.DEVNULL)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(find_chromium()),
                                                 args=list(CHROMIUM_ARGS))
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(page_path.as_uri())
            page.locator("section#i3 svg.timeline rect.ev").nth(3).click()
            bottom = page.locator("section#i3 svg.rates").bounding_box()
            assert bottom is not None
            page.screenshot(path=str(DOCS / "report.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1100,
                                  "height": bottom["y"] + bottom["height"] + 16})
            browser.close()
    print(DOCS / "report.png")


if __name__ == "__main__":
    main()

"""With pytest-playwright installed, its `browser` fixture launches the browser: point it
at the system Chromium when Playwright's own download is not there (a closed CI network).
Without pytest-playwright, sse-recorder's `sse_page` launches that Chromium itself."""

import pytest

from sse_recorder.testing.playwright import launch_options


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):  # pytest-playwright's fixture
    return {**browser_type_launch_args, **launch_options()}

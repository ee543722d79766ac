"""Where the system's Chromium is and how to start it headless for tests.

Playwright's own browser download does not work on closed networks, so tests and the
Playwright helpers launch the distribution's Chromium (Debian's `chromium` package) with
`executable_path`. The flags keep it from reaching for Google's services at start-up.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sse_recorder.errors import SSERecorderError

CHROMIUM_ENV = "SSE_RECORDER_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = (
    "--no-sandbox",  # root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ChromiumNotFound(SSERecorderError):
    pass


def find_chromium() -> Path:
    """$SSE_RECORDER_CHROMIUM, else the first Chromium-like executable on PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        if not os.access(named, os.X_OK):
            raise ChromiumNotFound(f"{CHROMIUM_ENV}={named} is not an executable")
        return Path(named)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ChromiumNotFound(
        "no Chromium found: install Debian's chromium package "
        f"or set {CHROMIUM_ENV} to its executable")

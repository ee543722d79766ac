"""How the plugin fails a test: one line (its own module: importing the `testing` package
must not import pytest, `locate` runs where pytest is not installed)."""

from __future__ import annotations

from typing import NoReturn

import pytest


def fail(message: str) -> NoReturn:
    """Fail the test with `message` alone: `pytest.fail` raised inside an `except` block
    showed the message twice, the second time after "During handling of the above
    exception, another exception occurred"."""
    raise pytest.fail.Exception(message, pytrace=False) from None

"""The `sse-recorder` command line: a click group with one module per command family.

Importing the command modules registers their commands on `main`.
"""

from sse_recorder.cli import (  # noqa: F401
    addons,
    copy,
    demo,
    experiment,
    inspect,
    record,
    replay,
    report,
    transfer,
)
from sse_recorder.cli.app import main

__all__ = ["main"]

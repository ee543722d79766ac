"""The `sse-recorder` command line: a click group with one module per command family."""

from sse_recorder.cli.app import main

__all__ = ["main"]

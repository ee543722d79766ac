"""The `sse-recorder` command line: the click group and what every command shares.

Each command family is a module of its own (record, inspect, replay, demo) that registers
on `main` when `sse_recorder.cli` imports it. Heavy imports (SQLAlchemy, mitmproxy) happen
inside the commands so `--help` is instant and the core commands work without the `record`
extra. Every expected failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click

from sse_recorder import __version__
from sse_recorder.errors import SSERecorderError

T = TypeVar("T")


def _run(
    coro: Coroutine[Any, Any, T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run a coroutine, turning expected failures into a one-line error and exit status 2."""
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    except SSERecorderError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    """An expected failure: one line on stderr, exit status 2."""
    click.echo(f"sse-recorder: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sse-recorder")
def main() -> None:
    """Record Server-Sent Events through mitmproxy into SQLite cassettes, and replay them."""

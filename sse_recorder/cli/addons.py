"""`sse-recorder addon-path`: the `mitmdump -s` scripts, from wherever the package is.

A pipx or wheel install has no checkout's `addons/` directory, so the scripts ship inside
the package (`sse_recorder/mitm/scripts/`) and this prints where they are.
"""

from __future__ import annotations

from pathlib import Path

import click

from sse_recorder.cli.app import main

SCRIPTS = Path(__file__).resolve().parent.parent / "mitm" / "scripts"


@main.command("addon-path")
@click.argument("which", type=click.Choice(["record", "replay"]))
def addon_path(which: str) -> None:
    """Print the path of the record or replay script for `mitmdump -s`.

    \b
    mitmdump -s "$(sse-recorder addon-path record)" --set sse_cassette=session.sqlite
    mitmdump -s "$(sse-recorder addon-path replay)" --set sse_replay=session.sqlite
    """
    click.echo(SCRIPTS / f"{which}.py")

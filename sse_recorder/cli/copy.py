"""`sse-recorder copy`: interactions between any two stores (files and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import click

from sse_recorder.cli.app import CassetteTarget, _run, main
from sse_recorder.cli.formats import count, size


@main.command("copy")
@click.argument("source", type=CassetteTarget(), metavar="SRC")
@click.argument("destination", type=CassetteTarget(), metavar="DST")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
def copy_command(source: Path, destination: Path, ids: tuple[int, ...]) -> None:
    """Copy interactions ID... (default: every one) of cassette SRC into DST, creating DST
    or appending to it. Either is a file or a store URL
    (postgresql://USER@HOST/DB?cassette=NAME); ids in DST are DST's, in SRC's order. From a
    store, interactions still being recorded are left out unless SRC's URL says
    in_progress=true. One line per interaction, then a summary, on stderr."""

    async def go() -> None:
        from sse_recorder.store.copy import Copied, copy

        def line(done: Copied) -> None:
            click.echo(f"#{done.source_id} -> #{done.id}: {count(done.chunks, 'chunk')}, "
                       f"{size(done.body_size)}", err=True)

        copied = await copy(source, destination, ids, line)
        click.echo(f"copied {count(len(copied), 'interaction')} "
                   f"({size(sum(c.body_size for c in copied))}) from {source} into "
                   f"{destination}", err=True)

    _run(go())

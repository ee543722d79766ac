"""`sse-recorder ls` and `show`: what a cassette holds, as a table, a timeline or JSON."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import click

from sse_recorder.cli.app import _run, main


def _ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.1f}ms"


def _content_type(interaction: Any) -> str:
    from sse_recorder.model import header_value

    if interaction.response is None:
        return "-"
    return (header_value(interaction.response.headers, "content-type") or "-").split(";")[0]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _interaction_json(cassette: Any, interaction: Any) -> dict[str, Any]:
    chunks = [
        {
            "seq": c.seq,
            "offset_ms": c.offset_ns / 1e6,
            "size": len(c.data),
            "data": base64.b64encode(c.data).decode("ascii"),
        }
        async for c in cassette.chunks(interaction.id)
    ]
    events = [
        {"type": e.type, "data": e.data, "id": e.id, "retry": e.retry,
         "offset_ms": e.offset_ns / 1e6}
        for e in await cassette.events(interaction.id)
        if e.kind == "event"
    ]
    response = interaction.response
    return {
        "id": interaction.id,
        "request": {
            "method": interaction.request.method,
            "url": interaction.request.url,
            "headers": [list(h) for h in interaction.request.headers],
        },
        "response": None if response is None else {
            "status": response.status,
            "headers": [list(h) for h in response.headers],
        },
        "complete": interaction.complete,
        "end_reason": interaction.outcome.value,
        "chunks": chunks,
        "events": events,
    }


async def _dump_json(path: Path, only: int | None) -> None:
    from sse_recorder.store.cassette import Cassette

    async with await Cassette.open(path) as cassette:
        chosen = (
            [await cassette.interaction(only)] if only is not None
            else await cassette.interactions()
        )
        document = {
            "cassette": str(path),
            "format_version": cassette.version,
            "interactions": [await _interaction_json(cassette, i) for i in chosen],
        }
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


@main.command("ls")
@click.argument("cassette", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every chunk.")
def list_interactions(cassette: Path, as_json: bool) -> None:
    """List CASSETTE's interactions, one line each."""
    if as_json:
        _run(_dump_json(cassette, None))
        return

    async def go() -> str:
        from sse_recorder.store.cassette import Cassette

        async with await Cassette.open(cassette) as opened:
            found = await opened.interactions()
        rows = [["ID", "METHOD", "URL", "STATUS", "TYPE", "EVENTS", "CHUNKS", "DURATION", "END"]]
        for i in found:
            rows.append([
                str(i.id), i.request.method, i.request.url,
                str(i.response.status) if i.response else "-", _content_type(i),
                str(i.event_count), str(i.chunk_count), _ms(i.end_offset_ns), i.outcome.value,
            ])
        return _table(rows) if found else f"{cassette}: no interactions recorded yet"

    click.echo(_run(go()))


@main.command()
@click.argument("cassette", type=click.Path(path_type=Path))
@click.argument("interaction_id", required=False, type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every chunk.")
def show(cassette: Path, interaction_id: int | None, as_json: bool) -> None:
    """Show the timeline of one interaction (or all): each chunk and event with its offset."""
    if as_json:
        _run(_dump_json(cassette, interaction_id))
        return

    async def go() -> None:
        from sse_recorder.store.cassette import Cassette

        async with await Cassette.open(cassette) as opened:
            chosen = (
                [await opened.interaction(interaction_id)] if interaction_id is not None
                else await opened.interactions()
            )
            for interaction in chosen:
                await _print_timeline(opened, interaction)

    _run(go())


async def _print_timeline(cassette: Any, i: Any) -> None:
    status = f"{i.response.status} {i.response.reason}" if i.response else "no response"
    click.echo(f"#{i.id} {i.request.method} {i.request.url} -> {status}")
    click.echo(
        f"  started {i.started_at:.3f}  head at {_ms(i.head_offset_ns)}  "
        f"{i.chunk_count} chunks, {i.body_size} bytes, {i.event_count} events  "
        f"end: {i.outcome.value}{' (complete)' if i.complete else ' (incomplete)'}"
        + (f"  [{i.error}]" if i.error else "")
    )
    events = await cassette.events(i.id)
    by_last_chunk: dict[int, list[Any]] = {}
    for event in events:
        by_last_chunk.setdefault(event.last_chunk, []).append(event)
    async for chunk in cassette.chunks(i.id):
        preview = chunk.data[:60].decode("utf-8", "replace").encode("unicode_escape").decode()
        click.echo(f"  {chunk.offset_ns / 1e6:10.3f}ms  chunk {chunk.seq:<5} "
                   f"{len(chunk.data):>6}B  {preview}")
        for event in by_last_chunk.get(chunk.seq, []):
            if event.kind == "comment":
                click.echo(f"  {'':>12}    comment  : {event.data}")
            else:
                fields = (("id", event.id), ("retry", event.retry))
                meta = "".join(f" {k}={v}" for k, v in fields if v is not None)
                data = event.data if len(event.data) <= 70 else event.data[:67] + "..."
                click.echo(f"  {'':>12}    event {event.type}{meta}: {data}")

"""`sse-recorder ls` and `show`: what a cassette holds, for a reader or for a script.

`ls` is one row per interaction (a table; with `--json`, one summary object each); `show`
is one interaction in full: the request as matching compares it (headers, body), the
response head and the timeline, each event previewed by what changes from event to event.
Times are ISO 8601 with the local offset; offsets are milliseconds from the request.
Tables use rich on a terminal and plain columns otherwise (scripts and tests read those).
"""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from sse_recorder.cli.app import _run, cassette_argument, json_option, main
from sse_recorder.cli.formats import count, local_time, seconds, size
from sse_recorder.cli.previews import event_previews
from sse_recorder.framing.base import FRAME_KINDS
from sse_recorder.model import Interaction, RecordedEvent, header_value
from sse_recorder.report.timeline import (
    Recording,
    density,
    gap_points,
    histogram,
    sparkline,
    stats,
)

BODY_LINES = 40  # of a pretty-printed body in `show` (--json has everything)

# The format version is written out (tests/unit/test_cli_usage.py holds it to the store's
# FORMAT_VERSION): reading the constant would import SQLAlchemy for `--help` (0.6 s).
LS_SCHEMA = """\b
ls --json:
{"cassette": PATH,
 "format_version": 2 (lower in a file only older releases recorded into),
 "interactions": [SUMMARY, ...]}
SUMMARY: {"id", "method", "url", "status" (null: no response), "content_type",
  "sse", "started_at" (ISO 8601, local offset), "head_ms", "duration_ms",
  "chunk_count", "event_count", "body_size", "complete", "outcome", "error"}"""

SHOW_SCHEMA = """\b
show --json:
{"cassette": PATH,
 "format_version": 2 (lower in a file only older releases recorded into),
 "interactions": [INTERACTION, ...]}
INTERACTION: the `ls --json` SUMMARY fields, plus
  "request": {"method", "url", "http_version", "headers": [[NAME, VALUE], ...],
              "body": {"size", "text" (null unless UTF-8), "base64"}},
  "response": null | {"status", "reason", "http_version", "headers"},
  "chunks": [{"seq", "offset_ms", "size", "base64"}, ...],
  "events": [{"seq", "kind" (event|comment), "type", "data", "id", "retry",
              "offset_ms", "first_chunk", "last_chunk"}, ...]"""


def _ms(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def _content_type(i: Interaction) -> str | None:
    if i.response is None:
        return None
    found = header_value(i.response.headers, "content-type")
    return found.split(";")[0].strip() if found else None


def summary(i: Interaction) -> dict[str, Any]:
    """An interaction's `ls --json` object."""
    return {
        "id": i.id, "method": i.request.method, "url": i.request.url,
        "status": i.response.status if i.response else None, "content_type": _content_type(i),
        "sse": i.is_sse, "started_at": local_time(i.started_at),
        "head_ms": _ms(i.head_offset_ns), "duration_ms": _ms(i.end_offset_ns),
        "chunk_count": i.chunk_count, "event_count": i.event_count, "body_size": i.body_size,
        "complete": i.complete, "outcome": i.outcome.value, "error": i.error,
    }


async def _full(cassette: Any, i: Interaction) -> dict[str, Any]:
    """An interaction's `show --json` object: the summary and everything recorded."""
    response = i.response
    body = i.request.body
    return {
        **summary(i),
        "request": {
            "method": i.request.method, "url": i.request.url,
            "http_version": i.request.http_version,
            "headers": [list(h) for h in i.request.headers],
            "body": {"size": len(body), "text": _text(body),
                     "base64": base64.b64encode(body).decode("ascii")},
        },
        "response": None if response is None else {
            "status": response.status, "reason": response.reason,
            "http_version": response.http_version,
            "headers": [list(h) for h in response.headers],
        },
        "chunks": [
            {"seq": c.seq, "offset_ms": _ms(c.offset_ns), "size": len(c.data),
             "base64": base64.b64encode(c.data).decode("ascii")}
            async for c in cassette.chunks(i.id)
        ],
        "events": [
            {"seq": e.seq, "kind": e.kind, "type": e.type, "data": e.data, "id": e.id,
             "retry": e.retry, "offset_ms": _ms(e.offset_ns), "first_chunk": e.first_chunk,
             "last_chunk": e.last_chunk}
            for e in await cassette.events(i.id)
        ],
    }


def _text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _print_json(document: dict[str, Any]) -> None:
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


async def _chosen(cassette: Any, only: int | None) -> list[Interaction]:
    return [await cassette.interaction(only)] if only is not None else (
        await cassette.interactions())


# -- ls --------------------------------------------------------------------------------------

COLUMNS = ("ID", "METHOD", "URL", "STATUS", "TYPE", "EVENTS", "CHUNKS", "SIZE", "STARTED",
           "DURATION", "END")


def _row(i: Interaction) -> list[str]:
    return [
        str(i.id), i.request.method, i.request.url,
        str(i.response.status) if i.response else "-", _content_type(i) or "-",
        str(i.event_count), str(i.chunk_count), size(i.body_size), local_time(i.started_at),
        "-" if i.end_offset_ns is None else seconds(i.end_offset_ns / 1e9), i.outcome.value,
    ]


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _echo_table(rows: list[list[str]]) -> None:
    """Rich on a terminal, plain columns otherwise."""
    if not sys.stdout.isatty():
        click.echo(plain_table([list(COLUMNS), *rows]))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*COLUMNS, box=None, header_style="bold")
    for row in rows:  # Text, not markup: a URL may hold brackets
        table.add_row(*map(Text, row[:-1]),
                      Text(row[-1], style="green" if row[-1] == "clean" else "yellow"))
    Console().print(table)


@main.command("ls", epilog=LS_SCHEMA)
@cassette_argument
@json_option("a summary of each interaction")
def list_interactions(cassette: Path, as_json: bool) -> None:
    """List CASSETTE's interactions, one row each (errors below the table; on a terminal,
    a summary line of the whole cassette last).

    The --json document is below (for the full timeline: `show --json`).
    """

    async def go() -> None:
        from sse_recorder.store import Location, list_cassettes
        from sse_recorder.store.cassette import Cassette

        if isinstance(cassette, Location) and cassette.name is None:  # a store: its cassettes
            stored = await list_cassettes(cassette)
            if as_json:
                _print_json({"store": cassette.store, "cassettes": [
                    {"name": c.name, "interactions": c.interactions} for c in stored]})
            for c in [] if as_json else stored:
                click.echo(f"{c.name}\t{count(c.interactions, 'interaction')}")
            if not stored and not as_json:
                click.echo(f"{cassette.store}: no cassettes")
            return
        async with await Cassette.open(cassette) as opened:
            found = await opened.interactions()
            version = opened.version
        if as_json:
            _print_json({"cassette": str(cassette), "format_version": version,
                         "interactions": [summary(i) for i in found]})
        elif not found:
            click.echo(f"{cassette}: no interactions recorded")
        else:
            _echo_table([_row(i) for i in found])
            for i in found:
                if i.error:
                    click.echo(f"#{i.id}: {i.error}")
            if sys.stdout.isatty():  # for a reader: a script reads the table alone
                click.echo(cassette_summary(str(cassette), found))

    _run(go())


def cassette_summary(name: str, found: Sequence[Interaction]) -> str:
    """One line for a whole cassette: interactions, events, bytes, endings, time spanned."""
    endings = Counter(i.outcome.value for i in found)
    span = max(i.started_at + (i.end_offset_ns or 0) / 1e9 for i in found) - min(
        i.started_at for i in found)
    return (f"{name}: {count(len(found), 'interaction')} ({sum(i.is_sse for i in found)} SSE), "
            f"{count(sum(i.event_count for i in found), 'event')}, "
            f"{size(sum(i.body_size for i in found))}, endings "
            + ", ".join(f"{n} {outcome}" for outcome, n in endings.most_common())
            + f", recorded over {seconds(span)}")


# -- show ------------------------------------------------------------------------------------

SKETCH_COLUMNS = 60


def sketch(rec: Recording) -> list[str]:
    """`show`'s compact timeline: activity along the response and the spread of its gaps,
    as sparklines a terminal can show."""
    figures = stats(rec)
    of, points = gap_points(rec)
    columns = density(points, figures.duration_ms, SKETCH_COLUMNS)
    lines = [f"  activity |{sparkline(columns)}| 0-{seconds(figures.duration_ms / 1000)}, "
             f"{of} per 1/{SKETCH_COLUMNS} of the response, ended {rec.interaction.outcome}"]
    bins = histogram(figures.gaps_ms)
    if bins:
        hi = bins[-1].hi_ms
        top = "" if hi == float("inf") else f"-{seconds(hi / 1000)}"
        lines.append(
            f"  gaps     |{sparkline([b.count for b in bins])}| {seconds(bins[0].lo_ms / 1000)}"
            f"{top} on a 1-2-5 scale: {count(len(figures.gaps_ms), 'gap')}, median "
            f"{seconds((figures.gap_median_ms or 0) / 1000)}, p95 "
            f"{seconds((figures.gap_p95_ms or 0) / 1000)}, max "
            f"{seconds((figures.gap_max_ms or 0) / 1000)}"
            + (f", {len(figures.long_gaps)} long" if figures.long_gaps else ""))
    return lines


@main.command(epilog=SHOW_SCHEMA)
@cassette_argument
@click.argument("interaction_id", required=False, type=int, metavar="[ID]")
@json_option("the interactions in full")
def show(cassette: Path, interaction_id: int | None, as_json: bool) -> None:
    """Show interaction ID of CASSETTE (default: every one) in full: the request with its
    body, the response head, and the timeline of chunks and events (each event previewed
    by the JSON fields that change from event to event).

    The --json document is below (a summary per interaction: `ls --json`).
    """

    async def go() -> None:
        from sse_recorder.store.cassette import Cassette

        async with await Cassette.open(cassette) as opened:
            chosen = await _chosen(opened, interaction_id)
            if as_json:
                _print_json({"cassette": str(cassette), "format_version": opened.version,
                             "interactions": [await _full(opened, i) for i in chosen]})
                return
            for n, interaction in enumerate(chosen):
                if n:
                    click.echo("")
                await _print_interaction(opened, interaction)

    _run(go())


async def _print_interaction(cassette: Any, i: Interaction) -> None:
    response = i.response
    status = f"{response.status} {response.reason}".strip() if response else "no response"
    click.echo(click.style(f"#{i.id} {i.request.method} {i.request.url} -> {status}",
                           bold=True))
    head = "-" if i.head_offset_ns is None else seconds(i.head_offset_ns / 1e9)
    duration = "-" if i.end_offset_ns is None else seconds(i.end_offset_ns / 1e9)
    events = (f"{count(i.event_count, 'event')}, " if i.is_sse
              else f"{count(i.event_count, 'frame')}, " if i.event_count else "")
    click.echo(f"  started {local_time(i.started_at)}, head after {head}, {events}"
               f"{count(i.chunk_count, 'chunk')} ({size(i.body_size)}), {duration}, ended "
               f"{i.outcome.value}" + ("" if i.complete else " (incomplete)"))
    if i.error:
        click.echo(f"  error: {i.error}")
    _print_headers("request", i.request.headers)
    _print_body("request body", i.request.body, i.request.headers)
    if response is not None:
        _print_headers("response", response.headers)
    chunks = [c async for c in cassette.chunks(i.id)]
    if response is not None and not i.is_sse:
        _print_body("response body", b"".join(c.data for c in chunks), response.headers)
    recorded = await cassette.events(i.id)
    if not chunks and not recorded:
        return
    for line in sketch(Recording(i, tuple(c.offset_ns for c in chunks),
                                 tuple(len(c.data) for c in chunks), tuple(recorded))):
        click.echo(line)
    click.echo("  timeline (ms from the request):")
    previews = event_previews(recorded)
    completed: dict[int, list[RecordedEvent]] = {}
    for event in recorded:
        completed.setdefault(event.last_chunk, []).append(event)
    for chunk in chunks:
        ends_here = completed.get(chunk.seq, [])
        raw = "" if ends_here and i.is_sse else "  " + _escaped(chunk.data[:60])
        click.echo(f"  {chunk.offset_ns / 1e6:10.3f}  chunk {chunk.seq:<5} "
                   f"{size(len(chunk.data)):>8}{raw}")
        for event in ends_here:
            click.echo(f"  {'':>10}    {_event_label(event)}: {previews[event.seq]}")


def _print_headers(what: str, headers: Sequence[tuple[str, str]]) -> None:
    click.echo(f"  {what} headers:" + ("" if headers else " none"))
    for name, value in headers:
        click.echo(f"    {name}: {value}")


def _print_body(what: str, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    """A body as a reader wants it: pretty JSON, else text, else its size."""
    if not body:
        click.echo(f"  {what}: none")
        return
    encoding = header_value(tuple(headers), "content-encoding")
    text = None if encoding else _text(body)
    if text is None:
        click.echo(f"  {what}: {size(len(body))}"
                   + (f", {encoding}-encoded" if encoding else ", binary"))
        return
    try:
        shown, kind = json.dumps(json.loads(text), indent=2, ensure_ascii=False), " (JSON)"
    except ValueError:
        shown, kind = text, ""
    lines = shown.splitlines()
    click.echo(f"  {what}{kind}, {size(len(body))}:")
    for line in lines[:BODY_LINES]:
        click.echo(f"    {line}")
    if len(lines) > BODY_LINES:
        click.echo(f"    ... {len(lines) - BODY_LINES} more lines (--json has them all)")


def _escaped(data: bytes) -> str:
    return data.decode("utf-8", "replace").encode("unicode_escape").decode()


def _event_label(event: RecordedEvent) -> str:
    if event.kind == "comment":
        return "comment"
    if event.kind in FRAME_KINDS:  # a frame of a stream that is not SSE (sse_recorder.framing)
        return event.kind + (f" {event.type}" if event.type else "")
    fields = (("id", event.id), ("retry", event.retry))
    kind = f" {event.type}" if event.type and event.type != "message" else ""
    return "event" + kind + "".join(f" {k}={v}" for k, v in fields if v is not None)

"""`sse-recorder report` (an HTML timeline of a cassette) and `diff` (what drifted between
two cassettes). The pages and the comparison live in `sse_recorder.report`; this module
reads the command line, the cassettes, and writes the results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sse_recorder.cli.app import (
    IGNORE_OPTIONS,
    CassetteTarget,
    _fail,
    _run,
    cassette_argument,
    check_ignores,
    json_option,
    main,
    match_options,
    refuse_overwriting,
    write_whole,
)
from sse_recorder.cli.formats import size
from sse_recorder.errors import SSERecorderError

if TYPE_CHECKING:
    from sse_recorder.store.location import Location

DIFF_EPILOG = """\b
Findings (each a JSON object: kind, a, b (interaction ids), the fields below, message):
{kinds}
\b
Timing: drift is a change by more than RATIO times AND more than DURATION.
Defaults: {thresholds}
\b
diff --json:
{{"a": PATH, "b": PATH, "pair_by": "match"|"id", "thresholds": {{METRIC: {{"ratio",
  "floor_ms"}}}}, "findings": N, "pairs": [{{"a": ID|null, "b": ID|null, "request",
  "findings": [FINDING, ...]}}, ...]}}
\b
Exit status: 0 nothing drifted, 1 something did, 2 bad input."""


def _diff_epilog() -> str:
    from dataclasses import fields

    from sse_recorder.report.diff import DEFAULT_THRESHOLDS, KINDS, Finding

    shared = {f.name for f in fields(Finding)}
    kinds = []
    for kind, cls in KINDS.items():
        own = [f.name for f in fields(cls) if f.name not in shared]
        kinds.append(f"  {kind:<16} {cls.about}\n  {'':<16} fields: {', '.join(own)}")
    thresholds = ", ".join(f"{m}={t.ratio:g}:{t.floor_ms:g}ms"
                           for m, t in DEFAULT_THRESHOLDS.items())
    return DIFF_EPILOG.format(kinds="\n".join(kinds), thresholds=thresholds)


@main.command()
@cassette_argument
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE.html", help="Where to write the page (default: CASSETTE with "
              ".html instead of its suffix; - for stdout; needed for a store URL).")
def report(cassette: Path | Location, ids: tuple[int, ...], output: Path | None) -> None:
    """Write one self-contained HTML page about CASSETTE (or its interactions ID...): per
    interaction the request and response, time to first byte, a timeline of chunks and
    events with the ending, a gap histogram, rates, counts per event type and the event
    payloads on demand. The path written is printed."""
    from sse_recorder.report.html import report_page
    from sse_recorder.report.load import load

    if isinstance(cassette, Path):
        target = output or cassette.with_suffix(".html")
        refuse_overwriting(target, "-o", cassette)
    elif output is None:
        _fail(f"{cassette}: a cassette in a store has no file beside it: name the page "
              "with -o FILE.html")
    else:
        target = output
    recordings = _run(load(cassette, ids))
    page = report_page(str(cassette), recordings)
    if str(target) == "-":
        sys.stdout.write(page)
        return
    write_whole(target, page.encode())
    click.echo(target)
    click.echo(f"{len(recordings)} interaction{'s' if len(recordings) != 1 else ''}, "
               f"{size(len(page.encode()))}", err=True)


class _DiffCommand(click.Command):
    """The epilog lists the finding kinds from their table, built when help is asked for."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = _diff_epilog()
        super().format_epilog(ctx, formatter)


@main.command(cls=_DiffCommand)
@click.argument("a", type=CassetteTarget())
@click.argument("b", type=CassetteTarget())
@json_option("the pairs and their findings")
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Also write the findings as an HTML page.")
@click.option("--pair-by", type=click.Choice(["match", "id"]), default="match",
              show_default=True, help="Pair B's interactions with A's by the replay matching "
              "rules (A's recordings answer B's requests) or by interaction id.")
@match_options("pairing",
               "With --pair-by match: criteria as for replay (default method,path,query,body).",
               "Header to ignore when pairing and among response headers (repeatable).")
@click.option("--threshold", "thresholds", multiple=True, metavar="METRIC=RATIO[:DURATION]",
              help="Timing drift threshold (repeatable): ttfb, gap-median, gap-p95, duration.")
def diff(a: Path | Location, b: Path | Location, as_json: bool, html_file: Path | None,
         pair_by: str, match: str | None, ignore_json: tuple[str, ...],
         ignore_query: tuple[str, ...], ignore_header: tuple[str, ...],
         thresholds: tuple[str, ...]) -> None:
    """Compare cassette B (say, a fresh recording) with A (the committed one): per pair of
    interactions, status and header changes, event types added, removed, reordered or
    repeated, the JSON shape of each event type's data, endings and timing drift, and the
    interactions only one side has. Exit status 0: nothing drifted; 1: something did."""
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.report.diff import Options, parse_thresholds
    from sse_recorder.report.diff import diff as compare
    from sse_recorder.report.load import load

    if pair_by == "id" and (match or ignore_json or ignore_query):
        _fail("--match, --ignore-json and --ignore-query pair by the matching rules: they do "
              "nothing with --pair-by id")
    # --ignore-header also leaves response headers out of the findings: it always counts
    check_ignores(click.get_current_context(),
                  {n: f for n, f in IGNORE_OPTIONS.items() if n != "ignore_header"})
    try:
        options = Options(
            pair_by, MatchConfig.parse(match, ignore_json, ignore_query, ignore_header),
            parse_thresholds(thresholds), frozenset(h.lower() for h in ignore_header))
    except SSERecorderError as exc:
        _fail(str(exc))
    refuse_overwriting(html_file, "--html", a, b)
    found = compare(_run(load(a)), _run(load(b)), options)
    count = sum(len(r.findings) for r in found)
    if html_file is not None:
        from sse_recorder.report.html import diff_page

        write_whole(html_file, diff_page(str(a), str(b), found, options).encode())
    if as_json:
        document = {
            "a": str(a), "b": str(b), "pair_by": pair_by,
            "thresholds": {m: {"ratio": t.ratio, "floor_ms": t.floor_ms}
                           for m, t in options.thresholds.items()},
            "findings": count,
            "pairs": [{"a": r.pair.a.interaction.id if r.pair.a else None,
                       "b": r.pair.b.interaction.id if r.pair.b else None,
                       "request": r.request, "findings": [f.record() for f in r.findings]}
                      for r in found],
        }
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for r in found:
            ids = " ".join(f"{side}#{p.interaction.id}"
                           for side, p in (("A", r.pair.a), ("B", r.pair.b)) if p)
            click.echo(f"{ids} {r.request}: " + ("no drift" if not r.findings else
                                                  f"{len(r.findings)} finding"
                                                  + ("s" if len(r.findings) != 1 else "")))
            for finding in r.findings:
                click.echo(f"  {finding.kind}: {finding.message()}")
        drifted = sum(1 for r in found if r.findings)
        click.echo(f"{count} finding{'s' if count != 1 else ''} in {drifted} of {len(found)} "
                   "pairs" if count else f"no drift: {len(found)} pair"
                   f"{'s' if len(found) != 1 else ''} alike within the thresholds")
    sys.exit(1 if count else 0)

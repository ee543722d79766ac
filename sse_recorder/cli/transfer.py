"""`sse-recorder export` and `import`: cassettes to and from HAR, mitmproxy flows, `.sse`
text and JSON lines (`sse_recorder.transfer`). Nothing partial is ever written: both write
a temporary file beside the target and rename it into place once complete (an import into
a store copies the finished file in); an import stopped by Ctrl-C or SIGTERM removes it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sse_recorder.cli.app import (
    CassetteTarget,
    _fail,
    _run,
    cassette_argument,
    main,
    needs_mitmproxy,
    refuse_overwriting,
    write_whole,
)
from sse_recorder.errors import SSERecorderError
from sse_recorder.partial import removing_on_sigterm
from sse_recorder.transfer.formats import FORMATS

if TYPE_CHECKING:
    from sse_recorder.store.location import Location

F = TypeVar("F", bound=Callable[..., Any])
FORMAT_HELP = "; ".join(f"{f.name}: {f.what}" for f in FORMATS.values()) + "."


def redaction_options(command: F) -> F:
    """The recorder's redaction options: an import redacts exactly as a recording does."""
    for option in reversed((
        click.option("--redact-header", multiple=True, metavar="NAME",
                     help="Extra header to redact (credential headers always are)."),
        click.option("--redact-query", multiple=True, metavar="NAME",
                     help="Extra query parameter to redact."),
        click.option("--redact-json", multiple=True, metavar="FIELD",
                     help="Extra JSON field to redact in bodies and SSE data."),
        click.option("--redact-value", multiple=True, metavar="VALUE",
                     help="A secret never to store, wherever it appears (also encoded)."),
        click.option("--redact-env", multiple=True, metavar="NAME",
                     help="An environment variable whose value is never stored."),
    )):
        command = option(command)
    return command


def _flows_guard(action: Callable[[], Any]) -> Any:
    """Run `action`; the flows format without mitmproxy (the only format that imports it)
    is the CLI's one-line error."""
    try:
        return action()
    except ImportError as exc:
        if not (exc.name or "").startswith("mitmproxy"):
            raise
        _fail(needs_mitmproxy("the flows format", exc))


@main.command("export")
@cassette_argument
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@click.option("--format", "format_name", type=click.Choice(list(FORMATS)), required=True,
              help=FORMAT_HELP)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write to this file (default: standard output). Replaced only once "
                   "complete.")
def export(cassette: Path, ids: tuple[int, ...], format_name: str, output: Path | None) -> None:
    """Write CASSETTE's interactions (or those of the IDs given, in that order) in another
    format. Every format reads back (`sse-recorder import`) with the same chunks, offsets
    and endings."""
    from sse_recorder.transfer.exchange import read_cassette

    refuse_overwriting(output, "-o", cassette)
    exchanges = _run(read_cassette(cassette, ids))
    data: bytes = _flows_guard(lambda: FORMATS[format_name].write(exchanges))
    if output is None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except OSError as exc:  # a full disk, a closed pipe...
            _fail(f"cannot write to standard output: {exc.strerror or exc}")
        return
    write_whole(output, data)
    click.echo(f"exported {len(exchanges)} interaction{'s' if len(exchanges) != 1 else ''} "
               f"to {output} ({format_name})", err=True)


@main.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "format_name", type=click.Choice(list(FORMATS)),
              help="The input's format (default: guessed from its content). " + FORMAT_HELP)
@click.option("-o", "--output", type=CassetteTarget(), required=True, metavar="CASSETTE",
              help="The cassette to create, a file or a store URL (an existing one is "
                   "refused).")
@redaction_options
def import_(file: Path, format_name: str | None, output: Path | Location,
            redact_header: tuple[str, ...], redact_query: tuple[str, ...],
            redact_json: tuple[str, ...], redact_value: tuple[str, ...],
            redact_env: tuple[str, ...]) -> None:
    """Create a cassette (-o) from FILE (HAR, mitmproxy flows, .sse text or JSON lines),
    redacted as a recording is. One stderr line per interaction imported, warnings for
    what the input lacks (e.g. a streamed body mitmproxy did not store)."""
    from sse_recorder.cli.record import recorded_line, secret_values
    from sse_recorder.record.redact import RedactionRules
    from sse_recorder.transfer.exchange import write_cassette
    from sse_recorder.transfer.formats import read_file

    rules = RedactionRules.with_extra(redact_header, redact_query, redact_json,
                                      secret_values(redact_value, redact_env))
    try:
        imported = _flows_guard(lambda: read_file(file, format_name))
    except SSERecorderError as exc:
        _fail(str(exc))
    for warning in imported.warnings:
        click.echo(f"sse-recorder: warning: {warning}", err=True)
    lines: list[str] = []
    with removing_on_sigterm("import"):  # SIGTERM does not unwind: the handler cleans up
        _run(write_cassette(imported.exchanges, output, rules,
                            lambda item: lines.append(recorded_line(item))))
    for line in lines:
        click.echo(line, err=True)
    count = len(imported.exchanges)
    click.echo(f"imported {count} interaction{'s' if count != 1 else ''} from {file} "
               f"into {output}", err=True)

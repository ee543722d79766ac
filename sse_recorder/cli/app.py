"""The `sse-recorder` command line: the click group and what every command shares.

Each command family is a module of its own (record, inspect, replay, demo) that registers
on `main` when `sse_recorder.cli` imports it. Heavy imports (SQLAlchemy, mitmproxy) happen
inside the commands so `--help` is instant and the core commands work without the `record`
extra.

The convention every command follows (tests/integration/test_cli_convention.py checks it):
- every expected failure, usage errors included, is one line on stderr and exit status 2:
  `sse-recorder: <message>`;
- the same thing has the same name everywhere (mitmproxy's name where it has one):
  `--listen-host/--listen-port` for whatever listens, a `CASSETTE` argument, `--json` for
  a JSON document on stdout, `--confdir` for mitmproxy's directory. Older spellings stay
  as hidden aliases, so scripts keep working.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from sse_recorder import __version__
from sse_recorder.errors import SSERecorderError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


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


INTERRUPTED = 130  # the shell's status for a process SIGINT ended


def _fail(message: str) -> NoReturn:
    """An expected failure: one line on stderr, exit status 2."""
    click.echo(f"sse-recorder: {' '.join(message.split())}", err=True)
    sys.exit(2)


def refuse_overwriting(output: Path | None, option: str, *cassettes: object) -> None:
    """Fail when `output` (what `option` writes) is one of `cassettes` (paths; a store URL
    is never a file): writing it would destroy the recording."""
    if output is None or str(output) == "-":
        return
    from sse_recorder.store.location import same_file

    for cassette in cassettes:
        if isinstance(cassette, Path) and same_file(output, cassette):
            _fail(f"{output}: is the cassette {cassette}: choose another {option}")


def write_whole(path: Path, data: bytes) -> None:
    """Write an output file (`-o`, `--html`) whole or not at all: a temporary file beside
    it, renamed into place once complete. A path that is no regular file (`/dev/null`, a
    FIFO, `/dev/stdout`) is written as it is: a rename would replace the device itself."""
    try:
        if path.exists() and not path.is_file():
            with path.open("wb") as out:
                out.write(data)
            return
    except OSError as exc:
        _fail(f"{path}: cannot write: {exc.strerror or exc}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        _fail(f"{path}: cannot write: {exc.strerror or exc}")


class _Group(click.Group):
    """Click's usage errors are four lines (usage, blank, hint, error): here they are one,
    naming the help to read, with click's exit status 2. No command at all is a request
    for help, not an error: the help on stdout, exit status 0, as `--help` (click 8.2
    raises it as a usage error, which the one-line form would flatten)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None,
        complete_var: str | None = None, standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.NoSuchOption as exc:
            if exc.ctx is not None:  # suggest only documented names, not hidden aliases
                shown = _documented_names(exc.ctx.command)
                exc = click.NoSuchOption(
                    exc.option_name, possibilities=[
                        p for p in exc.possibilities or () if p in shown], ctx=exc.ctx)
            _fail(f"{exc.format_message()} (see {_command_path(exc)} --help)")
        except click.UsageError as exc:
            _fail(f"{exc.format_message()} (see {_command_path(exc)} --help)")
        except click.ClickException as exc:
            _fail(exc.format_message())
        except click.Abort:  # Ctrl-C (click has ended the terminal's line already)
            click.echo("sse-recorder: stopped (Ctrl-C)", err=True)
            sys.exit(INTERRUPTED)
        sys.exit(status if isinstance(status, int) else 0)


def _command_path(exc: click.UsageError) -> str:
    return exc.ctx.command_path if exc.ctx is not None else "sse-recorder"


def _documented_names(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option)
            and not param.hidden
            for name in (param.documented if isinstance(param, AliasedOption) else param.opts)}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sse-recorder")
def main() -> None:
    """Record Server-Sent Events through mitmproxy into SQLite cassettes, and replay them."""


# -- the shared options ------------------------------------------------------------------


class AliasedOption(click.Option):
    """An option with older names that still parse but stay out of `--help` and of error
    messages, so there is one documented spelling and no broken script."""

    def __init__(self, param_decls: Sequence[str], *, aliases: Sequence[str] = (),
                 **attrs: Any) -> None:
        super().__init__([*param_decls, *aliases], **attrs)
        self.aliases = tuple(aliases)

    @property
    def documented(self) -> list[str]:
        return [name for name in self.opts if name not in self.aliases]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        every = self.opts
        self.opts = self.documented
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = every

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{name}'" for name in self.documented)


def listen_options(what: str) -> Callable[[F], F]:
    """`--listen-host` and `--listen-port` (mitmproxy's names), `--host/--port` hidden."""

    def decorate(command: F) -> F:
        command = click.option(
            "--listen-port", cls=AliasedOption, aliases=["--port"], default=0,
            show_default=True, type=click.IntRange(0, 65535),
            help=f"Port {what} listens on; 0 picks a free one (the URL printed first says "
                 "which).")(command)
        return click.option(
            "--listen-host", cls=AliasedOption, aliases=["--host"], default="127.0.0.1",
            show_default=True, metavar="ADDRESS",
            help=f"Address {what} listens on (0.0.0.0: every interface).")(command)

    return decorate


def match_options(doing: str, match_help: str, header_help: str) -> Callable[[F], F]:
    """`--match` and `--ignore-json/--ignore-query/--ignore-header`: the matching rules
    (`MatchConfig.parse`), which `replay` matches requests by and `diff` pairs by; `doing`
    says which ("matching", "pairing")."""

    def decorate(command: F) -> F:
        for option in reversed([
            click.option("--match", "match", metavar="LIST", help=match_help),
            click.option("--ignore-json", multiple=True, metavar="FIELD",
                         help=f"JSON request body field to ignore when {doing} (repeatable)."),
            click.option("--ignore-query", multiple=True, metavar="NAME",
                         help=f"Query parameter to ignore when {doing} (repeatable)."),
            click.option("--ignore-header", multiple=True, metavar="NAME", help=header_help),
        ]):
            command = option(command)
        return command

    return decorate


class CassetteTarget(click.Path):
    """A cassette: a SQLite file path, or a store URL (`postgresql://...?cassette=NAME`),
    which becomes a `store.Location` whose str() hides the password. Anything that does
    not start with `scheme://` is a path, as it always was."""

    name = "cassette"

    def __init__(self) -> None:
        super().__init__(path_type=Path, dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        from sse_recorder.store.location import locate, looks_like_url

        if isinstance(value, str) and looks_like_url(value):
            try:
                location = locate(value)
            except SSERecorderError as exc:
                self.fail(str(exc), param, ctx)
            if not isinstance(location, Path) and location.password:
                # what is handed on (other processes, log lines) is str(location), which
                # has no password: it goes by the environment, as libpq's PGPASSWORD
                os.environ["PGPASSWORD"] = location.password
            return location
        return super().convert(value, param, ctx)


def cassette_argument(command: F) -> F:
    """The cassette every command works on, always the first argument: a file or a store
    URL (`CassetteTarget`)."""
    return click.argument("cassette", type=CassetteTarget())(command)


def confdir_option(help_prefix: str = "") -> Callable[[F], F]:
    return click.option(
        "--confdir", type=click.Path(path_type=Path, file_okay=False),
        default=Path("~/.mitmproxy").expanduser(), show_default=True,
        help=f"{help_prefix}mitmproxy's configuration directory (holds its CA).")


def json_option(document: str) -> Callable[[F], F]:
    """`--json`: print one JSON document on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help=f"Print {document} as one JSON document (schema below).")


@dataclass(frozen=True)
class Pairing:
    """A rule between two options: `option` needs `other` given too (`needs`), or does
    nothing when `other` is given (not `needs`). Checked at start, so no option is
    silently ignored."""

    option: str  # parameter names
    other: str
    needs: bool
    why: str


def check_pairings(ctx: click.Context, pairings: Sequence[Pairing]) -> None:
    """Raise a usage error for the first pairing the command line breaks."""
    for rule in pairings:
        if _given(ctx, rule.option) and _given(ctx, rule.other) is not rule.needs:
            verb = "needs" if rule.needs else "does nothing with"
            raise click.UsageError(f"{_shown(ctx, rule.option)} {verb} "
                                   f"{_shown(ctx, rule.other, value=False)}: {rule.why}", ctx)


# The ignore options `match_options` adds, by the `MatchConfig` field each fills; which
# --match part makes each one count is `matching.IGNORED_FROM`.
IGNORE_OPTIONS = {"ignore_json": "ignore_json", "ignore_query": "ignore_query",
                  "ignore_header": "ignore_headers"}


def check_ignores(ctx: click.Context, options: Mapping[str, str] = IGNORE_OPTIONS) -> None:
    """Raise a usage error for an ignore option that --match gives nothing to ignore from:
    `--ignore-header` without headers compared does nothing, like `--speed` with
    `--instant`. `options`: those to check (parameter name: `MatchConfig` field)."""
    from sse_recorder.replay.matching import CRITERIA, DEFAULT_CRITERIA, IGNORED_FROM, MatchConfig

    match = ctx.params.get("match")
    try:
        config = MatchConfig.parse(match, **{field: ctx.params[name]
                                             for name, field in options.items()})
    except SSERecorderError as exc:
        _fail(str(exc))
    for name, field in options.items():
        idle = {n.lower() for n in config.idle(field)}
        typed = next((v for v in ctx.params[name] if v.lower() in idle), None)
        if typed is None:
            continue
        part = IGNORED_FROM[field]
        if part in config.criteria:  # only the headers named by header:NAME are compared
            why = f"--match {match} compares only the headers it names"
        elif match:
            why = f"--match {match} leaves {part} out"
        else:
            default = ",".join(c for c in CRITERIA if c in DEFAULT_CRITERIA)
            why = f"the default --match {default} leaves {part} out"
        raise click.UsageError(f"{_shown(ctx, name, value=False)} {typed} needs {part} in "
                               f"--match: {why}", ctx)


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    given = source is not None and source not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    return given and ctx.params.get(name) not in (None, False, ())


def _shown(ctx: click.Context, name: str, value: bool = True) -> str:
    """An option as the user typed it: its documented name, and its value unless a flag."""
    param = next(p for p in ctx.command.params if p.name == name)
    shown = param.documented[0] if isinstance(param, AliasedOption) else param.opts[0]
    if value and not (isinstance(param, click.Option) and param.is_flag):
        given = ctx.params[name]
        if isinstance(given, tuple):  # a repeatable option: its first value
            given = given[0]
        shown += f" {given:g}" if isinstance(given, float) else f" {given}"
    return shown


# -- errors that name the cause -----------------------------------------------------------

# Why a listening socket could not be opened, and what to do about it.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "something else listens there: choose another --listen-port "
                      "(0 picks a free one)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: use --listen-host "
                         "127.0.0.1 (or 0.0.0.0 for every interface)",
    errno.EACCES: "ports below 1024 need privileges: choose another --listen-port "
                  "(0 picks a free one)",
}


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line for a socket that could not listen: the system's reason and the fix."""
    root: BaseException = exc
    while isinstance(root.__cause__, OSError):
        root = root.__cause__
    if isinstance(root, socket.gaierror):
        reason = f"{root.strerror}: --listen-host takes an address such as 127.0.0.1"
    else:
        code = exc.errno or getattr(root, "errno", None)
        reason = os.strerror(code).lower() if code else str(root)
        hint = _LISTEN_HINTS.get(code) if code else None
        reason += f": {hint}" if hint else ""
    return f"cannot listen on {host}:{port}: {reason}"


def needs_mitmproxy(what: str, exc: ImportError) -> str:
    """Why `what` cannot run in this install, and the install that can."""
    return (f"{what} needs mitmproxy, which this install lacks ({exc.name} cannot be "
            "imported): pipx install 'sse-recorder[record]' (or pip install "
            "'sse-recorder[record]' where mitmproxy's pins fit)")

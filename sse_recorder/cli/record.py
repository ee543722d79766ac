"""`sse-recorder record`: mitmproxy in front of an upstream, recording into a cassette."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from sse_recorder.cli.app import (
    AliasedOption,
    CassetteTarget,
    Pairing,
    _fail,
    _run,
    cannot_listen,
    check_ignores,
    check_pairings,
    confdir_option,
    listen_options,
    main,
    match_options,
    needs_mitmproxy,
)
from sse_recorder.cli.formats import count, seconds, size
from sse_recorder.errors import SSERecorderError

if TYPE_CHECKING:
    from sse_recorder.mitm.runner import Listening
    from sse_recorder.record.items import Recorded


@main.command()
@click.argument("cassette", required=False, metavar="CASSETTE", type=CassetteTarget())
@click.option("--cassette", "cassette_option", hidden=True,
              type=CassetteTarget())  # the older spelling
@click.option("--reverse", cls=AliasedOption, aliases=["--upstream"], metavar="URL",
              callback=lambda _ctx, _param, value: reverse_target(value),
              help="Reverse proxy in front of URL, as mitmproxy's --mode reverse:URL: clients "
                   "change only their base URL. URL has its scheme: http://127.0.0.1:8080, "
                   "https://api.openai.com. (Formerly --upstream.)")
@listen_options("the proxy")
@confdir_option()
@click.option("--include", multiple=True, metavar="ROUTE",
              help="Record only '[METHOD ]host/path-glob' routes (repeatable).")
@click.option("--exclude", multiple=True, metavar="ROUTE", help="Never record these routes.")
@click.option("--redact-header", multiple=True, metavar="NAME",
              help="Extra header to redact (credential headers always are).")
@click.option("--redact-query", multiple=True, metavar="NAME",
              help="Extra query parameter to redact.")
@click.option("--redact-json", multiple=True, metavar="FIELD",
              help="Extra JSON field to redact in bodies and SSE data.")
@click.option("--redact-value", multiple=True, metavar="VALUE",
              help="A secret never to store, wherever it appears (also encoded).")
@click.option("--redact-env", multiple=True, metavar="NAME",
              help="An environment variable whose value is never stored, like --redact-value.")
@click.option("--ssl-insecure", is_flag=True, help="Do not verify upstream TLS certificates.")
@click.option("--replay-matched", is_flag=True,
              help="Answer requests the cassette already holds from it; record only new ones.")
@match_options("matching (with --replay-matched)",
               "With --replay-matched: matching criteria, as for `replay --match`.",
               "Header to ignore when matching (with --replay-matched; repeatable).")
def record(
    cassette: Path | None,
    cassette_option: Path | None,
    reverse: str | None,
    listen_host: str,
    listen_port: int,
    confdir: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    redact_header: tuple[str, ...],
    redact_query: tuple[str, ...],
    redact_json: tuple[str, ...],
    redact_value: tuple[str, ...],
    redact_env: tuple[str, ...],
    ssl_insecure: bool,
    replay_matched: bool,
    match: str | None,
    ignore_json: tuple[str, ...],
    ignore_query: tuple[str, ...],
    ignore_header: tuple[str, ...],
) -> None:
    """Run mitmproxy and record every interaction into CASSETTE until Ctrl-C.

    The first line printed is the URL clients use: the proxy URL (set HTTPS_PROXY and trust
    the CA printed below) or, with --reverse, the base URL replacing the upstream's. Then
    one line per recorded interaction on stderr, and a summary when it stops.
    """
    ctx = click.get_current_context()
    check_pairings(ctx, PAIRINGS)
    if replay_matched:
        check_ignores(ctx)
    if cassette is None and cassette_option is None:
        raise click.UsageError("Missing argument 'CASSETTE'.", ctx)
    if cassette is not None and cassette_option is not None:
        raise click.UsageError("the cassette is given twice (CASSETTE and --cassette): "
                               "give it once", ctx)
    cassette = cassette or cassette_option
    assert cassette is not None
    if replay_matched and not isinstance(cassette, Path):
        raise click.UsageError("--replay-matched needs a cassette file, not a store URL", ctx)
    from sse_recorder.mitm import missing

    lacking = missing()
    if lacking is not None:
        _fail(needs_mitmproxy("recording", lacking))
    from sse_recorder.record.redact import RedactionRules
    from sse_recorder.record.session import RecorderConfig, RecordingSession
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.routes import RouteFilter

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        if reverse:
            click.echo(f"reverse proxy to {reverse}: point clients' base URL at {listening.url}")
        else:
            click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        click.echo(f"recording into {cassette}; Ctrl-C to stop", err=True)
        sys.stdout.flush()

    tally = Tally(cassette)

    async def go() -> int:
        rules = RedactionRules.with_extra(redact_header, redact_query, redact_json,
                                          secret_values(redact_value, redact_env))
        routes = RouteFilter.parse(include, exclude)  # bad options fail before the writer
        matching = (MatchConfig.parse(match, ignore_json, ignore_query, ignore_header)
                    if replay_matched else None)
        session = RecordingSession(str(cassette), RecorderConfig(redaction=rules,
                                                                 on_recorded=tally.add))
        if not replay_matched:  # which reads the cassette before the writer opens it
            await session.begin_start()  # the writer process boots on the other core...
        try:  # ...while this one imports mitmproxy
            from sse_recorder.mitm.runner import ListenFailed, ProxySettings
            from sse_recorder.mitm.runner import record as run_proxy
        except ImportError as exc:
            await session.close()
            raise SSERecorderError(needs_mitmproxy("recording", exc)) from None
        settings = ProxySettings(reverse, listen_host, listen_port, confdir, ssl_insecure)
        try:
            return await run_proxy(cassette, session, settings, ready, routes, matching,
                                   tally.upstream_error)
        except ListenFailed as exc:
            raise SSERecorderError(cannot_listen(listen_host, listen_port, exc.error)) from None

    status = _run(go())
    click.echo(tally.summary(), err=True)
    # The cassette is closed and every line written: skip the interpreter's teardown, where
    # one of the proxy's extension modules segfaulted in about 1 of 5 loaded runs (no Python
    # frame; seen with mitmproxy 12.3, SQLAlchemy 2.1, greenlet 3.5), turning a complete
    # recording into exit status -11.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


SECRET_OPTIONS = {"values": "--redact-value", "env": "--redact-env"}


def secret_values(values: tuple[str, ...], env_names: tuple[str, ...]) -> list[str]:
    """--redact-value and the values of --redact-env variables; an empty one is an error."""
    from sse_recorder.record import redact

    try:
        return redact.secret_values(values, env_names)
    except redact.SecretOptionError as exc:
        _fail(f"{SECRET_OPTIONS[exc.option]}: {exc}")


PAIRINGS = tuple(
    Pairing(option, "replay_matched", needs=True,
            why="it says how requests are matched against the cassette's")
    for option in ("match", "ignore_json", "ignore_query", "ignore_header")
)

# What an upstream error text means, and what to do (the first match is shown).
UPSTREAM_HINTS = (
    ("certificate", "the upstream's TLS certificate is not trusted: --ssl-insecure skips the "
                    "check"),
    ("connect call failed", "nothing answers there: is the upstream running?"),
    ("connection refused", "nothing answers there: is the upstream running?"),
    ("name or service not known", "the upstream's host name does not resolve"),
)


def reverse_target(value: str | None) -> str | None:
    """The --reverse URL, checked: an upstream without its scheme would be spoken to in TLS
    (mitmproxy's default), so a plain HTTP one hangs without a word."""
    if value is None:
        return None
    if "://" not in value:
        host = urlsplit(f"//{value}").hostname or ""
        scheme = "http" if _local(host) else "https"
        raise click.BadParameter(f"{value} has no scheme: did you mean {scheme}://{value}?")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise click.BadParameter(f"{value}: the recorder speaks http:// and https://, "
                                 f"not {parts.scheme}://")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise click.BadParameter(f"{value}: the port is not a number from 0 to 65535") from None
    base = f"{parts.scheme.lower()}://{parts.netloc}"
    if not parts.hostname:
        raise click.BadParameter(f"{value} has no host: e.g. http://127.0.0.1:8080")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise click.BadParameter(f"{value}: reverse mode forwards each request's own path, so "
                                 f"the URL takes none: did you mean {base}?")
    return base


def _local(host: str) -> bool:
    """Whether a host is likely a plain-HTTP development server (suggest http://)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


class Tally:
    """Prints each recorded interaction as the recorder commits it, each upstream that
    could not be reached before any request, and the summary."""

    def __init__(self, cassette: Path) -> None:
        from sse_recorder.replay.records import BackgroundLog

        self.log = BackgroundLog()  # the proxy's loop never waits for stderr
        self.cassette = cassette
        self.existed = not isinstance(cassette, Path) or cassette.exists()  # a store: kept
        self.outcomes: Counter[str] = Counter()
        self.unanswered = 0  # interactions without a response
        self.unreached = 0  # connections that failed before any request

    def add(self, item: Recorded) -> None:
        self.outcomes[item.outcome.value] += 1
        self.unanswered += item.status is None
        self.log(recorded_line(item))

    def upstream_error(self, address: str, error: str) -> None:
        self.unreached += 1
        self.log(f"cannot reach the upstream {address}: {error}{_hint(error)}")

    def summary(self) -> str:
        """The last line, once every line before it is written."""
        self.log.close()
        total = sum(self.outcomes.values())
        if total:
            endings = ", ".join(f"{n} {outcome}" for outcome, n in self.outcomes.most_common())
            line = f"recorded {count(total, 'interaction')} into {self.cassette}: {endings}"
        elif self.existed:
            line = f"recorded nothing new into {self.cassette}"
        elif self.cassette.exists():
            line = f"recorded nothing into {self.cassette}"
        else:
            line = f"recorded nothing (no cassette written at {self.cassette})"
        if self.unanswered:
            line += f"; {self.unanswered} without a response"
        if self.unreached:
            line += f"; the upstream could not be reached {count(self.unreached, 'time')}"
        return line


def _hint(error: str) -> str:
    """What an upstream error likely means, in parentheses ('' if nothing is known)."""
    found = next((hint for key, hint in UPSTREAM_HINTS if key in error.lower()), None)
    return f" ({found})" if found else ""


def recorded_line(item: Recorded) -> str:
    """`#3 POST http://host/v1/chat -> 200, 12 events in 13 chunks (2.1 kB), 1.23 s, clean`,
    with the upstream's error and what it likely means."""
    if item.status is None:
        answer = "no response"
    else:
        events = f"{count(item.events, 'event')} in " if item.events else ""
        answer = f"{item.status}, {events}{count(item.chunks, 'chunk')} ({size(item.body_size)})"
    duration = "-" if item.duration_ns is None else seconds(item.duration_ns / 1e9)
    line = f"#{item.id} {item.method} {item.url} -> {answer}, {duration}, ended {item.outcome}"
    if item.error:
        line += f": {item.error}{_hint(item.error)}"
    return line

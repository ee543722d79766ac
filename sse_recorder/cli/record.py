"""`sse-recorder record`: mitmproxy in front of an upstream, recording into a cassette."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sse_recorder.cli.app import _fail, _run, main


@main.command()
@click.option("--cassette", "cassette", required=True, type=click.Path(path_type=Path),
              help="Cassette to record into: created, or appended to if it is one.")
@click.option("--upstream", metavar="URL",
              help="Reverse-proxy mode towards URL (clients change only their base URL).")
@click.option("--listen-host", default="127.0.0.1", show_default=True)
@click.option("--listen-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--confdir", type=click.Path(path_type=Path),
              default=Path("~/.mitmproxy").expanduser(), show_default=True,
              help="mitmproxy configuration directory (holds its CA).")
@click.option("--include", multiple=True, metavar="ROUTE",
              help="Record only '[METHOD ]host/path-glob' routes (repeatable).")
@click.option("--exclude", multiple=True, metavar="ROUTE", help="Never record these routes.")
@click.option("--redact-header", multiple=True, metavar="NAME",
              help="Extra header to redact (credential headers always are).")
@click.option("--redact-query", multiple=True, metavar="NAME",
              help="Extra query parameter to redact.")
@click.option("--redact-json", multiple=True, metavar="FIELD",
              help="Extra JSON field to redact in bodies and SSE data.")
@click.option("--ssl-insecure", is_flag=True, help="Do not verify upstream TLS certificates.")
@click.option("--replay-matched", is_flag=True,
              help="Answer requests the cassette already holds from it; record only new ones.")
@click.option("--match", "match", metavar="LIST",
              help="With --replay-matched: matching criteria, as for `replay --match`.")
def record(
    cassette: Path,
    upstream: str | None,
    listen_host: str,
    listen_port: int,
    confdir: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    redact_header: tuple[str, ...],
    redact_query: tuple[str, ...],
    redact_json: tuple[str, ...],
    ssl_insecure: bool,
    replay_matched: bool,
    match: str | None,
) -> None:
    """Run mitmproxy and record every interaction into CASSETTE until Ctrl-C.

    The first line printed is the URL clients use: the proxy URL (set HTTPS_PROXY and trust
    the CA printed below) or, with --upstream, the base URL replacing the upstream's.
    """
    try:
        from sse_recorder.mitm.runner import Listening, ProxySettings
        from sse_recorder.mitm.runner import record as run_proxy
    except ImportError as exc:
        _fail(f"recording needs mitmproxy ({exc.name} is missing): "
              "install 'sse-recorder[record]', e.g. pipx install 'sse-recorder[record]'")
    from sse_recorder.record.redact import RedactionRules
    from sse_recorder.record.session import RecorderConfig
    from sse_recorder.replay.matching import MatchConfig
    from sse_recorder.routes import RouteFilter

    def ready(listening: Listening) -> None:
        click.echo(listening.url)
        if upstream:
            click.echo(f"reverse proxy to {upstream}: point clients' base URL at {listening.url}")
        else:
            click.echo(f"set HTTPS_PROXY={listening.url} HTTP_PROXY={listening.url}")
        click.echo(f"mitmproxy CA certificate to trust: {listening.ca_cert}")
        click.echo(f"recording into {cassette}; Ctrl-C to stop", err=True)
        sys.stdout.flush()

    async def go() -> int:
        settings = ProxySettings(upstream, listen_host, listen_port, confdir, ssl_insecure)
        rules = RedactionRules.with_extra(redact_header, redact_query, redact_json)
        return await run_proxy(
            cassette, settings, ready, RouteFilter.parse(include, exclude),
            RecorderConfig(redaction=rules),
            MatchConfig.parse(match) if replay_matched else None,
        )

    sys.exit(_run(go()))

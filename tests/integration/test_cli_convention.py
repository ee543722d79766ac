"""The CLI convention, checked over every command click knows (`main.commands`).

- Same names for the same things: `--listen-host/--listen-port` wherever something listens
  (the older `--host/--port` parse but stay out of help), the cassette as a `CASSETTE`
  argument, `--json` as a flag, one `--confdir`; every option documented, kebab-case.
- Every command's `--help` renders.
- Every documented error path, run as a real process: exactly one line on stderr, naming
  the cause, exit status 2, no traceback, and no file left behind.

A "replay-only install" is this venv with a `mitmproxy` package on PYTHONPATH that cannot
be imported, as in an install without the `record` extra.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from sse_recorder.cli import main
from sse_recorder.cli.app import AliasedOption
from tests.helpers import SSE_RECORDER, RecordDemo

pytestmark = pytest.mark.integration

LISTENERS = {"record", "replay", "demo-upstream"}
ON_A_CASSETTE = {"record", "replay", "ls", "show", "export", "report"}
WITH_JSON = {"ls", "show", "diff"}
# A second listener of its own, named for what it serves (as mitmproxy's --web-host/--web-port).
SECOND_LISTENERS = {"replay": {"control_host": ["--control-host"],
                               "control_port": ["--control-port"]}}
ALIASES = {  # older spellings that must keep parsing, out of sight
    ("record", "reverse"): ("--upstream",),
    ("record", "listen_host"): ("--host",), ("record", "listen_port"): ("--port",),
    ("replay", "listen_host"): ("--host",), ("replay", "listen_port"): ("--port",),
    ("demo-upstream", "listen_host"): ("--host",), ("demo-upstream", "listen_port"): ("--port",),
}


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


def documented(option: click.Option) -> list[str]:
    return option.documented if isinstance(option, AliasedOption) else option.opts


def test_every_command_is_listed() -> None:
    assert set(main.commands) == {"record", "replay", "ls", "show", "faults", "demo",
                                  "demo-upstream", "addon-path", "copy", "diff", "experiment",
                                  "export", "import", "report"}


@pytest.mark.parametrize("name", sorted(main.commands))
def test_options_follow_the_convention(name: str) -> None:
    command = main.commands[name]
    found = options(command)
    for option in found.values():
        if option.hidden:
            continue
        assert option.help, f"{name} {option.opts} has no help"
        # -o: the output file, as in curl and every compiler
        assert all(re.fullmatch(r"--[a-z][a-z0-9]*(-[a-z0-9]+)*|-h|-o", o) for o in option.opts)
    # listening: mitmproxy's names, the old ones as hidden aliases, nothing else
    listen = {n: documented(o) for n, o in found.items() if "host" in n or "port" in n}
    if name in LISTENERS:
        assert listen == {"listen_host": ["--listen-host"], "listen_port": ["--listen-port"],
                          **SECOND_LISTENERS.get(name, {})}
        assert found["listen_host"].default == "127.0.0.1" and found["listen_port"].default == 0
    else:
        assert listen == {}
    for (command_name, param), aliases in ALIASES.items():
        if command_name == name:
            option = found[param]
            assert isinstance(option, AliasedOption) and option.aliases == aliases
    assert not any(isinstance(o, AliasedOption) and o.aliases and (name, n) not in ALIASES
                   for n, o in found.items())
    # the cassette: a CASSETTE argument, first
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if name in ON_A_CASSETTE:
        assert arguments[0].name == "cassette"
        assert arguments[0].make_metavar(click.Context(command)) in ("CASSETTE", "[CASSETTE]")
    else:
        assert "cassette" not in {p.name for p in command.params}
    # --json: a flag, where the output is a document
    json_options = {n: o for n, o in found.items() if "--json" in o.opts}
    assert set(json_options) == ({"as_json"} if name in WITH_JSON else set())
    assert all(o.is_flag for o in json_options.values())
    # --confdir: one meaning, one default
    if "confdir" in found:
        confdir = found["confdir"]
        assert confdir.default == Path("~/.mitmproxy").expanduser()
        assert "mitmproxy's configuration directory" in (confdir.help or "")


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_renders_without_hidden_spellings(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {name} ")
    text = " ".join(result.output.split()).replace("(Formerly --upstream.)", "")
    for spelling in ("--host", "--port", "--upstream", "--cassette"):
        assert not re.search(rf"(?<![\w-]){spelling}(?![\w-])", text), spelling
    if name in LISTENERS:
        assert "--listen-host" in result.output and "--listen-port" in result.output


def test_record_help_names_reverse_mode_as_mitmproxy_does() -> None:
    output = CliRunner().invoke(main, ["record", "--help"]).output
    assert "--reverse URL" in output and "--mode reverse:URL" in output
    assert "Formerly --upstream" in " ".join(output.split())


def test_json_documents_are_described_apart() -> None:
    ls_help = CliRunner().invoke(main, ["ls", "--help"]).output
    show_help = CliRunner().invoke(main, ["show", "--help"]).output
    assert '"duration_ms"' in ls_help and '"started_at"' in ls_help and '"error"' in ls_help
    assert '"chunks": [{"seq"' in show_help and '"request"' in show_help
    assert options(main.commands["ls"])["as_json"].help != (
        options(main.commands["show"])["as_json"].help)


# -- every documented error path: one line, exit 2 ----------------------------------------


@dataclass(frozen=True)
class Failure:
    argv: tuple[str, ...]  # {cassette} {busy} {tmp} {file} {conf} are filled in
    message: str  # a fragment of the one line, after filling in too
    replay_only: bool = False  # run as an install without mitmproxy
    leaves: tuple[str, ...] = ()  # what may be left in {tmp} (the demo's logs)


FAILURES = {
    # usage errors, one line instead of click's four
    "unknown-command": Failure(("frobnicate",), "No such command 'frobnicate'. (see "
                                                "sse-recorder --help)"),
    "unknown-option": Failure(("replay", "{cassette}", "--zzz"),
                              "--zzz'. (see sse-recorder replay --help)"),
    "misspelt-option": Failure(("replay", "{cassette}", "--listen-prot", "0"),
                               "'--listen-port'?) (see sse-recorder replay --help)"),
    "no-cassette": Failure(("record",), "Missing argument 'CASSETTE'. (see sse-recorder record"),
    "cassette-twice": Failure(("record", "{tmp}/a.sqlite", "--cassette", "{tmp}/b.sqlite"),
                              "the cassette is given twice"),
    "bad-port": Failure(("record", "{tmp}/new.sqlite", "--listen-port", "70000"),
                        "Invalid value for '--listen-port': 70000 is not in the range"),
    "bad-id": Failure(("show", "{cassette}", "abc"), "'abc' is not a valid integer"),
    "addon-path-choice": Failure(("addon-path", "proxy"), "'proxy' is not one of 'record', "
                                                         "'replay'"),
    # reverse URLs, with their scheme
    "reverse-no-scheme": Failure(("record", "{tmp}/new.sqlite", "--reverse", "127.0.0.1:8080"),
                                 "127.0.0.1:8080 has no scheme: did you mean "
                                 "http://127.0.0.1:8080?"),
    "upstream-alias-no-scheme": Failure(
        ("record", "{tmp}/new.sqlite", "--upstream", "localhost:9"),
        "Invalid value for '--reverse': localhost:9 has no scheme: did you mean "
        "http://localhost:9?"),
    "upstream-no-scheme-old-spellings": Failure(
        ("record", "--cassette", "{tmp}/new.sqlite", "--upstream", "127.0.0.1:9",
         "--confdir", "{conf}"), "did you mean http://127.0.0.1:9?"),
    "reverse-public-no-scheme": Failure(
        ("record", "{tmp}/new.sqlite", "--reverse", "api.openai.com"),
        "did you mean https://api.openai.com?"),
    "reverse-ftp": Failure(("record", "{tmp}/new.sqlite", "--reverse", "ftp://x"),
                           "ftp://x: the recorder speaks http:// and https://, not ftp://"),
    "reverse-path": Failure(("record", "{tmp}/new.sqlite", "--reverse",
                             "http://127.0.0.1:9/v1"), "did you mean http://127.0.0.1:9?"),
    # options that would do nothing
    "instant-speed": Failure(("replay", "{cassette}", "--instant", "--speed", "10"),
                             "--speed 10 does nothing with --instant"),
    "instant-max-gap": Failure(("replay", "{cassette}", "--max-gap", "1", "--instant"),
                               "--max-gap 1 does nothing with --instant"),
    "confdir-without-proxy": Failure(("replay", "{cassette}", "--confdir", "{tmp}"),
                                     "--confdir {tmp} needs --proxy"),
    "loop-with-proxy": Failure(("replay", "{cassette}", "--proxy", "--loop", "asyncio"),
                               "--loop asyncio does nothing with --proxy"),
    "match-without-replay-matched": Failure(("record", "{tmp}/new.sqlite", "--match", "path"),
                                            "--match path needs --replay-matched"),
    "ignore-without-replay-matched": Failure(
        ("record", "{tmp}/new.sqlite", "--ignore-query", "t"),
        "--ignore-query t needs --replay-matched"),
    "ignore-header-without-headers": Failure(
        ("replay", "{cassette}", "--ignore-header", "X-Foo"),
        "--ignore-header X-Foo needs headers in --match: the default --match "
        "method,path,query,body leaves headers out"),
    "ignore-json-without-body": Failure(
        ("replay", "{cassette}", "--ignore-json", "model", "--match", "method,path"),
        "--ignore-json model needs body in --match"),
    "diff-ignore-query-without-query": Failure(
        ("diff", "{cassette}", "{cassette}", "--match", "path", "--ignore-query", "page"),
        "--ignore-query page needs query in --match"),
    # listening
    "record-port-in-use": Failure(("record", "{tmp}/new.sqlite", "--listen-port", "{busy}",
                                   "--confdir", "{conf}"),
                                  "cannot listen on 127.0.0.1:{busy}: address already in use: "
                                  "something else listens there"),
    "record-port-in-use-old-spellings": Failure(
        ("record", "--cassette", "{tmp}/new.sqlite", "--listen-port", "{busy}",
         "--confdir", "{conf}"),
        "cannot listen on 127.0.0.1:{busy}: address already in use"),
    "record-bad-host": Failure(("record", "{tmp}/new.sqlite", "--listen-host", "192.0.2.1",
                                "--confdir", "{conf}"),
                               "cannot listen on 192.0.2.1:0: cannot assign requested address"),
    "replay-port-in-use": Failure(("replay", "{cassette}", "--listen-port", "{busy}"),
                                  "cannot listen on 127.0.0.1:{busy}: address already in use"),
    "replay-port-alias": Failure(("replay", "{cassette}", "--port", "{busy}"),
                                 "cannot listen on 127.0.0.1:{busy}: address already in use"),
    "replay-bad-host": Failure(("replay", "{cassette}", "--listen-host", "192.0.2.1"),
                               "cannot listen on 192.0.2.1:0: cannot assign requested address"),
    "proxy-port-in-use": Failure(("replay", "{cassette}", "--proxy", "--listen-port", "{busy}",
                                  "--confdir", "{conf}"),
                                 "cannot listen on 127.0.0.1:{busy}: address already in use"),
    "proxy-bad-host": Failure(("replay", "{cassette}", "--proxy", "--listen-host", "192.0.2.1",
                               "--confdir", "{conf}"),
                              "cannot listen on 192.0.2.1:0: cannot assign requested address"),
    "upstream-port-in-use": Failure(("demo-upstream", "--listen-port", "{busy}"),
                                    "cannot listen on 127.0.0.1:{busy}: address already in use"),
    # files
    "fault-log-missing-dir": Failure(
        ("replay", "{cassette}", "--fault-log", "{tmp}/missing/x.jsonl"),
        "cannot write the fault log {tmp}/missing/x.jsonl: No such file or directory"),
    "fault-log-and-port-in-use": Failure(
        ("replay", "{cassette}", "--fault-log", "{tmp}/x.jsonl", "--listen-port", "{busy}"),
        "address already in use"),
    "ls-missing": Failure(("ls", "{tmp}/missing.sqlite"), "missing.sqlite: no such cassette"),
    "show-missing-id": Failure(("show", "{cassette}", "99"), "no interaction 99"),
    "record-into-notes": Failure(("record", "{file}", "--confdir", "{conf}"), "{file}: not"),
    "demo-workdir-is-a-file": Failure(("demo", "--workdir", "{file}"), "is a file"),
    # a replay-only install
    "record-without-mitmproxy": Failure(("record", "{tmp}/new.sqlite", "--confdir", "{conf}"),
                                        "recording needs mitmproxy, which this install lacks",
                                        replay_only=True),
    "proxy-without-mitmproxy": Failure(("replay", "{cassette}", "--proxy", "--confdir", "{conf}"),
                                       "--proxy needs mitmproxy, which this install lacks",
                                       replay_only=True),
    "demo-without-mitmproxy": Failure(("demo", "--workdir", "{tmp}/demo"),
                                      "install 'sse-recorder[record]'",
                                      replay_only=True, leaves=("demo",)),
}


@pytest.fixture(scope="module")
def cassette(record_demo: RecordDemo) -> Path:
    def traffic(url: str) -> None:
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 200

    return record_demo("cli-convention", traffic)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def replay_only_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    shadow = tmp_path_factory.mktemp("no-mitmproxy") / "mitmproxy"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mitmproxy'\", name='mitmproxy')\n")
    return {**os.environ, "PYTHONPATH": str(shadow.parent)}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_error_is_one_line_and_exit_2(
    case: Failure, cassette: Path, busy_port: int, tmp_path: Path, mitm_confdir: Path,
    replay_only_env: dict[str, str],
) -> None:
    notes = tmp_path / "notes.sqlite"
    notes.write_bytes(b"my notes, not a cassette\n" * 50)
    fill = {"cassette": str(cassette), "busy": str(busy_port), "tmp": str(tmp_path),
            "file": str(notes), "conf": str(mitm_confdir)}
    before = snapshot(tmp_path)
    done = subprocess.run([SSE_RECORDER, *(arg.format(**fill) for arg in case.argv)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=replay_only_env if case.replay_only else None)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sse-recorder: ")
    assert case.message.format(**fill) in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not re.search(r"'--(host|port|upstream|cassette)'", lines[0])  # aliases stay hidden
    after = {name: stat for name, stat in snapshot(tmp_path).items()
             if name.split("/")[0] not in case.leaves}
    assert after == before  # no partial file left, nothing touched


def test_no_command_is_the_help_and_a_usage_error_one_line() -> None:
    """Bare `sse-recorder` asks for help: the help `--help` prints, on stdout, exit 0 (not
    click 8.2's usage error, which the one-line form would flatten into one long line)."""
    bare = subprocess.run([SSE_RECORDER], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    asked = subprocess.run([SSE_RECORDER, "--help"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert (bare.returncode, bare.stderr) == (0, "")
    assert bare.stdout == asked.stdout
    assert bare.stdout.startswith("Usage: sse-recorder [OPTIONS] COMMAND [ARGS]...\n")
    assert "\nCommands:\n" in bare.stdout
    wrong = subprocess.run([SSE_RECORDER, "--zzz"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == ("sse-recorder: No such option '--zzz'. "
                            "(see sse-recorder --help)\n")


def test_the_older_spellings_still_work(tmp_path: Path, cassette: Path) -> None:
    """`--cassette`, `--upstream` and `--host/--port` as the README had them."""
    from tests.helpers import start

    upstream = start([SSE_RECORDER, "demo-upstream", "--host", "127.0.0.1", "--port", "0"],
                     tmp_path / "upstream.txt")
    replayer = start([SSE_RECORDER, "replay", str(cassette), "--host", "127.0.0.1",
                      "--port", "0", "--instant"], tmp_path / "replay.txt")
    recorder = start([SSE_RECORDER, "record", "--cassette", str(tmp_path / "old.sqlite"),
                      "--upstream", upstream.url, "--listen-port", "0",
                      "--confdir", str(tmp_path / "conf")], tmp_path / "record.txt")
    try:
        assert httpx.get(replayer.url + "/v1/models", timeout=10).status_code == 200
        assert httpx.get(recorder.url + "/v1/models", timeout=10).status_code == 200
    finally:
        assert recorder.stop() == 0, recorder.stderr()
        replayer.stop()
        upstream.stop()
    assert (tmp_path / "old.sqlite").exists()

"""Command lines the CLI refuses or explains before doing anything: ignore options that
`--match` gives nothing to ignore from, and the `--json` schemas in `ls` and `show --help`.

In process (click's CliRunner): these are option checks, made before any cassette is
opened; the real-process side of the convention is tests/integration/test_cli_convention.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sse_recorder.cli import main
from sse_recorder.replay.matching import MatchConfig
from sse_recorder.store.schema import FORMAT_VERSION
from tests.helpers import REPO

# the cassette is never opened: the command line is refused first
IDLE_IGNORES = {
    "header-default-match": (
        ("replay", "{cassette}", "--ignore-header", "X-Foo"),
        "--ignore-header X-Foo needs headers in --match: the default --match "
        "method,path,query,body leaves headers out"),
    "json-body-not-matched": (
        ("replay", "{cassette}", "--ignore-json", "foo", "--match", "method,path"),
        "--ignore-json foo needs body in --match: --match method,path leaves body out"),
    "query-not-matched": (
        ("replay", "{cassette}", "--match", "method,path,body", "--ignore-query", "page"),
        "--ignore-query page needs query in --match: --match method,path,body leaves query "
        "out"),
    "header-not-named": (
        ("replay", "{cassette}", "--match", "path,header:Authorization",
         "--ignore-header", "Authorization", "--ignore-header", "X-Foo"),
        "--ignore-header X-Foo needs headers in --match: --match path,header:Authorization "
        "compares only the headers it names"),
    "diff-json": (
        ("diff", "{cassette}", "{cassette}", "--match", "method,path", "--ignore-json", "foo"),
        "--ignore-json foo needs body in --match: --match method,path leaves body out"),
    "diff-query": (
        ("diff", "{cassette}", "{cassette}", "--ignore-query", "page", "--match", "path"),
        "--ignore-query page needs query in --match: --match path leaves query out"),
}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), prog_name="sse-recorder")
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("argv, message", IDLE_IGNORES.values(), ids=IDLE_IGNORES.keys())
def test_an_ignore_option_match_does_not_compare_is_refused_in_one_line(
    argv: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    cassette = tmp_path / "never-opened.sqlite"
    status, stdout, stderr = run(*(a.format(cassette=cassette) for a in argv))
    assert (status, stdout) == (2, "")
    assert stderr == f"sse-recorder: {message} (see sse-recorder {argv[0]} --help)\n"
    assert not cassette.exists()


def test_idle_names_are_those_no_criterion_compares() -> None:
    def idle(match: str | None, ignore: str, names: list[str]) -> frozenset[str]:
        return MatchConfig.parse(match, **{ignore: names}).idle(ignore)

    assert idle(None, "ignore_json", ["model"]) == frozenset()  # body compared by default
    assert idle("method,path", "ignore_json", ["model"]) == {"model"}
    assert idle(None, "ignore_query", ["Page"]) == frozenset()
    assert idle("path,body", "ignore_query", ["Page"]) == {"page"}
    assert idle(None, "ignore_headers", ["X-Foo"]) == {"x-foo"}
    assert idle("headers", "ignore_headers", ["X-Foo"]) == frozenset()
    assert idle("header:authorization", "ignore_headers", ["Authorization", "X-Foo"]) == {
        "x-foo"}


def test_diff_takes_ignore_header_without_headers_matched(tmp_path: Path) -> None:
    """diff's --ignore-header also leaves a response header out of the findings, so it
    counts whatever --match says; its --ignore-json does not."""
    cassette = _imported(tmp_path)
    status, stdout, stderr = run("diff", str(cassette), str(cassette), "--match",
                                 "method,path", "--ignore-header", "x-foo")
    assert (status, stderr) == (0, ""), stdout
    status, _, stderr = run("diff", str(cassette), str(cassette), "--match", "method,path",
                            "--ignore-header", "x-foo", "--ignore-json", "model")
    assert status == 2 and "--ignore-json model needs body in --match" in stderr


@pytest.mark.parametrize("command", ["ls", "show"])
def test_the_json_schema_in_help_names_the_format_version_ls_prints(
    command: str, tmp_path: Path
) -> None:
    status, stdout, _ = run(command, "--help")
    assert status == 0
    shown = re.findall(r'"format_version": (\d+)', stdout)
    assert shown == [str(FORMAT_VERSION)]
    status, stdout, _ = run(command, "--json", str(_imported(tmp_path)))
    assert status == 0 and json.loads(stdout)["format_version"] == FORMAT_VERSION


def _imported(tmp_path: Path) -> Path:
    """A cassette written by this release: a sample `.sse` file imported."""
    cassette = tmp_path / "heartbeats.sqlite"
    status, stdout, stderr = run("import", str(REPO / "cassettes" / "heartbeats.sse"),
                                 "-o", str(cassette))
    assert status == 0, stdout + stderr
    return cassette

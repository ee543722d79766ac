"""`sse-recorder addon-path record|replay`: the `mitmdump -s` scripts from any install.

A pipx or wheel install has no checkout `addons/` directory; the scripts ship inside the
package and `addon-path` prints where. mitmdump runs them from a directory that is not
the checkout, as a user of such an install would.
"""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from pathlib import Path

import pytest

import sse_recorder
from sse_recorder.demo.upstream import ticks_writes
from sse_recorder.model import Outcome
from sse_recorder.wire.probe import probe
from tests.helpers import MITMDUMP, REPO, SSE_RECORDER
from tests.integration.support import load
from tests.integration.test_mitmdump_addon import launch

pytestmark = pytest.mark.integration

PACKAGE = Path(sse_recorder.__file__).resolve().parent


def addon_path(which: str) -> str:
    done = subprocess.run([SSE_RECORDER, "addon-path", which], capture_output=True, text=True,
                          timeout=30, cwd="/")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("which", "addon"), [("record", "Recorder"),
                                              ("replay", "CassetteReplay")])
def test_addon_path_prints_a_script_inside_the_package(which: str, addon: str) -> None:
    path = Path(addon_path(which))
    assert path.is_absolute() and path.is_file()
    assert path == PACKAGE / "mitm" / "scripts" / f"{which}.py"
    assert f"addons = [{addon}()]" in path.read_text()


def test_the_scripts_directory_is_shipped() -> None:
    """setuptools' `packages.find` ships a directory's .py files only if it is a package the
    include patterns name: so is every directory of the package, scripts included."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    assert PACKAGE / "mitm" / "scripts" in folders
    for folder in folders:
        dotted = ".".join(folder.relative_to(PACKAGE.parent).parts)
        assert (folder / "__init__.py").exists(), dotted
        assert any(fnmatch.fnmatch(dotted, pattern) for pattern in include), dotted


async def test_mitmdump_records_and_replays_with_the_printed_scripts(
    tmp_path: Path, mitm_confdir: Path, demo_upstream: str
) -> None:
    cassette = tmp_path / "session.sqlite"
    common = [MITMDUMP, "--listen-host", "127.0.0.1", "-p", "0", "--set",
              f"confdir={mitm_confdir}"]
    recorder = launch([*common, "-s", addon_path("record"), "--mode",
                       f"reverse:{demo_upstream}", "--set", f"sse_cassette={cassette}"],
                      tmp_path / "record.txt", cwd=tmp_path)
    target = "/ticks?n=5&interval_ms=5"
    recorded = await probe(recorder.url + target)
    assert recorder.stop() == 0, recorder.output()
    [(interaction, chunks, _)] = await load(cassette)
    assert interaction.outcome is Outcome.CLEAN
    assert [c.data for c in chunks] == ticks_writes(5) == [d for _, d in recorded.chunks]

    replayer = launch([*common, "-s", addon_path("replay"), "--set", f"sse_replay={cassette}",
                       "--set", "sse_replay_speed=instant"], tmp_path / "replay.txt",
                      cwd=tmp_path)
    try:
        replayed = await probe(f"http://api.example.invalid{target}", proxy=replayer.url)
    finally:
        assert replayer.stop() == 0, replayer.output()
    assert replayed.status == 200 and replayed.body == recorded.body

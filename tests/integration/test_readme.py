"""The README's walkthrough, run as written, in fresh venvs: a replay-only install and one
with the `record` extra.

The commands come from README.md itself: every fenced shell block right after a
`<!-- walkthrough: replay -->` or `<!-- walkthrough: record -->` comment, run by bash with
`-e` (a failing command fails the test) from a directory holding a copy of `examples/` (as
a clone does), with the fresh venv's `bin` first on PATH and HOME in tmp_path (mitmproxy's
CA goes there, not to the real home). The replay-only install runs the `replay` blocks; the
record install runs both. Only the installation differs from the README: `pip install
sse-recorder` would fetch the published release, so the harness installs this tree the same
way (`pip install <copy of the tree>`, with `[record]` for the second venv), from the
configured package index and pip's cache. Background jobs a block leaves running are
stopped with its process group.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sse_recorder.store.cassette import Cassette
from tests.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = REPO / "README.md"
MARKER = re.compile(r"^<!--\s*walkthrough:\s*(\w+)\s*-->\s*$")
FENCE = re.compile(r"^```(sh|bash|shell|console)?\s*$")
BLOCK_TIMEOUT = 120  # seconds for one block
INSTALL_TIMEOUT = 240  # seconds for `pip install` (mitmproxy and its dependencies)
# What each kind of block must show, whatever else the README puts in it.
EXPECTED = {
    "replay": ["Usage: sse-recorder", "/v1/chat/completions", "data: [DONE]"],
    "record": ["/ci/logs"],
}
INSTALLS = {"replay-only": ("", ["replay"]), "record-extra": ("[record]", ["replay", "record"])}


@dataclass(frozen=True)
class Block:
    kind: str
    line: int  # where it starts in README.md, for messages
    text: str


def walkthrough(readme: Path) -> list[Block]:
    """The marked shell blocks, in README order."""
    blocks: list[Block] = []
    lines = readme.read_text().splitlines()
    kind: str | None = None
    number = 0
    while number < len(lines):
        line = lines[number]
        if marker := MARKER.match(line):
            kind = marker.group(1)
        elif kind is not None and FENCE.match(line):
            end = number + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            blocks.append(Block(kind, number + 1, "\n".join(lines[number + 1:end]) + "\n"))
            kind, number = None, end
        elif kind is not None and line.strip():
            raise AssertionError(f"README.md:{number + 1}: a walkthrough marker must be "
                                 "followed by a fenced shell block")
        number += 1
    return blocks


def free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def source_copy(target: Path) -> Path:
    """This tree without its venvs, caches and build output, so building the package
    writes nothing into the repository."""
    ignored = shutil.ignore_patterns(".venv*", ".git", "__pycache__", "*.egg-info", "build",
                                     "dist", ".*_cache", ".hypothesis", "*.sqlite-wal",
                                     "*.sqlite-shm", "demo-out")
    shutil.copytree(REPO, target, ignore=ignored)
    return target


def install(tmp_path: Path, extra: str) -> Path:
    """A fresh venv with this tree installed (with `extra`); returns its bin directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = source_copy(tmp_path / "src")
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           f"{source}{extra}"], capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def run_block(block: Block, bin_dir: Path, cwd: Path, home: Path, log: Path) -> str:
    """Run one block with bash -e; its output (stdout and stderr, interleaved)."""
    path = [bin_dir, *(p for p in os.environ["PATH"].split(os.pathsep)
                       if p and Path(p).resolve() != Path(sys.executable).parent.resolve())]
    env = {**os.environ, "PATH": os.pathsep.join(map(str, path)), "HOME": str(home),
           "VIRTUAL_ENV": str(bin_dir.parent), "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block.text],
                                   cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = process.wait(BLOCK_TIMEOUT)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)  # what the block left in the background
            except ProcessLookupError:
                pass
            process.kill()
            process.wait()
    output = log.read_text(errors="replace")
    assert code == 0, (f"README.md:{block.line}: the {block.kind} block exited {code}:\n"
                       f"{block.text}\n--- output ---\n{output}")
    return output


def marked(kinds: list[str]) -> list[Block]:
    """The README's walkthrough blocks of these kinds; a failure if a kind has none."""
    blocks = [block for block in walkthrough(README) if block.kind in kinds]
    markers = ", ".join(f"<!-- walkthrough: {kind} -->" for kind in kinds)
    assert {block.kind for block in blocks} == set(kinds), (
        f"README.md must mark its walkthrough with {markers}, each right before a fenced "
        f"shell block; found {[block.kind for block in blocks]}")
    return blocks


def test_the_readme_marks_its_walkthrough() -> None:
    assert [block.kind for block in marked(list(EXPECTED))]


@pytest.mark.timeout(INSTALL_TIMEOUT + 3 * BLOCK_TIMEOUT)
@pytest.mark.parametrize("install_kind", list(INSTALLS))
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, install_kind: str) -> None:
    extra, kinds = INSTALLS[install_kind]
    blocks = marked(kinds)
    for port in sorted({int(p) for block in blocks
                        for p in re.findall(r"(?:port[ =]|127\.0\.0\.1:)(\d{2,5})\b",
                                            block.text)}):
        assert free(port), f"port {port}, which the README's walkthrough uses, is taken"
    bin_dir = install(tmp_path, extra)
    work, home = tmp_path / "clone", tmp_path / "home"
    shutil.copytree(REPO / "examples", work / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    home.mkdir()
    before = {p: p.read_bytes() for p in (work / "examples").rglob("*.sqlite")}
    for number, block in enumerate(blocks):
        output = run_block(block, bin_dir, work, home, tmp_path / f"block-{number}.txt")
        missing = [text for text in EXPECTED[block.kind] if text not in output]
        assert not missing, f"README.md:{block.line}: {missing} not in the output:\n{output}"
    assert {p: p.read_bytes() for p in (work / "examples").rglob("*.sqlite")} == before
    if "record" in kinds:
        recorded = [p for p in work.rglob("*.sqlite") if p not in before]
        assert recorded, "the record block left no new cassette"
        assert all(asyncio.run(interactions(p)) for p in recorded), recorded
    else:  # replay-only: recording says what to install, in one line
        done = subprocess.run([str(bin_dir / "sse-recorder"), "record", "x.sqlite",
                               "--reverse", "http://127.0.0.1:9"], cwd=work,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "sse-recorder[record]" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (work / "x.sqlite").exists()


async def interactions(path: Path) -> int:
    cassette = await Cassette.open(path)
    try:
        return len([i for i in await cassette.interactions() if i.response is not None])
    finally:
        await cassette.close()

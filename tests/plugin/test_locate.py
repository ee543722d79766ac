"""Which `sse-recorder` the plugin records with: the first whose Python has mitmproxy.

The scenario of the bug: a test venv (no mitmproxy) is activated, so its own `sse-recorder`
is first on PATH, while the recorder is installed with pipx or `uv tool`. Every candidate
here is a real executable script in tmp_path, run by a real interpreter: a venv made for
the test without mitmproxy, or this environment's Python (which has it). The lookup itself
runs in that mitmproxy-less venv's Python, as the plugin would in the user's test venv.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sse_recorder.testing import locate
from tests.helpers import REPO, start

pytestmark = pytest.mark.integration

RECORDER = f"#!{sys.executable}\nfrom sse_recorder.cli import main\nmain()\n"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv without mitmproxy (nor anything else), as a user's test venv would lack it,
    with its own `sse-recorder` script (what the core-only install puts there)."""
    venv = tmp_path_factory.mktemp("testvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    executable(venv / "bin" / "sse-recorder",
               f"#!{python}\nimport sys\nprint('core-only sse-recorder')\nsys.exit(2)\n")
    return venv


def find_in(venv: Path, tmp_path: Path, path: list[Path], **env: str) -> dict[str, str]:
    """`locate.find()` run by `venv`'s Python with PATH = `path` and HOME = tmp_path."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from sse_recorder.testing import locate
        try:
            found = locate.find(configured={env.pop("configured", None)!r})
        except locate.RecorderNotFound as exc:
            print(json.dumps({{"error": str(exc)}}))
        else:
            print(json.dumps({{"path": found.path, "source": found.source}}))
    """)
    environ = {"PATH": os.pathsep.join(map(str, path)), "HOME": str(tmp_path), **env}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_the_first_recorder_on_path_with_mitmproxy_wins_over_the_active_venvs(
    bare_venv: Path, tmp_path: Path
) -> None:
    wrapper = executable(tmp_path / "wrapper" / "sse-recorder",
                         "#!/bin/sh\nexec sse-recorder \"$@\"\n")  # cannot be asked: skipped
    real = executable(tmp_path / "tool" / "sse-recorder", RECORDER)
    later = executable(tmp_path / "later" / "sse-recorder", RECORDER)
    path = [bare_venv / "bin", wrapper.parent, real.parent, later.parent, Path("/usr/bin")]
    found = find_in(bare_venv, tmp_path, path)
    assert found == {"path": str(real), "source": "on PATH, the first with mitmproxy"}
    # and it really records: it starts mitmproxy, prints its URL, stops cleanly
    recording = start([found["path"], "record", "--cassette", str(tmp_path / "c.sqlite"),
                       "--upstream", "http://127.0.0.1:9", "--listen-port", "0",
                       "--confdir", str(tmp_path / "mitmproxy")], tmp_path / "recorder.txt")
    assert recording.url.startswith("http://127.0.0.1:")
    assert recording.stop() == 0, recording.stderr()


@pytest.mark.parametrize("tool", ["pipx default", "PIPX_HOME", "uv default", "UV_TOOL_DIR"])
def test_then_the_pipx_and_uv_tool_venvs(bare_venv: Path, tmp_path: Path, tool: str) -> None:
    bin_dir, env, source = {
        "pipx default": (tmp_path / ".local/pipx/venvs/sse-recorder/bin", {}, "pipx"),
        "PIPX_HOME": (tmp_path / "px/venvs/sse-recorder/bin", {"PIPX_HOME": str(tmp_path / "px")},
                      "pipx"),
        "uv default": (tmp_path / ".local/share/uv/tools/sse-recorder/bin", {}, "uv tool"),
        "UV_TOOL_DIR": (tmp_path / "uvt/sse-recorder/bin", {"UV_TOOL_DIR": str(tmp_path / "uvt")},
                        "uv tool"),
    }[tool]
    real = executable(bin_dir / "sse-recorder", RECORDER)
    found = find_in(bare_venv, tmp_path, [bare_venv / "bin", Path("/usr/bin")], **env)
    assert found == {"path": str(real), "source": f"{source}, the first with mitmproxy"}


def test_no_recorder_names_every_candidate_and_why(bare_venv: Path, tmp_path: Path) -> None:
    wrapper = executable(tmp_path / "wrapper" / "sse-recorder", "#!/bin/sh\nexit 2\n")
    found = find_in(bare_venv, tmp_path, [bare_venv / "bin", wrapper.parent])
    error = found["error"]
    assert error.startswith("no sse-recorder command that can record (mitmproxy importable): ")
    assert (f"{bare_venv}/bin/sse-recorder (beside {bare_venv}/bin/python): its Python cannot "
            "import mitmproxy") in error
    assert f"{wrapper} (on PATH): not a Python script" in error
    assert error.endswith("install the recorder with `pipx install 'sse-recorder[record]'` "
                          "(or `uv tool install 'sse-recorder[record]'`)")
    assert "\n" not in error


def test_a_configured_recorder_is_used_as_named_and_checked(
    bare_venv: Path, tmp_path: Path
) -> None:
    real = executable(tmp_path / "tool" / "sse-recorder", RECORDER)
    path = [bare_venv / "bin", real.parent]
    mine = executable(tmp_path / "mine" / "my-recorder", RECORDER)
    assert find_in(bare_venv, tmp_path, path, configured=str(mine)) == {
        "path": str(mine), "source": "sse_recorder_executable"}
    assert find_in(bare_venv, tmp_path, [*path, mine.parent], configured="my-recorder") == {
        "path": str(mine), "source": "sse_recorder_executable"}  # a name is looked up on PATH
    lacking = find_in(bare_venv, tmp_path, path,
                      configured=str(bare_venv / "bin" / "sse-recorder"))
    assert lacking["error"].startswith(f"sse_recorder_executable = {bare_venv}/bin/sse-recorder:"
                                       " its Python cannot import mitmproxy; install ")
    missing = find_in(bare_venv, tmp_path, path, configured=str(tmp_path / "nope"))
    assert missing == {"error": f"sse_recorder_executable = {tmp_path}/nope: no such executable"}


def test_the_interpreter_is_read_from_the_shebang_or_pips_trampoline(tmp_path: Path) -> None:
    long_python = "/opt/a path with spaces/bin/python3.12"
    cases = {
        f"#!{sys.executable}\n": [sys.executable],
        "#!/usr/bin/env -S python3 -u\n": ["python3"],
        f"#!/bin/sh\n'''exec' \"{long_python}\" \"$0\" \"$@\"\n' '''\n": [long_python],
        "#!/bin/sh\nexec other\n": None,  # a hand-written wrapper: cannot be asked
        "\x7fELF binary": None,
    }
    for number, (text, expected) in enumerate(cases.items()):
        assert locate.interpreter(executable(tmp_path / f"s{number}", text)) == expected, text
    assert locate.interpreter(tmp_path / "absent") is None

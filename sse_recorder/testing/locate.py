"""Which `sse-recorder` command can record: the first whose Python can import mitmproxy.

The plugin runs in the user's test environment, which usually holds the core without
mitmproxy, while the recorder is an isolated tool (pipx, uv tool): the first `sse-recorder`
on PATH is then the test venv's own and cannot record. So each candidate is asked, in the
order of `candidates()`, by running its script's interpreter (its shebang line) with a check
that fails fast without mitmproxy; the first that passes records. A configured command is
used as given unless its Python demonstrably lacks mitmproxy. Standard library only: the
demo uses this where pytest is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

NAME = "sse-recorder"
INSTALL = ("install the recorder with `pipx install 'sse-recorder[record]'` (or `uv tool "
           "install 'sse-recorder[record]'`)")
CHECK = 'import importlib.util, sys; sys.exit(importlib.util.find_spec("mitmproxy") is None)'
CHECK_TIMEOUT = 30.0  # seconds for a candidate's Python to answer
# pip writes this /bin/sh trampoline instead of a shebang when the interpreter's path is too
# long or has spaces: line 2 is `'''exec' "/path/to/python" "$0" "$@"`
TRAMPOLINE = re.compile(r"""^'''exec' (?:"([^"]+)"|(\S+)) "\$0" "\$@"$""")


class RecorderNotFound(RuntimeError):
    """No candidate can record (or the configured command does not exist or cannot)."""


@dataclass(frozen=True)
class Found:
    """The command chosen, and why (for the report header and error messages)."""

    path: str
    source: str

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


def interpreter(script: Path) -> list[str] | None:
    """The command line that runs `script`'s Python (its shebang, or pip's trampoline);
    None when `script` is not a Python script (a binary, a hand-written wrapper)."""
    try:
        with open(script, "rb") as file:
            head = file.read(4096).decode(errors="replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    try:
        command = shlex.split(head[0][2:])
    except ValueError:
        return None
    if command and Path(command[0]).name == "sh" and len(head) > 1:
        match = TRAMPOLINE.match(head[1])
        return [match.group(1) or match.group(2)] if match else None
    if command and Path(command[0]).name == "env":
        command = [arg for arg in command[1:] if not arg.startswith("-")]
    return command or None


def has_mitmproxy(script: Path) -> bool | None:
    """Whether `script`'s Python can import mitmproxy; None if that cannot be told."""
    command = interpreter(script)
    if command is None:
        return None
    if command == [sys.executable]:  # this very Python (paths compared unresolved: a venv's
        return importlib.util.find_spec("mitmproxy") is not None  # python is a symlink)
    try:
        done = subprocess.run([*command, "-c", CHECK], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(done.returncode)


def _tool_dirs(env: Mapping[str, str]) -> Iterator[tuple[Path, str]]:
    """Where pipx and `uv tool` put the tool's own venv, honouring their variables."""
    home = Path(env.get("HOME") or Path.home())
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    pipx_homes = ([Path(env["PIPX_HOME"])] if env.get("PIPX_HOME")
                  else [home / ".local" / "pipx", data / "pipx"])
    for pipx_home in pipx_homes:
        yield pipx_home / "venvs" / NAME / "bin", "pipx"
    uv_dir = Path(env["UV_TOOL_DIR"]) if env.get("UV_TOOL_DIR") else data / "uv" / "tools"
    yield uv_dir / NAME / "bin", "uv tool"


def candidates(env: Mapping[str, str] | None = None) -> Iterator[tuple[Path, str]]:
    """Every `sse-recorder` worth asking, in order, each once: this Python's own, then
    PATH's in PATH order, then the pipx and `uv tool` venvs."""
    env = os.environ if env is None else env
    seen: set[Path] = set()
    own = Path(sys.executable).parent / NAME
    places: list[tuple[Path, str]] = [(own, f"beside {sys.executable}")]
    for entry in env.get("PATH", "").split(os.pathsep):
        if entry:
            places.append((Path(entry) / NAME, "on PATH"))
    places += [(directory / NAME, source) for directory, source in _tool_dirs(env)]
    for path, source in places:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path, source


def find(
    needs_mitmproxy: bool = True,
    configured: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Found:
    """The command to run. RecorderNotFound names every candidate and why it was passed
    over, so the advice to install the recorder is never given to someone who has it."""
    if configured:
        return _configured(configured, needs_mitmproxy, env)
    tried: list[str] = []
    for path, source in candidates(env):
        if not needs_mitmproxy:
            return Found(str(path), source)
        verdict = has_mitmproxy(path)
        if verdict:
            reason = "the first with mitmproxy" if tried else "has mitmproxy"
            return Found(str(path), f"{source}, {reason}")
        tried.append(f"{path} ({source}): " + (
            "its Python cannot import mitmproxy" if verdict is False
            else "not a Python script whose interpreter could be asked"))
    where = "; ".join(tried) if tried else f"no {NAME} on PATH nor in the pipx/uv tool venvs"
    need = " that can record (mitmproxy importable)" if needs_mitmproxy else ""
    raise RecorderNotFound(f"no {NAME} command{need}: {where}; {INSTALL}")


def _configured(configured: str, needs_mitmproxy: bool, env: Mapping[str, str] | None) -> Found:
    """The command the user named (a path, or a name looked up on PATH), checked."""
    path = Path(configured).expanduser()
    if path.parent == Path("."):
        on_path = shutil.which(configured, path=(os.environ if env is None else env).get("PATH"))
        path = Path(on_path) if on_path else path
    source = "sse_recorder_executable"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RecorderNotFound(f"{source} = {configured}: no such executable")
    if needs_mitmproxy and has_mitmproxy(path) is False:
        raise RecorderNotFound(f"{source} = {configured}: its Python cannot import mitmproxy; "
                               f"{INSTALL}")
    return Found(str(path), source)

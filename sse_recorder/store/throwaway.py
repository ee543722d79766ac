"""A throwaway PostgreSQL server on 127.0.0.1, for the tests and the store benchmark.

Debian's `postgresql` package provides the binaries (`.ci/system-packages` installs it where
missing). PostgreSQL refuses to run as root, and CI runs as root: then initdb and the
server run as `nobody` (setpriv), from a fresh directory under /tmp that it owns. Password
authentication (scram-sha-256) for the superuser `sse`, a free port, no Unix socket, and
no fsync: the data is thrown away with the directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sse_recorder.errors import SSERecorderError

INSTALL = Path("/usr/lib/postgresql")


def binaries() -> Path:
    """The bin directory of the newest PostgreSQL major version installed."""
    found = sorted((p for p in INSTALL.glob("*/bin") if (p / "initdb").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise SSERecorderError(f"no PostgreSQL under {INSTALL}: run .ci/system-packages "
                               "(Debian's postgresql package)")
    return found[-1]


@contextmanager
def postgres_server(max_connections: int = 200) -> Iterator[str]:
    """Start a server; yields its URL (`postgresql+asyncpg://sse:PASSWORD@127.0.0.1:PORT/
    postgres`, no cassette named); stops it and removes its files on exit."""
    bindir = binaries()
    base = Path(tempfile.mkdtemp(prefix="sse-recorder-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups", "--"]
    password = secrets.token_urlsafe(12)
    (base / "pw").write_text(password)
    os.chmod(base / "pw", 0o644)
    data = base / "data"

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, cwd=base,
                              timeout=120)
        if done.returncode:
            raise SSERecorderError(f"{Path(args[0]).name} failed: "
                                   f"{(done.stderr or done.stdout).strip()[-500:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "sse", "--pwfile",
            str(base / "pw"), "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
            "--locale=C")
        with socket.socket() as probe:  # a free port (the server binds it a moment later)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
                    f"-c fsync=off -c full_page_writes=off -c max_connections={max_connections}")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", settings, "-l", str(base / "log"),
            "-w", "-t", "60", "start")
        try:
            yield f"postgresql+asyncpg://sse:{password}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)

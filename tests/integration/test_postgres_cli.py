"""The CLI on a PostgreSQL store: `copy` both ways, `ls` of a store, and the one-line
errors that never show the password."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sse_recorder.store import open_store
from tests.helpers import SSE_RECORDER
from tests.integration.support import load
from tests.integration.test_store_backends import record

pytestmark = pytest.mark.integration


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True, timeout=60,
                          env=env)


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *parts: str,
                           password: str = "") -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sse-recorder: "), done.stderr
    assert all(part in lines[0] for part in parts), (parts, lines[0])
    if password:
        assert password not in done.stderr + done.stdout


def password_of(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


@pytest.fixture
def cassette_file(tmp_path: Path) -> Path:
    """A SQLite cassette with three interactions (the last one never finalized)."""
    path = tmp_path / "source.sqlite"

    async def make() -> None:
        cassette = await open_store(path, record=True)
        try:
            await record(cassette, 1, [b"data: a\n\n", b"data: b\n\n"])
            await record(cassette, 2, [b"data: c\n\n"] * 700)  # more than a page
            await record(cassette, 3, [b"data: d\n\n"], end=False)
            await cassette.finish_recording()
        finally:
            await cassette.close()

    asyncio.run(make())
    return path


async def test_copy_file_to_store_to_file_keeps_everything(
    postgres_url: str, cassette_file: Path, tmp_path: Path
) -> None:
    name = f"c{uuid.uuid4().hex[:10]}"
    target = f"{postgres_url}?cassette={name}"
    to_store = run("copy", str(cassette_file), target)
    assert to_store.returncode == 0, to_store.stderr
    assert "copied 3 interactions" in to_store.stderr
    assert password_of(postgres_url) not in to_store.stderr
    back = tmp_path / "back.sqlite"
    done = run("copy", target, str(back))
    assert done.returncode == 0, done.stderr
    original, copied = await load(cassette_file), await load(back)
    assert [(r.interaction, r.chunks, r.events) for r in copied] == [
        (r.interaction, r.chunks, r.events) for r in original]
    listed = run("ls", postgres_url)
    assert listed.returncode == 0, listed.stderr
    assert f"{name}\t3 interactions" in listed.stdout.splitlines()
    # a filter, appending: ids are the destination's, in the order given
    again = run("copy", str(cassette_file), target, "2", "1")
    assert again.returncode == 0, again.stderr
    assert "#2 -> #4: 700 chunks" in again.stderr and "#1 -> #5: 2 chunks" in again.stderr
    # into itself under another spelling of the server: it was duplicated (an audit found)
    elsewhere = target.replace("@127.0.0.1:", "@localhost:")
    assert elsewhere != target
    itself = run("copy", target, elsewhere)
    assert_one_line_exit_2(itself, "is the source", password=password_of(postgres_url))
    assert f"{name}\t5 interactions" in run("ls", postgres_url).stdout.splitlines()


async def test_import_into_a_store_writes_a_new_cassette_there(
    postgres_url: str, tmp_path: Path
) -> None:
    """`import -o STORE-URL` goes to the store (it once wrote a file named after the URL);
    a name the store already holds is refused, as an existing file is."""
    source = tmp_path / "hand.sse"
    source.write_text("GET http://127.0.0.1/stream\n\nHTTP/1.1 200 OK\n"
                      "Content-Type: text/event-stream\n\n"
                      "data: one\n\n@wait 20ms\ndata: two\n\n")
    name = f"i{uuid.uuid4().hex[:10]}"
    target = f"{postgres_url}?cassette={name}"
    done = run("import", str(source), "-o", target)
    assert done.returncode == 0, done.stderr
    assert password_of(postgres_url) not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.sse"]  # nothing local
    assert list(Path.cwd().glob("postgresql*")) == []
    assert await stored_chunks(target) == [[b"data: one\n\n", b"data: two\n\n"]]
    again = run("import", str(source), "-o", target)
    assert_one_line_exit_2(again, "exists", password=password_of(postgres_url))
    assert len(await stored_chunks(target)) == 1
    refused = run("import", str(source), "-o", "mysql://u:secret@127.0.0.1/db?cassette=x")
    assert_one_line_exit_2(refused, "unsupported store URL scheme", password="secret")


async def stored_chunks(url: str) -> list[list[bytes]]:
    """Each interaction's chunk bytes, from a store's cassette."""
    async with await open_store(url) as cassette:
        return [[c.data async for c in cassette.chunks(i.id)]
                for i in await cassette.interactions()]


def test_errors_are_one_line_without_the_password(postgres_url: str, tmp_path: Path) -> None:
    password = password_of(postgres_url)
    wrong = postgres_url.replace(f":{password}@", ":not-the-password@")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = postgres_url.split("@")[0] + f"@127.0.0.1:{closed_port}/postgres"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    cases = [
        (("ls", f"{wrong}?cassette=x"), ("cannot connect", "password authentication failed"),
         "not-the-password"),
        (("ls", f"{unreachable}?cassette=x"), ("cannot connect", f"{closed_port}"), password),
        (("replay", postgres_url), ("which cassette?", "?cassette=NAME"), password),
        (("ls", f"{postgres_url}?cassette=nothing_here"), ("no such cassette",), password),
        (("ls", f"{postgres_url}?cassette=pg_x"), ("not a cassette name",), password),
        (("ls", "mysql://u:secret@127.0.0.1/db"), ("unsupported store URL scheme",), "secret"),
        (("ls", "postgresql://u:secret@127.0.0.1:99999999/db?cassette=x"), (), "secret"),
        (("copy", str(tmp_path / "missing.sqlite"), f"{postgres_url}?cassette=x"),
         ("no such cassette",), password),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:  # processes, each a second to start
        done = list(pool.map(lambda case: run(*case[0], env=env), cases))
    for (_, parts, secret), result in zip(cases, done, strict=True):
        assert_one_line_exit_2(result, *parts, password=secret)

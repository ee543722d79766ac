"""Store targets: paths stay paths, URLs name a cassette and never show their password;
schema versions through Alembic on SQLite files."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.errors import CassetteError
from sse_recorder.model import RecordedRequest
from sse_recorder.store import Location, locate, migrate, open_store
from sse_recorder.store.cassette import InteractionStart, WriteBatch
from tests.unit.test_cassette import as_v1


@pytest.mark.parametrize("target", ["c.sqlite", "dir/c.sqlite", "/abs/c", "c:/x", "a:b//c"])
def test_a_path_stays_a_path(target: str) -> None:
    assert locate(target) == Path(target)


def test_a_url_names_its_cassette_and_hides_the_password() -> None:
    found = locate("postgresql://me:s3cret@127.0.0.1:5433/corpus?cassette=vendor-a")
    assert isinstance(found, Location)
    assert found.name == "vendor-a" and found.url.drivername == "postgresql+asyncpg"
    assert found.password == "s3cret" and "s3cret" not in str(found) + repr(found)
    assert str(found) == "postgresql+asyncpg://me@127.0.0.1:5433/corpus?cassette=vendor-a"
    assert "cassette" not in found.url.query  # ours, not the driver's
    assert locate(found, "other").name == "other"
    assert locate("postgresql:///db?cassette=x&in_progress=true").in_progress  # type: ignore[union-attr]


@given(st.from_regex(r"[A-Za-z0-9!$*()_=~:;,%-]{0,20}", fullmatch=True))
def test_no_error_shows_the_password(tail: str) -> None:
    password = "Secret" + tail
    for url in (f"postgresql://u:{password}@h/db?cassette=pg_bad",
                f"mysql://u:{password}@h/db", f"postgresql://u:{password}@h:70000/db",
                f"postgresql://u:{password}@h/db?cassette=a&cassette=b",
                f"postgresql://u:{password}@h/db?in_progress=maybe"):
        try:
            found = locate(url)
        except CassetteError as exc:
            message = str(exc)
        else:
            message = str(found)
        assert "Secret" not in message, (url, message)


@pytest.mark.parametrize("name", ["pg_catalog", "public", "information_schema", "", "a b",
                                  "x" * 64, "-lead",
                                  "v1.2"])  # checked, then never storable (an audit found)
def test_names_that_are_no_cassette_are_refused(name: str) -> None:
    with pytest.raises(CassetteError, match="not a cassette name"):
        locate(f"postgresql://h/db?cassette={name}" if name else "postgresql://h/db", name)


def test_a_file_takes_no_cassette_name(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="a SQLite file holds one cassette"):
        locate(tmp_path / "c.sqlite", "name")


async def _cassette_with_one(path: Path) -> None:
    cassette = await open_store(path, record=True)
    try:
        iid = cassette.allocate_id()
        await cassette.write(WriteBatch(starts=[InteractionStart(
            iid, 1.0, RecordedRequest("GET", "http://127.0.0.1/", (), b"", "HTTP/1.1"))]))
    finally:
        await cassette.close()


async def test_a_pre_alembic_v1_file_opens_untouched_and_is_stamped_when_appended(
    tmp_path: Path,
) -> None:
    """A v1 file from before Alembic reads as it is; appending stamps it 0001, then upgrades
    it to v2 (its v1 rows still read, the new interaction's chunks go in blocks)."""
    path = tmp_path / "v1.sqlite"
    await _cassette_with_one(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
    db.close()
    await asyncio.to_thread(as_v1, path, [])
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE alembic_version")  # as files written before Alembic are
    db.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    async with await open_store(path) as opened:
        assert opened.version == 1
        assert len(await opened.interactions()) == 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # reading never writes
    await _cassette_with_one(path)  # appending stamps it, then upgrades it
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        assert db.execute("SELECT value FROM cassette_meta WHERE key = 'version'"
                          ).fetchall() == [("2",)]
        assert db.execute("SELECT count(*) FROM interactions").fetchone() == (2,)
    db.close()
    async with await open_store(path) as opened:
        assert opened.version == 2
        assert [i.id for i in await opened.interactions()] == [1, 2]


async def test_a_newer_schema_revision_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    await _cassette_with_one(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0042'")
    db.close()
    for opening in (open_store(path), open_store(path, record=True)):
        with pytest.raises(CassetteError) as info:
            await opening
        assert str(info.value) == (f"{path}: cassette schema revision 0042 is newer than this "
                                   "sse-recorder understands (revision 0002); upgrade "
                                   "sse-recorder")


def test_the_revisions_known_without_alembic_are_alembics() -> None:
    """Reading takes the known revisions from the file names; Alembic reads the files."""
    found = {r.revision: r.down_revision for r in migrate.script().walk_revisions()}
    assert set(found) == migrate.REVISIONS
    assert migrate.script().get_current_head() == migrate.HEAD
    ordered = sorted(found)  # one line of revisions, in the order of their names
    assert [found[r] for r in ordered] == [None, *ordered[:-1]]


async def test_reading_a_cassette_leaves_alembic_unloaded(tmp_path: Path) -> None:
    """Every `ls`, `show` and `replay` opens a cassette from a cold process: Alembic (and
    the templating it brings) was a third of that, and only writing a new revision needs it."""
    path = tmp_path / "c.sqlite"
    await _cassette_with_one(path)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, sys
            from sse_recorder.store import open_store
            async def main():
                async with await open_store({str(path)!r}) as cassette:
                    print(len(await cassette.interactions()))
            asyncio.run(main())
            print(sorted(m for m in sys.modules if m.startswith(("alembic", "mako"))))
        """)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1", "[]"]

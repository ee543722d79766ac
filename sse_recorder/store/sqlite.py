"""Everything about cassettes that only holds for SQLite files (through aiosqlite).

`cassette.py` speaks portable SQLAlchemy Core and calls these for what differs per database:
how a path becomes a connection, the journal mode while recording, the bulk-insert fast
path and what a driver error says. A second database would get a module beside this one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sse_recorder.store.rows import block_broken

BUSY_TIMEOUT_MS = 5000


def engine(
    path: Path, *, read_only: bool, create: bool = False, immutable: bool = False
) -> AsyncEngine:
    """An engine on the file at `path`. SQLite itself refuses writes when `read_only` and a
    missing file unless `create`, so a reader can never turn a stray path into a cassette.
    `immutable` reads the file without locks or side files (see `stranded_in_wal`)."""
    # URL.create keeps the database verbatim (a URL string would be split at '?' and
    # unquoted); quoting keeps '#', '?' and '%' in the path out of SQLite's URI syntax.
    query = {"mode": "ro" if read_only else "rwc" if create else "rw", "uri": "true"}
    if immutable:
        query["immutable"] = "1"
    url = URL.create("sqlite+aiosqlite", database="file:" + quote(str(path)), query=query)
    created = create_async_engine(url, connect_args={"uri": True, "check_same_thread": False})
    event.listen(created.sync_engine, "connect", _set_pragmas)
    return created


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every connection: the busy timeout, and the block check `rows.screen` calls."""
    dbapi_connection.create_function("sse_block_broken", 4, block_broken, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def what_it_is(tables: set[str]) -> str:
    """How to name a readable database that is no cassette, in an error message."""
    return "an empty SQLite file" if not tables else "a SQLite database"


async def start_recording(conn: AsyncConnection) -> None:
    """WAL while recording: readers (ls, a test polling the file) never block the writer."""
    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    await conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
    await conn.commit()


FOLD_PATIENCE = 1.0  # seconds finish_recording waits for other connections to let go
FOLD_BUSY_MS = 50  # a checkpoint's wait for a reader mid-query, per attempt


async def finish_recording(conn: AsyncConnection) -> None:
    """Fold the WAL back into the main file and leave WAL mode, so the cassette is one
    self-contained file that opens anywhere, a read-only location included. Another
    connection that opened the file in WAL mode (even an idle reader) blocks leaving it, so
    this retries for FOLD_PATIENCE seconds, then gives up: after the checkpoint every commit
    is in the main file, and `stranded_in_wal` lets readers cope with the header."""
    deadline = time.monotonic() + FOLD_PATIENCE
    delay = 0.005
    await conn.exec_driver_sql(f"PRAGMA busy_timeout={FOLD_BUSY_MS}")
    try:
        while not await _fold(conn) and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.1)
    finally:
        await conn.commit()
        await conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


async def _fold(conn: AsyncConnection) -> bool:
    """One try at checkpointing everything and leaving WAL mode."""
    if (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).scalar():
        return False  # a reader is mid-query
    try:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode=DELETE")).scalar()
    except DBAPIError:  # "database is locked": another connection is open
        return False
    return str(mode).lower() == "delete"


def stranded_in_wal(path: Path) -> bool:
    """A file whose header says WAL with no WAL content beside it: a recorder stopped while
    another connection held the file. Its main file holds every commit, but SQLite needs a
    writable directory for the `-shm` of a WAL file, so a reader opens it `immutable`."""
    try:
        with path.open("rb") as file:
            header = file.read(20)
        wal = Path(f"{path}-wal")
        stranded = not wal.exists() or wal.stat().st_size == 0
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02" and stranded


async def integrity_problem(conn: AsyncConnection) -> str | None:
    """The first problem `PRAGMA integrity_check` finds, or None for a sound file."""
    found = (await conn.exec_driver_sql("PRAGMA integrity_check(1)")).scalar()
    if found == "ok":
        return None
    # SQLite's report spans lines ("*** in database main ***\nOn tree page 21 ...")
    return " ".join(str(found or "failed").replace("*** in database main ***", "").split())


@cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})")


async def insert_many(
    conn: AsyncConnection, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> None:
    """Bulk insert of plain tuples straight into the driver's executemany: chunk rows are the
    recorder's volume, and this skips building and compiling a dict per row."""
    await conn.exec_driver_sql(_insert_sql(table, columns), rows)


DriverError = sqlite3.Error  # what the driver raises where SQLAlchemy is bypassed


async def insert_and_commit(
    conn: AsyncConnection, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> None:
    """A batch of rows and nothing else (a flood's chunks), inserted and committed by the
    driver itself in one trip to aiosqlite's thread, where SQLAlchemy's cursor and commit
    take four: each trip costs the recorder's writer about 0.1 ms of CPU (a handoff to the
    thread and back through the loop's self-pipe), more than the rows of a small batch.
    The caller makes sure SQLAlchemy has no transaction open (its last write ended with a
    commit)."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # aiosqlite.Connection
    # `_execute` is aiosqlite's own queue to its thread (every release since before 0.19,
    # the oldest this package accepts; its unit test counts the trips through it)
    await driver._execute(_insert_and_commit_here, driver, _insert_sql(table, columns), rows)


def _insert_and_commit_here(driver: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """In aiosqlite's thread: the rows and the commit, or nothing of them (as with
    SQLAlchemy's path)."""
    connection: sqlite3.Connection = driver._conn
    try:
        connection.executemany(sql, rows)
        connection.commit()
    except DriverError:
        connection.rollback()
        raise


def describe(exc: BaseException) -> str:
    """The first line of what the driver (sqlite3) said, for a one-line CassetteError."""
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__

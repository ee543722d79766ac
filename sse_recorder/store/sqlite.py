"""Everything about cassettes that only holds for SQLite files (through aiosqlite).

`cassette.py` speaks portable SQLAlchemy Core and calls these for what differs per database:
how a path becomes a connection, the journal mode while recording, the bulk-insert fast
path and what a driver error says. A second database would get a module beside this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def engine(path: Path, *, read_only: bool, create: bool = False) -> AsyncEngine:
    """An engine on the file at `path`. SQLite itself refuses writes when `read_only` and a
    missing file unless `create`, so a reader can never turn a stray path into a cassette."""
    # URL.create keeps the database verbatim (a URL string would be split at '?' and
    # unquoted); quoting keeps '#', '?' and '%' in the path out of SQLite's URI syntax.
    url = URL.create(
        "sqlite+aiosqlite",
        database="file:" + quote(str(path)),
        query={"mode": "ro" if read_only else "rwc" if create else "rw", "uri": "true"},
    )
    created = create_async_engine(url, connect_args={"uri": True, "check_same_thread": False})
    event.listen(created.sync_engine, "connect", _set_pragmas)
    return created


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def what_it_is(tables: set[str]) -> str:
    """How to name a readable database that is no cassette, in an error message."""
    return "an empty SQLite file" if not tables else "a SQLite database"


async def start_recording(conn: AsyncConnection) -> None:
    """WAL while recording: readers (ls, a test polling the file) never block the writer."""
    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    await conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
    await conn.commit()


async def finish_recording(conn: AsyncConnection) -> None:
    """Fold the WAL back into the main file so the cassette is one self-contained file."""
    await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
    await conn.commit()


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


def describe(exc: BaseException) -> str:
    """The first line of what the driver (sqlite3) said, for a one-line CassetteError."""
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__

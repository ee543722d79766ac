"""Everything about cassettes that only holds for a PostgreSQL store (through asyncpg).

A store is one database; each cassette in it is a schema of that name holding the format's
tables, so the portable queries of `cassette.py` run unchanged through SQLAlchemy's
`schema_translate_map`. Many recorders may write into one cassette at once:
- interaction ids come from the table's identity sequence when the start row is inserted
  (`cassette.py` maps the recorder's own numbers onto them), so two writers never collide;
- each batch is one transaction; chunk rows go in by binary `COPY`;
- creating a cassette (schema plus Alembic upgrade) holds a transaction-level advisory
  lock on its name, so concurrent first recorders create it once; a recorder holds a
  shared session-level lock on the name while it records, and an empty cassette is dropped
  at close only by a recorder that created it and can take that lock exclusively (nobody
  else records into it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sse_recorder.store.location import Location

CONNECT_TIMEOUT = 10.0  # seconds: an unreachable server is an error, not a hang
# Advisory lock keys per cassette name: one serialises creating and dropping it, the
# other is held (shared) by each recorder recording into it.
_KEY = "hashtext('sse-recorder create ' || :name)"
_HOLD = "hashtext('sse-recorder record ' || :name)"


def engine(location: Location) -> AsyncEngine:
    """An engine on the store; queries without a schema go to the cassette's."""
    created = create_async_engine(
        location.url, pool_size=1, max_overflow=0,
        connect_args={"timeout": CONNECT_TIMEOUT,
                      "server_settings": {"application_name": "sse-recorder"}})
    if location.name is None:
        return created
    return created.execution_options(schema_translate_map={None: location.name})


def what_it_is(tables: set[str]) -> str:
    return "a PostgreSQL schema" if tables else "an empty PostgreSQL schema"


async def exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :name"),
                               {"name": name})
    return found.first() is not None


async def lock_for_creation(conn: AsyncConnection, name: str) -> None:
    """Serialise creating (and dropping) cassette `name`, until this transaction ends."""
    await conn.execute(text(f"SELECT pg_advisory_xact_lock({_KEY})"), {"name": name})


async def create_schema(conn: AsyncConnection, name: str) -> None:
    await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{name}"')


async def start_recording(conn: AsyncConnection, name: str) -> None:
    """Hold the shared lock on the name while recording. A recorder's commits need not
    wait for the disk: a crash of the recorder loses nothing committed, and only a crash of
    the server itself could lose its last few hundred milliseconds."""
    await conn.execute(text(f"SELECT pg_advisory_lock_shared({_HOLD})"), {"name": name})
    await conn.exec_driver_sql("SET synchronous_commit = off")
    await conn.commit()


async def drop_if_alone_and_empty(conn: AsyncConnection, name: str) -> bool:
    """Drop cassette `name` if it holds no interaction and no other recorder holds it."""
    await conn.rollback()
    await conn.execute(text(f"SELECT pg_advisory_unlock_shared({_HOLD})"), {"name": name})
    await lock_for_creation(conn, name)
    alone = (await conn.execute(text(f"SELECT pg_try_advisory_xact_lock({_HOLD})"),
                                {"name": name})).scalar()
    empty = alone and (await conn.exec_driver_sql(
        f'SELECT NOT EXISTS (SELECT 1 FROM "{name}".interactions)')).scalar()
    if empty:
        await conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    await conn.commit()
    return bool(empty)


async def cassettes(conn: AsyncConnection) -> list[str]:
    """The schemas that hold an sse-recorder cassette, by name."""
    found = await conn.execute(text(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = "
        "'cassette_meta' ORDER BY table_schema"))
    return [row[0] for row in found]


async def insert_many(
    conn: AsyncConnection, schema: str, table: str, columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Binary COPY into `schema.table`, in the batch's transaction (which the caller has
    begun with a statement of its own: asyncpg starts it lazily)."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(table, records=rows, columns=columns,
                                       schema_name=schema)


def describe(exc: BaseException, location: Location) -> str:
    """One line for what the driver or the network said, never with the password."""
    original = getattr(exc, "orig", None) or exc
    while getattr(original, "__cause__", None) is not None and not str(original):
        original = original.__cause__
    said = str(original).splitlines()[0] if str(original) else type(original).__name__
    # SQLAlchemy's adapter prefixes the class: "<class 'asyncpg...InvalidPasswordError'>: ..."
    if said.startswith("<class '") and "'>: " in said:
        said = said.split("'>: ", 1)[1]
    return location.scrub(said)

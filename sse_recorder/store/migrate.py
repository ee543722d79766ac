"""Schema versions through Alembic, the same way on SQLite files and PostgreSQL cassettes.

The revisions are in `migrations/versions`; Alembic is driven from here (no env.py), on a
connection the store already holds, with `alembic_version` beside the cassette's tables
(in the cassette's schema on PostgreSQL). Rules:
- a new cassette is created by upgrading an empty one to the head revision;
- a cassette with no `alembic_version` table is a v1 file from before Alembic: it is at
  revision 0001 as it stands (reading never writes to it); recording into it stamps 0001
  first, then upgrades like any other;
- a revision this release does not know was written by a newer one: refused, one line.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, select

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # format v1, the schema of files written before Alembic
VERSION_TABLE = "alembic_version"

# Reading a cassette only needs its revision and whether this release knows it: both come
# without Alembic (about a third of opening a cassette from a cold process, which every
# `ls`, `show` and `replay` is). A revision's file is named after it (tests hold Alembic's
# own reading of the directory to this).
REVISIONS = frozenset(
    p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))
HEAD = max(REVISIONS)


@cache
def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def current(connection: Connection, schema: str | None,
            tables: Collection[str] | None = None) -> str | None:
    """The stored revision (None: no alembic_version table or row; several rows, which
    this project never writes, read as one unknown revision). `tables`: the schema's
    tables, when the caller has listed them already."""
    present = (VERSION_TABLE in tables if tables is not None
               else inspect(connection).has_table(VERSION_TABLE, schema=schema))
    if not present:
        return None
    table = Table(VERSION_TABLE, MetaData(schema=schema), Column("version_num", String))
    found = sorted(connection.execute(select(table.c.version_num)).scalars())
    return ",".join(found) or None


def known(revision: str) -> bool:
    return revision in REVISIONS


def upgrade(connection: Connection, schema: str | None, *, stamp_baseline: bool) -> None:
    """Upgrade to head in the connection's transaction; `stamp_baseline` first records
    that the tables already there are revision 0001 (a pre-Alembic v1 file)."""
    if stamp_baseline:
        _run(connection, schema, lambda rev, ctx: script()._stamp_revs(BASELINE, rev))
    _run(connection, schema, lambda rev, ctx: script()._upgrade_revs(HEAD, rev))


def _run(connection: Connection, schema: str | None, fn: Any) -> None:
    from alembic.runtime.environment import EnvironmentContext

    with EnvironmentContext(_config(), script(), fn=fn) as env:
        env.configure(connection=connection, version_table_schema=schema,
                      transactional_ddl=True)
        env.run_migrations()

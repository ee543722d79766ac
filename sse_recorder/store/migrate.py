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

from functools import cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # format v1, the schema of files written before Alembic


@cache
def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    found = script().get_current_head()
    assert found is not None
    return found


def current(connection: Connection, schema: str | None) -> str | None:
    """The stored revision (None: no alembic_version table or row)."""
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


def known(revision: str) -> bool:
    try:
        return script().get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown revision
        return False


def upgrade(connection: Connection, schema: str | None, *, stamp_baseline: bool) -> None:
    """Upgrade to head in the connection's transaction; `stamp_baseline` first records
    that the tables already there are revision 0001 (a pre-Alembic v1 file)."""
    if stamp_baseline:
        _run(connection, schema, lambda rev, ctx: script()._stamp_revs(BASELINE, rev))
    _run(connection, schema, lambda rev, ctx: script()._upgrade_revs(head(), rev))


def _run(connection: Connection, schema: str | None, fn: Any) -> None:
    with EnvironmentContext(_config(), script(), fn=fn) as env:
        env.configure(connection=connection, version_table_schema=schema,
                      transactional_ddl=True)
        env.run_migrations()

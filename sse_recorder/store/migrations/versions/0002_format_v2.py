"""Cassette format version 2: chunk blocks, and events derived from the chunks.

Revision ID: 0002
Revises: 0001
A chunks row may hold a block of consecutive chunks (`count`, `offsets`, `sizes`), and an
interaction keeps its event count (`event_count`); v2 writes no event rows, v1's stay as
they are and are still read. The format version in cassette_meta becomes 2, so a release
that knows only v1 refuses the file instead of missing its blocks.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    schema = op.get_context().version_table_schema  # the cassette's on PostgreSQL
    op.add_column("interactions", sa.Column("event_count", BIG), schema=schema)
    op.add_column("chunks", sa.Column("count", sa.Integer()), schema=schema)
    op.add_column("chunks", sa.Column("offsets", sa.LargeBinary()), schema=schema)
    op.add_column("chunks", sa.Column("sizes", sa.LargeBinary()), schema=schema)
    meta = sa.table("cassette_meta", sa.column("key", sa.String()),
                    sa.column("value", sa.Text()), schema=schema)
    op.execute(meta.update().where(meta.c.key == "version").values(value="2"))


def downgrade() -> None:
    raise NotImplementedError("a v2 cassette is not turned back into v1")

"""Cassette format version 1: cassette_meta, interactions, chunks, events.

Revision ID: 0001
Revises:
The tables are spelled out here, not taken from schema.py, so this revision stays what v1
was whatever schema.py becomes. Integers that hold nanoseconds or ids are 64-bit on
PostgreSQL; on SQLite every column is exactly as v1 files have always been (an INTEGER
PRIMARY KEY id is the rowid).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    schema = op.get_context().version_table_schema  # the cassette's on PostgreSQL
    op.create_table(
        "cassette_meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        schema=schema,
    )
    op.create_table(
        "interactions",
        sa.Column("id", BIG, primary_key=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("request_headers", sa.Text(), nullable=False),
        sa.Column("request_body", sa.LargeBinary(), nullable=False),
        sa.Column("request_http_version", sa.String(), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("reason", sa.String()),
        sa.Column("response_headers", sa.Text()),
        sa.Column("response_http_version", sa.String()),
        sa.Column("head_offset_ns", BIG),
        sa.Column("is_sse", sa.Boolean(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("end_reason", sa.String()),
        sa.Column("end_offset_ns", BIG),
        sa.Column("error", sa.Text()),
        schema=schema,
    )
    interactions = f"{schema}.interactions" if schema else "interactions"
    extras: tuple[tuple[str, list[sa.Column]], ...] = (
        ("chunks", [sa.Column("offset_ns", BIG, nullable=False),
                    sa.Column("data", sa.LargeBinary(), nullable=False)]),
        ("events", [sa.Column("kind", sa.String(), nullable=False),
                    sa.Column("type", sa.String()),
                    sa.Column("data", sa.Text(), nullable=False),
                    sa.Column("event_id", sa.String()),
                    sa.Column("retry", BIG),
                    sa.Column("offset_ns", BIG, nullable=False),
                    sa.Column("first_chunk", BIG, nullable=False),
                    sa.Column("last_chunk", BIG, nullable=False)]),
    )
    for table, extra in extras:
        op.create_table(
            table,
            sa.Column("interaction_id", BIG, sa.ForeignKey(f"{interactions}.id"),
                      primary_key=True),
            sa.Column("seq", BIG, primary_key=True),
            *extra,
            schema=schema,
        )


def downgrade() -> None:
    raise NotImplementedError("format v1 is the first version")

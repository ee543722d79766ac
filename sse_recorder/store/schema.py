"""Cassette format version 2 as typed tables, and how model values are spelled on disk.

The tables are declared once here so that every database backend creates and reads the
same columns; the spellings below are frozen by the format, whatever the model calls things
today (see cassettes/FORMAT.md).
"""

from __future__ import annotations

import json

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sse_recorder.model import Headers, Outcome

FORMAT_NAME = "sse-recorder-cassette"
FORMAT_VERSION = 2
# What format v2 added to v1's tables: a v1 file read as it stands lacks these, and reads
# as if they were NULL (v1 has no chunk blocks and counts events from its event rows).
ADDED_IN_V2: dict[str, tuple[str, ...]] = {
    "interactions": ("event_count",),
    "chunks": ("count", "offsets", "sizes"),
}


class Base(DeclarativeBase):
    pass


# Ids and nanosecond offsets outgrow 32 bits: BIGINT on PostgreSQL, and on SQLite the
# INTEGER that every v1 file has (64-bit there; an INTEGER PRIMARY KEY is the rowid).
# The tables are created by the Alembic revisions in migrations/, which spell them the same.
BIG = BigInteger().with_variant(Integer(), "sqlite")


class MetaRow(Base):
    __tablename__ = "cassette_meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InteractionRow(Base):
    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(BIG, primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String)
    url: Mapped[str] = mapped_column(Text)
    request_headers: Mapped[str] = mapped_column(Text)  # JSON list of [name, value]
    request_body: Mapped[bytes] = mapped_column(LargeBinary)
    request_http_version: Mapped[str] = mapped_column(String)
    status: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String)
    response_headers: Mapped[str | None] = mapped_column(Text)
    response_http_version: Mapped[str | None] = mapped_column(String)
    head_offset_ns: Mapped[int | None] = mapped_column(BIG)
    is_sse: Mapped[bool] = mapped_column(Boolean, default=False)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    end_reason: Mapped[str | None] = mapped_column(String)  # NULL: never finalized
    end_offset_ns: Mapped[int | None] = mapped_column(BIG)
    error: Mapped[str | None] = mapped_column(Text)
    # v2: events dispatched, set when the interaction ends (NULL: count its event rows, or
    # derive them from its chunks)
    event_count: Mapped[int | None] = mapped_column(BIG)


class ChunkRow(Base):
    """One chunk (`count` NULL), or since v2 a block of `count` consecutive chunks written in
    one batch: `seq` and `offset_ns` are its first chunk's, `data` all of them back to back,
    `offsets` and `sizes` each chunk's arrival and length (little-endian int64 and uint32)."""

    __tablename__ = "chunks"
    interaction_id: Mapped[int] = mapped_column(BIG, ForeignKey("interactions.id"),
                                                primary_key=True)
    seq: Mapped[int] = mapped_column(BIG, primary_key=True)
    offset_ns: Mapped[int] = mapped_column(BIG)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    count: Mapped[int | None] = mapped_column(Integer)
    offsets: Mapped[bytes | None] = mapped_column(LargeBinary)
    sizes: Mapped[bytes | None] = mapped_column(LargeBinary)


class EventRow(Base):
    """v1's parsed events; v2 writes none (a reader derives them from the chunks)."""

    __tablename__ = "events"
    interaction_id: Mapped[int] = mapped_column(BIG, ForeignKey("interactions.id"),
                                                primary_key=True)
    seq: Mapped[int] = mapped_column(BIG, primary_key=True)
    kind: Mapped[str] = mapped_column(String)  # "event" or "comment"
    type: Mapped[str | None] = mapped_column(String)
    data: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String)
    retry: Mapped[int | None] = mapped_column(BIG)
    offset_ns: Mapped[int] = mapped_column(BIG)
    first_chunk: Mapped[int] = mapped_column(BIG)
    last_chunk: Mapped[int] = mapped_column(BIG)


# Bulk inserts pass chunk rows as tuples in this column order.
CHUNK_COLUMNS = ("interaction_id", "seq", "offset_ns", "data", "count", "offsets", "sizes")


# Format v1 spells three outcomes its own way; every other outcome is stored as its value.
_ON_DISK = {Outcome.CLOSED: "upstream-closed", Outcome.RESET: "upstream-reset",
            Outcome.STOPPED: "recording-stopped"}
_FROM_DISK = {stored: outcome for outcome, stored in _ON_DISK.items()}


def outcome_on_disk(outcome: Outcome) -> str:
    return _ON_DISK.get(outcome, outcome.value)


def outcome_from_disk(stored: str | None) -> Outcome:
    """NULL is an interaction never finalized (the recorder stopped or died). A value this
    release does not know (written by a newer one) reads as CLOSED: the body is there, and
    whatever the newer ending was, the safe replay is a close before the body's end. This
    is the format's forward-compatibility rule for endings (cassettes/FORMAT.md)."""
    if stored is None:
        return Outcome.STOPPED
    found = _FROM_DISK.get(stored)
    if found is not None:
        return found
    try:
        return Outcome(stored)
    except ValueError:
        return Outcome.CLOSED


def headers_on_disk(headers: Headers) -> str:
    """Headers are a JSON list of `[name, value]` pairs, keeping order and repeats."""
    return json.dumps([list(pair) for pair in headers])

"""The cassette: one SQLite file per recording session, format version 1.

This is the only module that imports SQLAlchemy; everyone else sees `model` dataclasses.
Invariants:
- a file is never created, truncated or overwritten unless the caller asked to record into a
  path that does not exist yet; an existing file must be a valid v1 cassette to be appended to;
- a missing, foreign, corrupt or newer-version file raises a `CassetteError` with a one-line
  message, never reads as an empty cassette;
- writes come in batches, one transaction each (WAL while recording, a single file after close);
- chunks are read back in pages, so a huge cassette streams without being loaded whole.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    URL,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sse_recorder import __version__
from sse_recorder.errors import CassetteError
from sse_recorder.model import (
    Chunk,
    Headers,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)

FORMAT_NAME = "sse-recorder-cassette"
FORMAT_VERSION = 1
CHUNK_PAGE = 512  # rows per query when streaming chunks back


# Format v1 spells three outcomes its own way; every other outcome is stored as its value.
_ON_DISK = {Outcome.CLOSED: "upstream-closed", Outcome.RESET: "upstream-reset",
            Outcome.STOPPED: "recording-stopped"}
_FROM_DISK = {stored: outcome for outcome, stored in _ON_DISK.items()}


def outcome_on_disk(outcome: Outcome) -> str:
    return _ON_DISK.get(outcome, outcome.value)


def outcome_from_disk(stored: str | None) -> Outcome:
    """NULL is an interaction never finalized (the recorder stopped or died). A value this
    release does not know (written by a newer one) reads as CLOSED: the body is there, and
    whatever the newer ending was, the safe replay is a close before the body's end."""
    if stored is None:
        return Outcome.STOPPED
    found = _FROM_DISK.get(stored)
    if found is not None:
        return found
    try:
        return Outcome(stored)
    except ValueError:
        return Outcome.CLOSED


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "cassette_meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InteractionRow(Base):
    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
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
    head_offset_ns: Mapped[int | None] = mapped_column(Integer)
    is_sse: Mapped[bool] = mapped_column(Boolean, default=False)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    end_reason: Mapped[str | None] = mapped_column(String)  # NULL: never finalized
    end_offset_ns: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class ChunkRow(Base):
    __tablename__ = "chunks"
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_ns: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class EventRow(Base):
    __tablename__ = "events"
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)  # "event" or "comment"
    type: Mapped[str | None] = mapped_column(String)
    data: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String)
    retry: Mapped[int | None] = mapped_column(Integer)
    offset_ns: Mapped[int] = mapped_column(Integer)
    first_chunk: Mapped[int] = mapped_column(Integer)
    last_chunk: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True, slots=True)
class InteractionStart:
    id: int
    started_at: float
    request: RecordedRequest


@dataclass(frozen=True, slots=True)
class HeadUpdate:
    id: int
    head: ResponseHead
    head_offset_ns: int
    is_sse: bool


@dataclass(frozen=True, slots=True)
class EndUpdate:
    id: int
    complete: bool
    outcome: Outcome
    end_offset_ns: int | None
    error: str | None


@dataclass(slots=True)
class WriteBatch:
    """Everything the writer gathered since the last commit; written in one transaction."""

    starts: list[InteractionStart] = field(default_factory=list)
    heads: list[HeadUpdate] = field(default_factory=list)
    chunks: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # id, seq, ns, data
    events: list[tuple[int, RecordedEvent]] = field(default_factory=list)
    ends: list[EndUpdate] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.starts) + len(self.heads) + len(self.chunks) + len(self.events)
            + len(self.ends)
        )


def _headers_json(headers: Headers) -> str:
    return json.dumps([list(pair) for pair in headers])


def _headers_from_json(raw: str | None) -> Headers:
    return tuple((str(k), str(v)) for k, v in json.loads(raw or "[]"))


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _engine(path: Path, *, read_only: bool) -> AsyncEngine:
    # URL.create keeps the database verbatim (a URL string would be split at '?' and
    # unquoted); quoting keeps '#', '?' and '%' in the path out of SQLite's URI syntax.
    url = URL.create(
        "sqlite+aiosqlite",
        database="file:" + quote(str(path)),
        query={"mode": "ro" if read_only else "rw", "uri": "true"},
    )
    engine = create_async_engine(url, connect_args={"uri": True, "check_same_thread": False})
    event.listen(engine.sync_engine, "connect", _set_pragmas)
    return engine


def _describe(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).splitlines()[0] if str(original) else type(original).__name__


class Cassette:
    """An open cassette. Use `Cassette.open` to read, `Cassette.open_for_recording` to write."""

    def __init__(self, path: Path, engine: AsyncEngine, conn: AsyncConnection, version: int):
        self.path = path
        self.version = version
        self._engine = engine
        self._conn = conn
        self._next_id = 1

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Cassette:
        """Open an existing cassette read-only, checking that it is one we understand."""
        path = Path(path)
        if not path.exists():
            raise CassetteError(f"{path}: no such cassette")
        if path.is_dir():
            raise CassetteError(f"{path}: is a directory, not a cassette")
        return await cls._connect(path, read_only=True)

    @classmethod
    async def open_for_recording(cls, path: str | Path) -> Cassette:
        """Create a new cassette, or append to an existing valid v1 one; never overwrite."""
        path = Path(path)
        if path.is_dir():
            raise CassetteError(f"{path}: is a directory, not a cassette")
        if path.exists():
            cassette = await cls._connect(path, read_only=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).close()  # create the empty file so mode=rw can open it
            cassette = await cls._connect(path, read_only=False, create=True)
        await cassette._conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        await cassette._conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        await cassette._conn.commit()
        row = (await cassette._conn.execute(select(func.max(InteractionRow.id)))).scalar()
        cassette._next_id = (row or 0) + 1
        return cassette

    @classmethod
    async def _connect(cls, path: Path, *, read_only: bool, create: bool = False) -> Cassette:
        engine = _engine(path, read_only=read_only)
        try:
            conn = await engine.connect()
        except DBAPIError as exc:
            await engine.dispose()
            raise CassetteError(f"{path}: cannot open: {_describe(exc)}") from None
        try:
            if create:
                await conn.run_sync(Base.metadata.create_all)
                meta = {
                    "format": FORMAT_NAME,
                    "version": str(FORMAT_VERSION),
                    "created_at": str(time.time()),
                    "created_by": f"sse-recorder {__version__}",
                }
                await conn.execute(
                    insert(MetaRow), [{"key": k, "value": v} for k, v in meta.items()]
                )
                await conn.commit()
            version = await cls._check_format(conn, path)
        except CassetteError:
            await conn.close()
            await engine.dispose()
            raise
        except DBAPIError as exc:
            await conn.close()
            await engine.dispose()
            raise CassetteError(f"{path}: not a readable cassette: {_describe(exc)}") from None
        return cls(path, engine, conn, version)

    @staticmethod
    async def _check_format(conn: AsyncConnection, path: Path) -> int:
        tables = set(
            (
                await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            ).scalars()
        )
        if "cassette_meta" not in tables:
            kind = "an empty SQLite file" if not tables else "a SQLite database"
            raise CassetteError(f"{path}: {kind}, not an sse-recorder cassette")
        meta = {k: v for k, v in (await conn.execute(select(MetaRow.key, MetaRow.value))).all()}
        if meta.get("format") != FORMAT_NAME:
            raise CassetteError(f"{path}: not an sse-recorder cassette")
        try:
            version = int(meta.get("version", ""))
        except ValueError:
            raise CassetteError(f"{path}: unreadable format version") from None
        if version > FORMAT_VERSION:
            raise CassetteError(
                f"{path}: cassette format version {version} is newer than this sse-recorder "
                f"understands (version {FORMAT_VERSION}); upgrade sse-recorder"
            )
        if version < 1:
            raise CassetteError(f"{path}: unknown cassette format version {version}")
        missing = {"interactions", "chunks", "events"} - tables
        if missing:
            raise CassetteError(f"{path}: damaged cassette, missing {', '.join(sorted(missing))}")
        return version

    async def close(self) -> None:
        """Close; a recording cassette is checkpointed back into a single file."""
        try:
            await self._conn.close()
        finally:
            await self._engine.dispose()

    async def finish_recording(self) -> None:
        """Fold the WAL back into the main file so the cassette is one self-contained file."""
        await self._conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
        await self._conn.commit()

    async def __aenter__(self) -> Cassette:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -------------------------------------------------------------------------

    def allocate_id(self) -> int:
        """Reserve the next interaction id without touching the database (hot path)."""
        allocated = self._next_id
        self._next_id += 1
        return allocated

    async def write(self, batch: WriteBatch) -> None:
        """Write one batch in one transaction."""
        conn = self._conn
        try:
            if batch.starts:
                await conn.execute(
                    insert(InteractionRow),
                    [
                        {
                            "id": s.id,
                            "started_at": s.started_at,
                            "method": s.request.method,
                            "url": s.request.url,
                            "request_headers": _headers_json(s.request.headers),
                            "request_body": s.request.body,
                            "request_http_version": s.request.http_version,
                            "is_sse": False,
                            "complete": False,
                        }
                        for s in batch.starts
                    ],
                )
            for head in batch.heads:
                await conn.execute(
                    update(InteractionRow)
                    .where(InteractionRow.id == head.id)
                    .values(
                        status=head.head.status,
                        reason=head.head.reason,
                        response_headers=_headers_json(head.head.headers),
                        response_http_version=head.head.http_version,
                        head_offset_ns=head.head_offset_ns,
                        is_sse=head.is_sse,
                    )
                )
            if batch.chunks:
                await conn.exec_driver_sql(
                    "INSERT INTO chunks (interaction_id, seq, offset_ns, data) VALUES (?, ?, ?, ?)",
                    batch.chunks,
                )
            if batch.events:
                await conn.exec_driver_sql(
                    "INSERT INTO events (interaction_id, seq, kind, type, data, event_id, retry,"
                    " offset_ns, first_chunk, last_chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(iid, *event) for iid, event in batch.events],
                )
            for end in batch.ends:
                await conn.execute(
                    update(InteractionRow)
                    .where(InteractionRow.id == end.id)
                    .values(
                        complete=end.complete,
                        end_reason=outcome_on_disk(end.outcome),
                        end_offset_ns=end.end_offset_ns,
                        error=end.error,
                    )
                )
            await conn.commit()
        except DBAPIError as exc:
            raise CassetteError(f"{self.path}: write failed: {_describe(exc)}") from exc

    # -- reading -------------------------------------------------------------------------

    async def interactions(self) -> list[Interaction]:
        return await self._interactions(None)

    async def interaction(self, interaction_id: int) -> Interaction:
        found = await self._interactions(interaction_id)
        if not found:
            raise CassetteError(f"{self.path}: no interaction {interaction_id}")
        return found[0]

    async def _interactions(self, only: int | None) -> list[Interaction]:
        chunk_stats = (
            select(
                ChunkRow.interaction_id.label("iid"),
                func.count().label("n"),
                func.coalesce(func.sum(func.length(ChunkRow.data)), 0).label("size"),
            )
            .group_by(ChunkRow.interaction_id)
            .subquery()
        )
        event_stats = (
            select(EventRow.interaction_id.label("iid"), func.count().label("n"))
            .where(EventRow.kind == "event")
            .group_by(EventRow.interaction_id)
            .subquery()
        )
        query = (
            select(
                InteractionRow.__table__,
                func.coalesce(chunk_stats.c.n, 0).label("chunk_count"),
                func.coalesce(chunk_stats.c.size, 0).label("body_size"),
                func.coalesce(event_stats.c.n, 0).label("event_count"),
            )
            .outerjoin(chunk_stats, chunk_stats.c.iid == InteractionRow.id)
            .outerjoin(event_stats, event_stats.c.iid == InteractionRow.id)
            .order_by(InteractionRow.id)
        )
        if only is not None:
            query = query.where(InteractionRow.id == only)
        rows = await self._read(query)
        return [_interaction(row._mapping) for row in rows]

    async def chunks(self, interaction_id: int, start_seq: int = 0) -> AsyncIterator[Chunk]:
        """Stream an interaction's chunks in order, a page at a time."""
        seq = start_seq
        while True:
            rows = await self._read(
                select(ChunkRow.seq, ChunkRow.offset_ns, ChunkRow.data)
                .where(ChunkRow.interaction_id == interaction_id, ChunkRow.seq >= seq)
                .order_by(ChunkRow.seq)
                .limit(CHUNK_PAGE)
            )
            for row_seq, offset_ns, data in rows:
                yield Chunk(row_seq, offset_ns, bytes(data))
            if len(rows) < CHUNK_PAGE:
                return
            seq = rows[-1][0] + 1

    async def events(self, interaction_id: int) -> list[RecordedEvent]:
        rows = await self._read(
            select(EventRow.__table__)
            .where(EventRow.interaction_id == interaction_id)
            .order_by(EventRow.seq)
        )
        return [
            RecordedEvent(
                seq=r.seq,
                kind="comment" if r.kind == "comment" else "event",
                type=r.type,
                data=r.data,
                id=r.event_id,
                retry=r.retry,
                offset_ns=r.offset_ns,
                first_chunk=r.first_chunk,
                last_chunk=r.last_chunk,
            )
            for r in rows
        ]

    async def _read(self, query: Any) -> Sequence[Any]:
        try:
            return (await self._conn.execute(query)).all()
        except DBAPIError as exc:
            raise CassetteError(f"{self.path}: damaged cassette: {_describe(exc)}") from None


def _interaction(row: Any) -> Interaction:
    response = None
    if row["status"] is not None:
        response = ResponseHead(
            status=row["status"],
            reason=row["reason"] or "",
            headers=_headers_from_json(row["response_headers"]),
            http_version=row["response_http_version"] or "HTTP/1.1",
        )
    return Interaction(
        id=row["id"],
        started_at=row["started_at"],
        request=RecordedRequest(
            method=row["method"],
            url=row["url"],
            headers=_headers_from_json(row["request_headers"]),
            body=bytes(row["request_body"] or b""),
            http_version=row["request_http_version"],
        ),
        response=response,
        head_offset_ns=row["head_offset_ns"],
        is_sse=bool(row["is_sse"]),
        complete=bool(row["complete"]),
        # NULL: the recorder never finalized it (killed while the stream was open)
        outcome=outcome_from_disk(row["end_reason"]),
        end_offset_ns=row["end_offset_ns"],
        error=row["error"],
        chunk_count=row["chunk_count"],
        body_size=row["body_size"],
        event_count=row["event_count"],
    )

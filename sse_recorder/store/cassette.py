"""The cassette API: open or create a cassette, write batches, read interactions back.

Portable SQLAlchemy Core over the tables in `schema`; what only holds for SQLite lives in
`sqlite`. Everyone outside `sse_recorder.store` sees `model` values, never rows.
Invariants:
- a file is never created, truncated or overwritten unless the caller asked to record into a
  path that does not exist yet; an existing file must be a valid v1 cassette to be appended to;
- a missing, foreign, corrupt or newer-version file raises a `CassetteError` with a one-line
  message, never reads as an empty cassette;
- writes come in batches, one transaction each (WAL while recording, a single file after close);
- chunks are read back in pages, so a huge cassette streams without being loaded whole.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sse_recorder import __version__
from sse_recorder.errors import CassetteError
from sse_recorder.model import (
    Chunk,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)
from sse_recorder.store import sqlite
from sse_recorder.store.schema import (
    CHUNK_COLUMNS,
    EVENT_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    Base,
    ChunkRow,
    EventRow,
    InteractionRow,
    MetaRow,
    headers_from_disk,
    headers_on_disk,
    outcome_from_disk,
    outcome_on_disk,
)

CHUNK_PAGE = 512  # rows per query when streaming chunks back


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
            cassette = await cls._connect(path, read_only=False, create=True)
        await sqlite.start_recording(cassette._conn)
        row = (await cassette._conn.execute(select(func.max(InteractionRow.id)))).scalar()
        cassette._next_id = (row or 0) + 1
        return cassette

    @classmethod
    async def _connect(cls, path: Path, *, read_only: bool, create: bool = False) -> Cassette:
        """Connect (creating the file and its tables with `create`) and check the format."""
        engine = sqlite.engine(path, read_only=read_only, create=create)
        try:
            conn = await engine.connect()
        except DBAPIError as exc:
            await engine.dispose()
            raise CassetteError(f"{path}: cannot open: {sqlite.describe(exc)}") from None
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
            raise CassetteError(
                f"{path}: not a readable cassette: {sqlite.describe(exc)}"
            ) from None
        return cls(path, engine, conn, version)

    @staticmethod
    async def _check_format(conn: AsyncConnection, path: Path) -> int:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        if MetaRow.__tablename__ not in tables:
            kind = sqlite.what_it_is(tables)
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
        missing = set(Base.metadata.tables) - tables
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
        """Leave the cassette as one self-contained file (call before `close`)."""
        await sqlite.finish_recording(self._conn)

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
                            "request_headers": headers_on_disk(s.request.headers),
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
                        response_headers=headers_on_disk(head.head.headers),
                        response_http_version=head.head.http_version,
                        head_offset_ns=head.head_offset_ns,
                        is_sse=head.is_sse,
                    )
                )
            if batch.chunks:
                await sqlite.insert_many(
                    conn, ChunkRow.__tablename__, CHUNK_COLUMNS, batch.chunks
                )
            if batch.events:
                await sqlite.insert_many(
                    conn, EventRow.__tablename__, EVENT_COLUMNS,
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
            raise CassetteError(f"{self.path}: write failed: {sqlite.describe(exc)}") from exc

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
            raise CassetteError(
                f"{self.path}: damaged cassette: {sqlite.describe(exc)}"
            ) from None


def _interaction(row: Any) -> Interaction:
    response = None
    if row["status"] is not None:
        response = ResponseHead(
            status=row["status"],
            reason=row["reason"] or "",
            headers=headers_from_disk(row["response_headers"]),
            http_version=row["response_http_version"] or "HTTP/1.1",
        )
    return Interaction(
        id=row["id"],
        started_at=row["started_at"],
        request=RecordedRequest(
            method=row["method"],
            url=row["url"],
            headers=headers_from_disk(row["request_headers"]),
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

"""The cassette API: open or create a cassette, write batches, read interactions back.

Portable SQLAlchemy Core over the tables in `schema`; what only holds for SQLite lives in
`sqlite`; every value read back is checked in `rows`. Everyone outside `sse_recorder.store`
sees `model` values, never rows.
Invariants:
- a file is never created, truncated or overwritten unless the caller asked to record into a
  path that does not exist yet; an existing file must be a valid v1 cassette, sound under
  `PRAGMA integrity_check` and with every value readable, to be appended to;
- a missing, foreign, corrupt, damaged or newer-version file raises a `CassetteError` with a
  one-line message naming what is wrong (for a value: its row and column), never reads as
  an empty cassette, and is left untouched;
- a cassette created for recording that holds no interaction when it is closed is removed
  (with the directories created for it): a failed or empty recording leaves no file that a
  later run would take for a recording; a cassette opened to append is never removed;
- the file written is the file opened: deleted or replaced while recording, the next write
  or the finish raises a `CassetteError` instead of writing into a file nobody will see;
- writes come in batches, one transaction each (WAL while recording, a single file after
  close); a file left in WAL mode (another connection held it at the finish) still opens
  read-only from a read-only location;
- chunks are read back in pages, so a huge cassette streams without being loaded whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, insert, inspect, select, type_coerce, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import NullType

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
from sse_recorder.store import rows, sqlite
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
    headers_on_disk,
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


def _raw(table: Any) -> list[Any]:
    """A table's columns as SQLite holds them: no SQLAlchemy result processing (which would
    convert, or fail on, a damaged value before `rows` could say which it is)."""
    return [type_coerce(column, NullType()).label(column.name) for column in table.columns]


_INTERACTION, _CHUNKS, _EVENTS = (Base.metadata.tables[row.__tablename__]
                                  for row in (InteractionRow, ChunkRow, EventRow))


class Cassette:
    """An open cassette. Use `Cassette.open` to read, `Cassette.open_for_recording` to write."""

    def __init__(self, path: Path, engine: AsyncEngine, conn: AsyncConnection, version: int):
        self.path = path
        self.version = version
        self._engine = engine
        self._conn = conn
        self._next_id = 1
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) while recording
        self._created: list[Path] = []  # what recording created: the file, then new dirs

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Cassette:
        """Open an existing cassette read-only, checking that it is one we understand."""
        path = Path(path)
        if not path.exists():
            raise CassetteError(f"{path}: no such cassette")
        if path.is_dir():
            raise CassetteError(f"{path}: is a directory, not a cassette")
        try:
            return await cls._connect(path, read_only=True)
        except CassetteError:
            if not sqlite.stranded_in_wal(path):
                raise
        # A WAL-mode file cannot be opened where its -shm cannot be made (a read-only
        # location); every commit is in the main file, so read it as it is.
        return await cls._connect(path, read_only=True, immutable=True)

    @classmethod
    async def open_for_recording(cls, path: str | Path, *, keep_if_empty: bool = False) -> Cassette:
        """Create a new cassette, or append to an existing sound v1 one; never overwrite.
        A cassette created here that still holds no interaction at `close` is removed,
        unless `keep_if_empty` (an empty cassette wanted as such, e.g. by a test)."""
        path = Path(path)
        if path.is_dir():
            raise CassetteError(f"{path}: is a directory, not a cassette")
        created = not path.exists()
        new_dirs = _make_parents(path) if created else []
        if created and not os.access(path.parent, os.W_OK):
            raise CassetteError(f"{path}: cannot create: {path.parent} is not writable")
        try:
            cassette = await cls._connect(path, read_only=False, create=created)
        except CassetteError:
            if created:  # whatever is there now is a start of ours
                _remove([path], new_dirs)
            raise
        cassette._created = [path, *new_dirs] if created and not keep_if_empty else []
        try:
            stat = path.stat()
            cassette._identity = (stat.st_dev, stat.st_ino)
            if not created:  # reads only: a file refused here is left as it was
                problem = await sqlite.integrity_problem(cassette._conn)
                if problem is not None:
                    raise CassetteError(f"{path}: damaged cassette, not appending to it: "
                                        f"integrity check: {problem}")
                await cassette.interactions()  # every value readable, or a CassetteError
            await sqlite.start_recording(cassette._conn)
            row = (await cassette._conn.execute(select(func.max(InteractionRow.id)))).scalar()
        except Exception as exc:
            await cassette.close()
            if isinstance(exc, DBAPIError):
                raise CassetteError(f"{path}: cannot record: {sqlite.describe(exc)}") from None
            if isinstance(exc, OSError):
                raise CassetteError(f"{path}: cannot record: {exc.strerror or exc}") from None
            raise
        cassette._next_id = (row or 0) + 1
        return cassette

    @classmethod
    async def _connect(
        cls, path: Path, *, read_only: bool, create: bool = False, immutable: bool = False
    ) -> Cassette:
        """Connect (creating the file and its tables with `create`) and check the format."""
        engine = sqlite.engine(path, read_only=read_only, create=create, immutable=immutable)
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
        except BaseException as exc:
            await conn.close()
            await engine.dispose()
            if isinstance(exc, DBAPIError):
                raise CassetteError(
                    f"{path}: not a readable cassette: {sqlite.describe(exc)}"
                ) from None
            raise
        return cls(path, engine, conn, version)

    @staticmethod
    async def _check_format(conn: AsyncConnection, path: Path) -> int:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        if MetaRow.__tablename__ not in tables:
            kind = sqlite.what_it_is(tables)
            raise CassetteError(f"{path}: {kind}, not an sse-recorder cassette")
        meta: dict[Any, Any] = dict((await conn.execute(select(*_raw(MetaRow.__table__)))).all())
        if meta.get("format") != FORMAT_NAME:
            raise CassetteError(f"{path}: not an sse-recorder cassette")
        stored = meta.get("version")
        if not (isinstance(stored, str) and stored.isascii() and stored.isdigit()):
            raise CassetteError(f"{path}: unreadable format version")
        version = int(stored)
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
        # Columns a newer release added are ignored; a missing one is damage.
        have = await conn.run_sync(lambda sync: {
            name: {c["name"] for c in inspect(sync).get_columns(name)}
            for name in Base.metadata.tables
        })
        for name, table in Base.metadata.tables.items():
            lost = [c.name for c in table.columns if c.name not in have[name]]
            if lost:
                raise CassetteError(f"{path}: damaged cassette, table {name} has no column "
                                    f"{', '.join(lost)}")
        return version

    async def close(self) -> None:
        """Close. A cassette `open_for_recording` created that holds no interaction is
        removed, with the directories made for it, if it is still the file created."""
        try:
            empty = bool(self._created) and self._still_ours() and not await self._holds_any()
        finally:
            try:
                await self._conn.close()
            finally:
                await self._engine.dispose()
        if empty:
            _remove(self._created[:1], self._created[1:])

    async def finish_recording(self) -> None:
        """Leave the cassette as one self-contained file (call before `close`)."""
        self._check_still_there()
        try:
            await sqlite.finish_recording(self._conn)
        except DBAPIError as exc:
            raise CassetteError(f"{self.path}: finishing failed: {sqlite.describe(exc)}") from exc

    async def __aenter__(self) -> Cassette:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _still_ours(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def _check_still_there(self) -> None:
        """SQLite keeps writing into a file deleted or replaced under it, where nobody will
        ever read it: stop instead, loudly."""
        if self._identity is not None and not self._still_ours():
            what = "replaced" if self.path.exists() else "deleted"
            raise CassetteError(f"{self.path}: the cassette was {what} while recording; "
                                "recording stopped")

    async def _holds_any(self) -> bool:
        try:
            await self._conn.rollback()  # after a failed write the transaction is invalid
            return (await self._conn.execute(select(InteractionRow.id).limit(1))).first() \
                is not None
        except SQLAlchemyError:
            return True  # when in doubt, a file is kept

    # -- writing -------------------------------------------------------------------------

    def allocate_id(self) -> int:
        """Reserve the next interaction id without touching the database (hot path)."""
        allocated = self._next_id
        self._next_id += 1
        return allocated

    async def write(self, batch: WriteBatch) -> None:
        """Write one batch in one transaction."""
        self._check_still_there()
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
        """Every interaction, checked: its own values, and (by one SQL screen in the same
        query) the storage class and range of every value of its chunks and events."""
        return await self._interactions(None)

    async def interaction(self, interaction_id: int) -> Interaction:
        found = await self._interactions(interaction_id)
        if not found:
            raise CassetteError(f"{self.path}: no interaction {interaction_id}")
        return found[0]

    async def _interactions(self, only: int | None) -> list[Interaction]:
        chunk_stats = select(
            ChunkRow.interaction_id.label("iid"),
            func.count().label("n"),
            func.coalesce(func.sum(func.length(ChunkRow.data)), 0).label("size"),
            func.sum(case((rows.screen(_CHUNKS), 1), else_=0)).label("bad"),
        )
        event_stats = select(
            EventRow.interaction_id.label("iid"),
            func.sum(case((EventRow.kind == "event", 1), else_=0)).label("n"),
            func.sum(case((rows.screen(_EVENTS), 1), else_=0)).label("bad"),
        )
        if only is not None:  # one interaction: aggregate its rows only, not every table's
            chunk_stats = chunk_stats.where(ChunkRow.interaction_id == only)
            event_stats = event_stats.where(EventRow.interaction_id == only)
        chunks = chunk_stats.group_by(ChunkRow.interaction_id).subquery()
        events = event_stats.group_by(EventRow.interaction_id).subquery()
        query = (
            select(
                *_raw(_INTERACTION),
                func.coalesce(chunks.c.n, 0).label("chunk_count"),
                func.coalesce(chunks.c.size, 0).label("body_size"),
                func.coalesce(events.c.n, 0).label("event_count"),
                func.coalesce(chunks.c.bad, 0).label("bad_chunks"),
                func.coalesce(events.c.bad, 0).label("bad_events"),
            )
            .outerjoin(chunks, chunks.c.iid == InteractionRow.id)
            .outerjoin(events, events.c.iid == InteractionRow.id)
            .order_by(InteractionRow.id)
        )
        if only is not None:
            query = query.where(InteractionRow.id == only)
        found = []
        for row in await self._read(query):
            interaction = rows.interaction(row._mapping, self.path)
            if row.bad_chunks:
                await self._first_bad(_CHUNKS, interaction.id)
            if row.bad_events:
                await self._first_bad(_EVENTS, interaction.id)
            found.append(interaction)
        return found

    async def _first_bad(self, table: Any, interaction_id: int) -> None:
        """Raise the CassetteError that the first row the screen flagged deserves."""
        (row,) = await self._read(
            select(*_raw(table))
            .where(table.c.interaction_id == interaction_id, rows.screen(table))
            .limit(1)
        )
        if table is _CHUNKS:
            rows.chunks([(row.seq, row.offset_ns, row.data)], self.path, interaction_id)
        else:
            rows.event(row._mapping, self.path, interaction_id)

    async def chunks(self, interaction_id: int, start_seq: int = 0) -> AsyncIterator[Chunk]:
        """Stream an interaction's chunks in order, a page at a time, each one checked."""
        seq = start_seq
        while True:
            page = rows.chunks(await self._read(
                select(*_raw(_CHUNKS)[1:])  # seq, offset_ns, data
                .where(ChunkRow.interaction_id == interaction_id, ChunkRow.seq >= seq)
                .order_by(ChunkRow.seq)
                .limit(CHUNK_PAGE)
            ), self.path, interaction_id)
            for chunk in page:
                yield chunk
            if len(page) < CHUNK_PAGE:
                return
            seq = page[-1].seq + 1

    async def events(self, interaction_id: int) -> list[RecordedEvent]:
        found = await self._read(
            select(*_raw(_EVENTS))
            .where(EventRow.interaction_id == interaction_id)
            .order_by(EventRow.seq)
        )
        return [rows.event(r._mapping, self.path, interaction_id) for r in found]

    async def _read(self, query: Any) -> Sequence[Any]:
        try:
            return (await self._conn.execute(query)).all()
        except DBAPIError as exc:
            raise CassetteError(
                f"{self.path}: damaged cassette: {sqlite.describe(exc)}"
            ) from None


def _make_parents(path: Path) -> list[Path]:
    """Create the missing directories above `path`; returns those made, deepest first (what
    to remove if the recording leaves nothing). A CassetteError names what is in the way."""
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CassetteError(f"{path}: cannot create: {blocker} is not a directory")
    made: list[Path] = []
    for directory in reversed([p for p in path.parents if not p.exists()]):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs, not ours to remove
        except OSError as exc:
            _remove([], made[::-1])
            raise CassetteError(f"{path}: cannot create {directory}: {exc.strerror}") from None
        made.append(directory)
    return made[::-1]


def _remove(files: list[Path], dirs: list[Path]) -> None:
    """Remove files (with their SQLite side files), then directories if left empty."""
    for file in files:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
    for directory in dirs:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty, or not ours to remove: neither are its parents

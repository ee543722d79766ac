"""The cassette API: open or create a cassette, write batches, read interactions back.

Portable SQLAlchemy Core over the tables in `schema`; what only holds for SQLite files lives
in `sqlite`, for PostgreSQL stores in `postgres`; schema versions are Alembic's (`migrate`);
every value read back is checked in `rows`. Everyone outside `sse_recorder.store` sees
`model` values, never rows. A target is a path or a store URL (`location`); `open_store`
is the one entry point commands use.
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
- chunks are read back in pages, so a huge cassette streams without being loaded whole;
- `allocate_id` numbers interactions in this process only; the stored id is the one the
  database gives the start row (`write` translates), so concurrent writers into one
  cassette never collide; with a single writer the two are the same numbers;
- on a PostgreSQL store a reader sees only finalized interactions (others may still be
  being recorded) unless `in_progress`; a SQLite file, one writer's, shows all of them.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from pathlib import Path
from typing import Any

from sqlalchemy import (
    case,
    delete,
    func,
    insert,
    inspect,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import NullType

from sse_recorder import __version__
from sse_recorder.errors import CassetteError
from sse_recorder.framing.derive import Deriver
from sse_recorder.model import (
    Chunk,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)
from sse_recorder.partial import remove_sqlite_file
from sse_recorder.sse import EventCounter
from sse_recorder.store import migrate, postgres, rows, sqlite
from sse_recorder.store.location import Location, locate
from sse_recorder.store.schema import (
    ADDED_IN_V2,
    CHUNK_COLUMNS,
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

# Chunks are read back a page of rows at a time (a row is a chunk or a block of chunks): the
# first page is small, later ones hold about PAGE_BYTES (by the rows seen so far), at most
# CHUNK_PAGE rows; a block holds at most BLOCK_BYTES of data (more goes in the next block).
CHUNK_PAGE = 512
FIRST_PAGE = 4
PAGE_BYTES = 1 << 20
BLOCK_BYTES = 64 << 10


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
    event_count: int | None = None  # None: unknown, derived from the chunks when read


Run = tuple[int, int, list[int], list[bytes]]  # interaction id, first seq, offsets, datas


@dataclass(slots=True)
class WriteBatch:
    """Everything the writer gathered since the last commit; written in one transaction.
    Chunks come one by one (`chunks`) or as runs of one interaction's consecutive chunks
    (`runs`, columns as the recorder's writer has them: packed without a step per chunk);
    either way an interaction's consecutive chunks in one batch are stored as one block row."""

    starts: list[InteractionStart] = field(default_factory=list)
    heads: list[HeadUpdate] = field(default_factory=list)
    chunks: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # id, seq, ns, data
    runs: list[Run] = field(default_factory=list)
    ends: list[EndUpdate] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.starts) + len(self.heads) + self.chunk_count() + len(self.ends))

    def chunk_count(self) -> int:
        return len(self.chunks) + sum(len(run[2]) for run in self.runs)

    def all_chunks(self) -> list[tuple[int, int, int, bytes]]:
        """Every chunk as (id, seq, ns, data): the runs' chunks after the single ones."""
        return self.chunks + [(iid, seq + n, ns, data) for iid, seq, offsets, datas in self.runs
                              for n, (ns, data) in enumerate(zip(offsets, datas, strict=True))]


def _raw(table: Any, version: int = FORMAT_VERSION) -> list[Any]:
    """A table's columns as SQLite holds them: no SQLAlchemy result processing (which would
    convert, or fail on, a damaged value before `rows` could say which it is). A column a
    v1 file does not have reads as NULL."""
    missing = ADDED_IN_V2.get(table.name, ()) if version < 2 else ()
    return [literal(None).label(column.name) if column.name in missing
            else type_coerce(column, NullType()).label(column.name) for column in table.columns]


def _blocks(batch: WriteBatch) -> list[tuple[Any, ...]]:
    """Chunk rows for a batch: each run of one interaction's consecutive chunks as one row
    (a single chunk as a v1 row), so a flood of small chunks costs one insert per batch."""
    runs: dict[tuple[int, int], tuple[list[int], list[bytes]]] = {}  # by (id, first seq)
    open_runs: dict[int, tuple[tuple[int, int], int]] = {}  # id -> (its run, next seq)
    for iid, seq, ns, data in batch.chunks:
        found = open_runs.get(iid)
        if found is not None and found[1] == seq:
            key = found[0]
            offsets, datas = runs[key]
            offsets.append(ns)
            datas.append(data)
        else:
            key = (iid, seq)
            runs[key] = ([ns], [data])
        open_runs[iid] = (key, seq + 1)
    rows: list[tuple[Any, ...]] = []
    for (iid, seq), (offsets, datas) in runs.items():
        _pack(iid, seq, offsets, datas, rows)
    for iid, seq, offsets, datas in batch.runs:
        _pack(iid, seq, offsets, datas, rows)
    return rows


def _pack(iid: int, seq: int, offsets: list[int], datas: list[bytes],
          rows: list[tuple[Any, ...]]) -> None:
    """One run as rows: blocks of at most BLOCK_BYTES (a chunk bigger than that, or a single
    chunk, as a row of its own). Cut with `accumulate` and `bisect` (C loops): a flood's
    batch of ~2,000 chunks spans two blocks, and a Python step per chunk to find the cut
    cost the writer process 0.14 us per chunk."""
    count = len(datas)
    sizes = list(map(len, datas))
    ends = list(accumulate(sizes))
    start = 0
    while start < count:
        base = ends[start - 1] if start else 0
        stop = max(bisect_right(ends, base + BLOCK_BYTES, start), start + 1)
        if stop - start == 1:
            rows.append((iid, seq + start, offsets[start], datas[start], None, None, None))
        else:
            n = stop - start
            rows.append((iid, seq + start, offsets[start], b"".join(datas[start:stop]), n,
                         struct.pack(f"<{n}q", *offsets[start:stop]),
                         struct.pack(f"<{n}I", *sizes[start:stop])))
        start = stop


_INTERACTION, _CHUNKS, _EVENTS = (Base.metadata.tables[row.__tablename__]
                                  for row in (InteractionRow, ChunkRow, EventRow))


class Cassette:
    """An open cassette. Use `Cassette.open` to read, `Cassette.open_for_recording` to write
    (or `open_store` for either)."""

    def __init__(self, path: Path | Location, engine: AsyncEngine, conn: AsyncConnection,
                 version: int, *, in_progress: bool = True):
        self.path = path  # str() is what messages show: never a password
        self.version = version
        self.in_progress = in_progress  # readers see interactions not finalized yet
        self._engine = engine
        self._conn = conn
        self._next_id = 1
        self._ids: dict[int, int] = {}  # allocated number -> stored id, where they differ
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) while recording
        self._created: list[Path] = []  # what recording created: the file, then new dirs
        self._created_schema = False  # a PostgreSQL cassette this recording created

    @property
    def location(self) -> Location | None:
        return self.path if isinstance(self.path, Location) else None

    @property
    def _schema(self) -> str | None:
        location = self.location
        return location.name if location is not None else None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, target: str | Path | Location, name: str | None = None, *,
        in_progress: bool | None = None,
    ) -> Cassette:
        """Open an existing cassette read-only, checking that it is one we understand.
        `in_progress` (default: the URL's `in_progress`, always on for a file) also shows
        interactions not finalized yet."""
        path = locate(target, name)
        if isinstance(path, Location):
            return await cls._open_server(path, record=False, in_progress=in_progress)
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
    async def open_for_recording(
        cls, target: str | Path | Location, name: str | None = None, *,
        keep_if_empty: bool = False,
    ) -> Cassette:
        """Create a new cassette, or append to an existing sound v1 one; never overwrite.
        A cassette created here that still holds no interaction at `close` is removed,
        unless `keep_if_empty` (an empty cassette wanted as such, e.g. by a test)."""
        path = locate(target, name)
        if isinstance(path, Location):
            cassette = await cls._open_server(path, record=True, in_progress=True)
            cassette._created_schema = cassette._created_schema and not keep_if_empty
            return cassette
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
                await cassette._conn.run_sync(_upgrade, None)
                await cassette._conn.commit()
                cassette.version = FORMAT_VERSION
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
    async def _open_server(
        cls, location: Location, *, record: bool, in_progress: bool | None
    ) -> Cassette:
        """A cassette in a PostgreSQL store: created (schema and tables) when recording
        into a name the store does not hold yet."""
        if location.name is None:
            raise CassetteError(f"{location}: which cassette? Name it in the URL "
                                "(?cassette=NAME); `sse-recorder ls URL` lists them")
        engine = postgres.engine(location)
        if not record:
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn = await engine.connect()
        except Exception as exc:  # the driver's and the network's errors alike
            await engine.dispose()
            raise CassetteError(
                f"{location}: cannot connect: {postgres.describe(exc, location)}") from None
        shown = in_progress if in_progress is not None else location.in_progress
        cassette = cls(location, engine, conn, FORMAT_VERSION, in_progress=shown)
        try:
            if record:
                await postgres.lock_for_creation(conn, location.name)
                if not await postgres.exists(conn, location.name):
                    await postgres.create_schema(conn, location.name)
                    cassette._created_schema = True
                    await conn.run_sync(_create, location.name)
            elif not await postgres.exists(conn, location.name):
                raise CassetteError(f"{location}: no such cassette in this store")
            cassette.version = await cls._check_format(conn, location, location.name)
            if record:
                await conn.run_sync(_upgrade, location.name)
                await conn.commit()
                cassette.version = FORMAT_VERSION
                await postgres.start_recording(conn, location.name)
                # numbered as the database will most likely number them: no translation
                last = (await conn.execute(select(func.max(InteractionRow.id)))).scalar()
                await conn.commit()
                cassette._next_id = (last or 0) + 1
        except BaseException as exc:
            cassette._created_schema = False
            await conn.close()
            await engine.dispose()
            if isinstance(exc, DBAPIError | OSError):
                raise CassetteError(
                    f"{location}: cannot open: {postgres.describe(exc, location)}") from None
            raise
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
                await conn.run_sync(_create, None)
                await conn.commit()
            version = await cls._check_format(conn, path, None)
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
    async def _check_format(
        conn: AsyncConnection, path: Path | Location, schema: str | None
    ) -> int:
        tables = set(await conn.run_sync(
            lambda sync: inspect(sync).get_table_names(schema=schema)))
        if MetaRow.__tablename__ not in tables:
            kind = (sqlite if schema is None else postgres).what_it_is(tables)
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
        revision = await conn.run_sync(migrate.current, schema, tables)
        if revision is not None and not migrate.known(revision):
            raise CassetteError(
                f"{path}: cassette schema revision {revision} is newer than this sse-recorder "
                f"understands (revision {migrate.HEAD}); upgrade sse-recorder")
        missing = set(Base.metadata.tables) - tables
        if missing:
            raise CassetteError(f"{path}: damaged cassette, missing {', '.join(sorted(missing))}")
        # Columns a newer release added are ignored; a missing one is damage.
        have = await conn.run_sync(lambda sync: {
            name: {c["name"] for c in inspect(sync).get_columns(name, schema=schema)}
            for name in Base.metadata.tables
        })
        for name, table in Base.metadata.tables.items():
            later = ADDED_IN_V2.get(name, ()) if version < 2 else ()
            lost = [c.name for c in table.columns if c.name not in have[name]
                    and c.name not in later]
            if lost:
                raise CassetteError(f"{path}: damaged cassette, table {name} has no column "
                                    f"{', '.join(lost)}")
        return version

    async def reads_from(self, other: Cassette) -> bool:
        """Whether this cassette (opened for recording) is `other` under another name: a
        server spelled another way (localhost, 127.0.0.1), a hard link. A marker committed
        here is looked for there, then removed; `other` ends its read transaction first, so
        it sees what is committed now."""
        key = f"probe-{secrets.token_hex(8)}"
        try:
            await self._conn.execute(insert(MetaRow).values(key=key, value=""))
            await self._conn.commit()
            try:
                await other._conn.rollback()
                found = (await other._conn.execute(
                    select(MetaRow.value).where(MetaRow.key == key))).first()
                await other._conn.rollback()
            finally:
                await self._conn.execute(delete(MetaRow).where(MetaRow.key == key))
                await self._conn.commit()
        except (DBAPIError, SQLAlchemyError) as exc:
            raise CassetteError(f"{self.path}: write failed: {self._describe(exc)}") from None
        return found is not None

    async def close(self) -> None:
        """Close. A cassette `open_for_recording` created that holds no interaction is
        removed, with the directories made for it, if it is still the file created (on a
        store: if no other recorder holds it)."""
        try:
            empty = bool(self._created) and self._still_ours() and not await self._holds_any()
            if self._created_schema and self._schema is not None:
                try:
                    await postgres.drop_if_alone_and_empty(self._conn, self._schema)
                except SQLAlchemyError:
                    pass  # when in doubt, a cassette is kept
        finally:
            try:
                await self._conn.close()
            finally:
                await self._engine.dispose()
        if empty:
            _remove(self._created[:1], self._created[1:])

    async def finish_recording(self) -> None:
        """Leave the cassette as one self-contained file (call before `close`)."""
        if self.location is not None:
            return  # a store's cassette is complete at every commit
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
        if not isinstance(self.path, Path):
            return False
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def _check_still_there(self) -> None:
        """SQLite keeps writing into a file deleted or replaced under it, where nobody will
        ever read it: stop instead, loudly."""
        if self._identity is not None and not self._still_ours():
            assert isinstance(self.path, Path)
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

    def peek_next_id(self) -> int:
        """The id `allocate_id` will give next (a writer process tells its proxy)."""
        return self._next_id

    def allocate_id(self) -> int:
        """Number the next interaction without touching the database (hot path). The
        stored id is the database's, given when the start is written (`stored_id`)."""
        allocated = self._next_id
        self._next_id += 1
        return allocated

    def stored_id(self, allocated: int) -> int:
        """The id the database gave the interaction `allocate_id` numbered (once its
        start is written; the same number unless another writer took that one)."""
        return self._ids.get(allocated, allocated)

    async def write(self, batch: WriteBatch) -> None:
        """Write one batch in one transaction."""
        self._check_still_there()
        conn = self._conn
        if (self._schema is None and (batch.chunks or batch.runs)
                and not (batch.starts or batch.heads or batch.ends)
                and not self._ids and not conn.in_transaction()):
            try:  # chunks alone, the flood's batches: straight to the driver
                await sqlite.insert_and_commit(conn, ChunkRow.__tablename__, CHUNK_COLUMNS,
                                               _blocks(batch))
            except sqlite.DriverError as exc:
                raise CassetteError(f"{self.path}: write failed: {sqlite.describe(exc)}"
                                    ) from exc
            return
        try:
            if batch.starts:
                given = (await conn.execute(
                    insert(InteractionRow).returning(
                        InteractionRow.id, sort_by_parameter_order=True),
                    [
                        {
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
                )).scalars().all()
                for start, stored in zip(batch.starts, given, strict=True):
                    if stored != start.id:
                        self._ids[start.id] = stored
            if self._ids:  # another writer took some numbers: write the stored ids
                batch = self._translated(batch)
            elif self._schema is not None and not (batch.starts or batch.heads):
                await conn.exec_driver_sql("SELECT 1")  # begin: COPY joins this transaction
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
            if batch.chunks or batch.runs:
                await self._insert_many(ChunkRow.__tablename__, CHUNK_COLUMNS, _blocks(batch))
            for end in batch.ends:
                await conn.execute(
                    update(InteractionRow)
                    .where(InteractionRow.id == end.id)
                    .values(
                        complete=end.complete,
                        end_reason=outcome_on_disk(end.outcome),
                        end_offset_ns=end.end_offset_ns,
                        error=end.error,
                        event_count=end.event_count,
                    )
                )
            await conn.commit()
        except DBAPIError as exc:
            try:  # nothing of the batch stays
                await conn.rollback()
            except DBAPIError:
                pass  # the connection is gone: so is the transaction
            raise CassetteError(f"{self.path}: write failed: {self._describe(exc)}") from exc

    def _translated(self, batch: WriteBatch) -> WriteBatch:
        """`batch` with allocated numbers replaced by stored ids (the starts are written)."""
        ids = self._ids
        return WriteBatch(
            starts=[],
            heads=[HeadUpdate(ids.get(h.id, h.id), h.head, h.head_offset_ns, h.is_sse)
                   for h in batch.heads],
            chunks=[(ids.get(i, i), seq, ns, data) for i, seq, ns, data in batch.chunks],
            runs=[(ids.get(i, i), seq, offsets, datas)
                  for i, seq, offsets, datas in batch.runs],
            ends=[replace(e, id=ids.get(e.id, e.id)) for e in batch.ends],
        )

    async def _insert_many(
        self, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
    ) -> None:
        schema = self._schema
        if schema is None:
            await sqlite.insert_many(self._conn, table, columns, rows)
        else:
            await postgres.insert_many(self._conn, schema, table, columns, rows)

    def _describe(self, exc: BaseException) -> str:
        location = self.location
        if location is None:
            return sqlite.describe(exc)
        return postgres.describe(exc, location)

    # -- reading -------------------------------------------------------------------------

    async def interactions(self) -> list[Interaction]:
        """Every interaction, checked: its own values, and (by one SQL screen in the same
        query) the storage class and range of every value of its chunks and events."""
        return await self._interactions(None, count=True)

    async def interaction(self, interaction_id: int, *, count: bool = True) -> Interaction:
        found = await self._interactions(interaction_id, count=count)
        if not found:
            raise CassetteError(f"{self.path}: no interaction {interaction_id}")
        return found[0]

    async def _interactions(self, only: int | None, *, count: bool) -> list[Interaction]:
        """`count`: an event stream with no event count stored gets one from its chunks
        (`events` does not ask: it derives the events themselves)."""
        version = self.version
        chunk_count = (func.sum(func.coalesce(ChunkRow.count, 1)) if version >= 2
                       else func.count())
        chunk_stats = select(
            ChunkRow.interaction_id.label("iid"),
            chunk_count.label("n"),
            func.coalesce(func.sum(func.length(ChunkRow.data)), 0).label("size"),
            self._screened(_CHUNKS),
        )
        event_stats = select(
            EventRow.interaction_id.label("iid"),
            func.sum(case((EventRow.kind == "event", 1), else_=0)).label("n"),
            self._screened(_EVENTS),
        )
        if only is not None:  # one interaction: aggregate its rows only, not every table's
            chunk_stats = chunk_stats.where(ChunkRow.interaction_id == only)
            event_stats = event_stats.where(EventRow.interaction_id == only)
        chunks = chunk_stats.group_by(ChunkRow.interaction_id).subquery()
        events = event_stats.group_by(EventRow.interaction_id).subquery()
        query = (
            select(
                *_raw(_INTERACTION, version),
                func.coalesce(chunks.c.n, 0).label("chunk_count"),
                func.coalesce(chunks.c.size, 0).label("body_size"),
                func.coalesce(events.c.n, 0).label("event_rows"),
                func.coalesce(chunks.c.bad, 0).label("bad_chunks"),
                func.coalesce(events.c.bad, 0).label("bad_events"),
            )
            .outerjoin(chunks, chunks.c.iid == InteractionRow.id)
            .outerjoin(events, events.c.iid == InteractionRow.id)
            .order_by(InteractionRow.id)
        )
        if only is not None:
            query = query.where(InteractionRow.id == only)
        if not self.in_progress:
            query = query.where(InteractionRow.end_reason.is_not(None))
        found = []
        for row in await self._read(query):
            interaction = rows.interaction(row._mapping, self.path)
            if row.bad_chunks:
                await self._first_bad(_CHUNKS, interaction.id)
            if row.bad_events:
                await self._first_bad(_EVENTS, interaction.id)
            if (count and row.event_count is None and not row.event_rows
                    and interaction.is_sse and interaction.chunk_count):
                # no count stored (not ended, or a writer that gave none): count its chunks
                interaction = replace(interaction, event_count=await self._count(interaction))
            found.append(interaction)
        return found

    def _screened(self, table: Any) -> Any:
        """How many rows break a rule, by SQL (see `rows.screen`): on SQLite, where a column
        holds any value; PostgreSQL's typed columns cannot, and `check` runs on each read."""
        if self.location is not None:
            return literal(0).label("bad")
        return func.sum(case((rows.screen(table, self.version), 1), else_=0)).label("bad")

    async def _first_bad(self, table: Any, interaction_id: int) -> None:
        """Raise the CassetteError that the first row the screen flagged deserves."""
        (row,) = await self._read(
            select(*_raw(table, self.version))
            .where(table.c.interaction_id == interaction_id, rows.screen(table, self.version))
            .limit(1)
        )
        if table is _CHUNKS:
            rows.chunks([tuple(row)[1:]], self.path, interaction_id)
        else:
            rows.event(row._mapping, self.path, interaction_id)

    async def chunks(self, interaction_id: int, start_seq: int = 0) -> AsyncIterator[Chunk]:
        """Stream an interaction's chunks in order, a page of rows at a time, each one
        checked; from `start_seq` on (the block holding it is read from its start)."""
        columns = _raw(_CHUNKS, self.version)[1:]  # seq, offset_ns, data, count, offsets, sizes
        first_row = start_seq
        if start_seq and self.version >= 2:
            first_row = (await self._read(
                select(func.coalesce(func.max(ChunkRow.seq), 0))
                .where(ChunkRow.interaction_id == interaction_id, ChunkRow.seq <= start_seq)
            ))[0][0]
        condition = ChunkRow.seq >= first_row
        limit, seen_rows, seen_bytes = FIRST_PAGE, 0, 0
        following, first_of_block = -1, -1  # the seq after the last chunk read (no row may
        # start before it), and where the run of chunks it ends began
        while True:
            page = await self._read(
                select(*columns)
                .where(ChunkRow.interaction_id == interaction_id, condition)
                .order_by(ChunkRow.seq)
                .limit(limit)
            )
            for chunk in rows.chunks(page, self.path, interaction_id):
                if chunk.seq < following:
                    raise CassetteError(
                        f"{self.path}: damaged cassette: interaction {interaction_id}, chunk "
                        f"{chunk.seq}: starts inside the block of chunks {first_of_block} to "
                        f"{following - 1}")
                if chunk.seq != following:
                    first_of_block = chunk.seq
                following = chunk.seq + 1
                if chunk.seq >= start_seq:
                    yield chunk
            if len(page) < limit:
                return
            condition = ChunkRow.seq > page[-1][0]
            seen_rows += len(page)
            seen_bytes += sum(len(row[2]) if type(row[2]) is bytes else 0 for row in page)
            limit = max(1, min(CHUNK_PAGE, PAGE_BYTES * seen_rows // max(seen_bytes, 1)))

    async def events(self, interaction_id: int) -> list[RecordedEvent]:
        """The events stored as rows (v1), or else derived from the chunks (v2)."""
        found = await self._read(
            select(*_raw(_EVENTS))
            .where(EventRow.interaction_id == interaction_id)
            .order_by(EventRow.seq)
        )
        if found:
            return [rows.event(r._mapping, self.path, interaction_id) for r in found]
        interaction = await self.interaction(interaction_id, count=False)
        if not interaction.chunk_count:
            return []
        headers = interaction.response.headers if interaction.response is not None else ()
        deriver = Deriver(interaction.is_sse, headers)
        async for chunk in self.chunks(interaction.id):
            deriver.feed(chunk)
        return deriver.finish()

    async def _count(self, interaction: Interaction) -> int:
        """An event stream's events, counted from its chunks without building them."""
        counter = EventCounter()
        async for chunk in self.chunks(interaction.id):
            counter.feed(chunk.data)
        return counter.events

    async def _read(self, query: Any) -> Sequence[Any]:
        try:
            return (await self._conn.execute(query)).all()
        except DBAPIError as exc:
            raise CassetteError(
                f"{self.path}: damaged cassette: {self._describe(exc)}"
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
        remove_sqlite_file(file)
    for directory in dirs:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty, or not ours to remove: neither are its parents


def _create(connection: Any, schema: str | None) -> None:
    """An empty database (or PostgreSQL schema) becomes a new cassette: the tables of the
    head revision, then the format's `cassette_meta` rows."""
    migrate.upgrade(connection, schema, stamp_baseline=False)
    meta = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "created_at": str(time.time()),
        "created_by": f"sse-recorder {__version__}",
    }
    connection.execute(insert(MetaRow), [{"key": k, "value": v} for k, v in meta.items()])


def _upgrade(connection: Any, schema: str | None) -> None:
    """Bring a cassette about to be recorded into to the head revision (a v1 file from
    before Alembic is stamped as revision 0001 first)."""
    revision = migrate.current(connection, schema)
    if revision != migrate.HEAD:
        migrate.upgrade(connection, schema, stamp_baseline=revision is None)


async def open_store(
    target: str | Path | Location, name: str | None = None, *, record: bool = False,
    in_progress: bool | None = None,
) -> Cassette:
    """The one way commands open a cassette: a SQLite path, or a store URL with the
    cassette named in it (`?cassette=NAME`) or by `name`. `record`: create or append."""
    if record:
        return await Cassette.open_for_recording(target, name)
    return await Cassette.open(target, name, in_progress=in_progress)


@dataclass(frozen=True, slots=True)
class StoredCassette:
    name: str
    interactions: int


async def list_cassettes(target: str | Path | Location) -> list[StoredCassette]:
    """The cassettes of a store (a SQLite file holds one, named after the file)."""
    where = locate(target)
    if not isinstance(where, Location):
        async with await Cassette.open(where) as cassette:
            return [StoredCassette(where.name, len(await cassette.interactions()))]
    found = []
    for name in await stored_names(where):
        async with await Cassette.open(where.named(name), in_progress=False) as cassette:
            found.append(StoredCassette(name, len(await cassette.interactions())))
    return found


async def stored_names(location: Location) -> list[str]:
    """The names of the cassettes a store holds."""
    engine = postgres.engine(location.named(None)).execution_options(
        isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            return await postgres.cassettes(conn)
    except Exception as exc:  # the driver's and the network's errors alike
        raise CassetteError(
            f"{location.store}: cannot connect: {postgres.describe(exc, location)}") from None
    finally:
        await engine.dispose()

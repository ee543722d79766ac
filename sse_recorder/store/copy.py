"""`copy`: interactions from one cassette into another, on any two stores.

Everything goes through the public cassette API: the source is read like a replay reads it
(by default a PostgreSQL source gives its finalized interactions only), the destination is
written like a recording (created or appended to; new ids from the destination, in the
source's order). Bodies stream a page at a time, so a huge interaction never sits whole in
memory, and each destination batch is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sse_recorder.errors import CassetteError
from sse_recorder.model import Interaction
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
    open_store,
)
from sse_recorder.store.location import Location, same_file

BATCH_ROWS = 2048  # chunks per destination transaction (stored as one block row)
BATCH_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Copied:
    source_id: int
    id: int  # in the destination
    chunks: int
    body_size: int


async def copy(
    source: str | Path | Location, destination: str | Path | Location,
    ids: Sequence[int] = (), on_copied: Callable[[Copied], None] | None = None,
) -> list[Copied]:
    """Copy interactions `ids` (default: all) from `source` into `destination`."""
    async with await open_store(source) as src:
        chosen = await src.interactions()
        if ids:
            by_id = {i.id: i for i in chosen}
            missing = [n for n in ids if n not in by_id]
            if missing:
                raise CassetteError(f"{source}: no interaction {missing[0]}")
            chosen = [by_id[n] for n in dict.fromkeys(ids)]
        if source_is(src, destination):
            raise CassetteError(f"{destination}: is the source; copy into another cassette")
        dst = await open_store(destination, record=True)
        done: list[Copied] = []
        try:
            if await dst.reads_from(src):  # the source under another spelling: duplicated
                raise CassetteError(f"{destination}: is the source {source} under another "
                                    "name; copy into another cassette")
            for interaction in chosen:
                copied = await _one(src, dst, interaction)
                done.append(copied)
                if on_copied is not None:
                    on_copied(copied)
            await dst.finish_recording()
        finally:
            await dst.close()
    return done


def source_is(src: Cassette, destination: str | Path | Location) -> bool:
    """The same cassette by its name: the same URL or path, or the same file (a symlink, a
    hard link). Another spelling of the same server is found once both are open
    (`Cassette.reads_from`)."""
    if str(src.path) == str(destination):
        return True
    return (isinstance(src.path, Path) and isinstance(destination, str | Path)
            and "://" not in str(destination) and same_file(Path(destination), src.path))


async def _one(src: Cassette, dst: Cassette, i: Interaction) -> Copied:
    iid = dst.allocate_id()
    batch = WriteBatch(starts=[InteractionStart(iid, i.started_at, i.request)])
    if i.response is not None:
        batch.heads.append(HeadUpdate(iid, i.response, i.head_offset_ns or 0, i.is_sse))
    size = 0
    async for chunk in src.chunks(i.id):  # the events are derived from them when read
        batch.chunks.append((iid, chunk.seq, chunk.offset_ns, chunk.data))
        size += len(chunk.data)
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            await dst.write(batch)
            batch, size = WriteBatch(), 0
    batch.ends.append(EndUpdate(iid, i.complete, i.outcome, i.end_offset_ns, i.error,
                                i.event_count))
    await dst.write(batch)
    return Copied(i.id, dst.stored_id(iid), i.chunk_count, i.body_size)

"""Where replayed bodies come from: a memory cache for small ones, cassette pages for the rest.

Rules:
- a body up to CACHE_LIMIT bytes is read from the cassette once, on first use, and shared
  by every stream that plays it; a larger one streams a page (CHUNK_PAGE rows) at a time, so
  the first byte never waits for the whole file and memory stays flat;
- the play loops get lists (`pages`, `batches`, `paced`), so that their per-chunk loop is a
  plain `for` over a list; a cached body's paced writes (due time, wire bytes) are made once
  and shared, so a stream's loop makes no call per chunk but the write;
- a `Body` of None is the whole recorded body (the cacheable case); a list is a body
  already in memory (a resumed small one); an async iterator is a resumed large one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from sse_recorder.model import Chunk, Interaction, Outcome
from sse_recorder.replay.resume import Cut, resume
from sse_recorder.replay.schedule import Schedule, Timing
from sse_recorder.store.cassette import CHUNK_PAGE, Cassette

log = logging.getLogger("sse_recorder.replay")

CACHE_LIMIT = 8 << 20  # interactions with bodies up to this size are kept in memory
INSTANT_BATCH = 8 * 1024  # instant mode: bytes per write, then other streams take a turn

Body = list[Chunk] | AsyncIterator[Chunk] | None
Frame = Callable[[bytes], bytes] | None  # a body writer's `frame`: None sends pieces as is
Timed = list[tuple[float, bytes]]  # paced writes: (seconds from the start, wire bytes)


class Bodies:
    """The bodies of one cassette, as the play loops want them."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self._cache: dict[int, list[Chunk]] = {}
        # instant mode's writes by (interaction, frame), see `batches`: an HTTP/1.0 client
        # gets a chunked recording unframed
        self._batch_cache: dict[tuple[int, Frame], list[bytes]] = {}
        self._cache_locks: dict[int, asyncio.Lock] = {}
        # paced mode's writes and ending time by (interaction, frame, timing), see `paced`
        self._paced_cache: dict[tuple[int, Frame, Timing], tuple[Timed, float | None]] = {}

    async def cached(self, interaction: Interaction) -> list[Chunk]:
        """A small interaction's chunks, read from the cassette once and shared."""
        cached = self._cache.get(interaction.id)
        if cached is None:
            lock = self._cache_locks.setdefault(interaction.id, asyncio.Lock())
            async with lock:
                cached = self._cache.get(interaction.id)
                if cached is None:
                    cached = [c async for c in self.cassette.chunks(interaction.id)]
                    self._cache[interaction.id] = cached
        return cached

    async def pages(self, interaction: Interaction, body: Body) -> AsyncIterator[list[Chunk]]:
        """`body` in lists: one in memory at once, without a copy; otherwise a cassette page
        at a time."""
        if body is None and interaction.body_size <= CACHE_LIMIT:
            body = await self.cached(interaction)
        if isinstance(body, list):
            yield body
            return
        chunks = self.cassette.chunks(interaction.id) if body is None else body
        page: list[Chunk] = []
        async for chunk in chunks:
            page.append(chunk)
            if len(page) == CHUNK_PAGE:
                yield page
                page = []
        if page:
            yield page

    async def batches(
        self, interaction: Interaction, body: Body, frame: Frame
    ) -> AsyncIterator[list[bytes]]:
        """Instant mode's writes for `body`, in lists like `pages`. A cached body's are made
        once and shared by every stream (about the body's size again in memory)."""
        if body is None and interaction.body_size <= CACHE_LIMIT:
            batches = self._batch_cache.get((interaction.id, frame))
            if batches is None:
                batches = batched(await self.cached(interaction), frame)
                self._batch_cache[(interaction.id, frame)] = batches
            yield batches
            return
        async for page in self.pages(interaction, body):
            yield batched(page, frame)

    def paced_plan(
        self, interaction: Interaction, frame: Frame, timing: Timing
    ) -> tuple[Timed, float | None] | None:
        """`paced`'s answer when it is made already (a call, not a coroutine, per stream)."""
        return self._paced_cache.get((interaction.id, frame, timing))

    async def paced(
        self, interaction: Interaction, frame: Frame, timing: Timing
    ) -> tuple[Timed, float | None]:
        """A cached body's paced writes and when its recorded ending (a FIN, an RST) is due,
        on a schedule from the request's start; made once and shared by every stream (about
        the body's size again in memory)."""
        key = (interaction.id, frame, timing)
        plan = self._paced_cache.get(key)
        if plan is None:
            schedule = Schedule(timing)
            schedule.due(interaction.head_offset_ns or 0)  # the head is first on the schedule
            pieces = timed(await self.cached(interaction), schedule, frame)
            plan = pieces, ending_due(interaction, schedule)
            self._paced_cache[key] = plan
        return plan

    async def resume(
        self, interaction: Interaction, last_id: str
    ) -> tuple[Body, int, int] | None:
        """The body after the block whose id is `last_id` (see `resume.py`), the offset the
        schedule counts from and how many body bytes were skipped; None for an id the
        stream never set (the caller replays from the start). Decided by parsing the body:
        the events table has no row for an id-only block."""
        if interaction.body_size <= CACHE_LIMIT:
            resumed = resume(await self.cached(interaction), last_id)
            if resumed is not None:
                return resumed.chunks, resumed.origin_ns, resumed.skipped
        else:  # a large body is scanned a page at a time; not found, it is read again
            cut = Cut(last_id)
            chunks = self.cassette.chunks(interaction.id).__aiter__()
            async for chunk in chunks:
                first = cut.feed(chunk)
                if first is not None:
                    return _prepend(first, chunks), cut.origin_ns, cut.skipped
            first = cut.finish()
            if first is not None:
                return first, cut.origin_ns, cut.skipped
        log.info("Last-Event-ID %r is not in #%d: replaying from the start", last_id,
                 interaction.id)
        return None


def timed(chunks: Iterable[Chunk], schedule: Schedule, frame: Frame) -> Timed:
    """Paced writes: each chunk's due time on `schedule` (in order: with max_gap the
    schedule carries what it cut) and its wire bytes; empty chunks send nothing."""
    return [(schedule.due(c.offset_ns), frame(c.data) if frame is not None else c.data)
            for c in chunks if c.data]


def ending_due(interaction: Interaction, schedule: Schedule) -> float | None:
    """When the recorded ending is due after the body (on `schedule`, past every chunk):
    only a FIN or RST has a time of its own; a clean end follows the last chunk."""
    if interaction.end_offset_ns is None or interaction.outcome is Outcome.CLEAN:
        return None
    return schedule.due(interaction.end_offset_ns)


def batched(chunks: list[Chunk], frame: Frame) -> list[bytes]:
    """Instant mode's writes: chunks framed and joined up to INSTANT_BATCH bytes, so that a
    stream costs one send per batch rather than one per chunk."""
    batches: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        if chunk.data:
            batch.append(frame(chunk.data) if frame is not None else chunk.data)
            size += len(batch[-1])
            if size >= INSTANT_BATCH:
                batches.append(b"".join(batch))
                batch.clear()
                size = 0
    if batch:
        batches.append(b"".join(batch))
    return batches


async def _prepend(first: list[Chunk], rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk

"""The writer side of a recording: queued items in, redacted rows out, one transaction per batch.

The proxy side (`record.session`) only stamps and queues; everything costly happens here:
every value goes through the one redaction step (`record.redact`): the request, the
response head, the body (decoded if compressed, redacted, its events counted but not built:
`record.body`) and the error text; nothing reaches a batch otherwise.

A `Writer` runs either as a task on the proxy's own loop or in a process of its own
(`record.child`); it sees the same items either way. The session numbers interactions with
tokens and the writer gives each its cassette id when its BEGIN is written, so the proxy
never waits on the store. ACK items carry the session's frame numbers: after each commit
the writer reports the last one it passed, and everything queued before it is on disk.
A batch is cut by count and by body size, so one transaction stays a few ms of work,
and a small one that ends nothing waits up to BATCH_DELAY_S for more frames.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import accumulate, islice

from sse_recorder.framing.registry import dialect_for
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.record.body import Body
from sse_recorder.record.items import (
    ACK,
    BEGIN,
    END,
    FLUSH,
    HEAD,
    RUN,
    STOP,
    Commit,
    Item,
    Recorded,
)
from sse_recorder.record.redact import (
    RedactionRules,
    Scrubber,
    content_codings,
    decode_body,
    without_coding,
)
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)

log = logging.getLogger(__name__)

MAX_BATCH = 2048  # items per transaction: ~2 ms of work, so the writer answers promptly
MAX_BATCH_BYTES = 256 * 1024  # body bytes per transaction: a flood's 64 KiB reads are ~600 rows
# A frame costs the writer ~0.6 ms of CPU whatever it holds (its reading, a handoff to the
# driver's thread and back, the commit), as much as ~500 one-event chunks: a batch short of
# BATCH_WAIT_ITEMS and of BATCH_WAIT_BYTES waits up to this long for more frames, unless
# what it holds ends something (END, FLUSH, STOP: someone may be waiting on it). A flood's
# 25 ms frames (~1,000 one-event chunks each) are written two to a transaction, which costs
# what 2,048-chunk frames did (measured on the writer process alone, fed frames as a flood's
# proxy sends them: 1.5-1.65 against 1.6 us of CPU per event; one frame to a transaction
# cost ~0.3 us more). A quiet stream's chunks are committed this much later, a few frames to
# a transaction; a batch of big chunks (64 KiB reads) is worth its transaction at once.
BATCH_DELAY_S = 0.025
BATCH_WAIT_ITEMS = 1024
BATCH_WAIT_BYTES = 64 * 1024

_NO_WAIT = frozenset({END, FLUSH, STOP})  # a batch holding one of these is written at once


@dataclass(slots=True)
class _Open:
    """Writer-side facts about an open interaction."""

    id: int
    method: str
    url: str  # redacted
    scrub: Scrubber  # the rules plus what its request taught (an echo is found too)
    head: ResponseHead | None = None  # as stored
    head_offset_ns: int = 0
    is_sse: bool = False


class Writer:
    """Drains `queue` into `cassette`. Reports each commit to `on_commit` and the first
    storage failure to `on_failure`; after a failure it keeps draining without writing."""

    def __init__(
        self,
        cassette: Cassette,
        rules: RedactionRules,
        on_commit: Callable[[Commit], None],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self.cassette = cassette
        self.rules = rules
        self.on_commit = on_commit
        self.on_failure = on_failure
        self.failed = False
        self.queue: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        self._bodies: dict[int, Body] = {}  # by token
        self._interactions: dict[int, _Open] = {}  # by token
        self._recorded: list[Recorded] = []  # ended in the batch being written

    def feed(self, items: list[Item]) -> None:
        self.queue.extend(items)
        self._wakeup.set()

    def open_tokens(self) -> list[int]:
        """Interactions begun and not ended (what a proxy that died left open), queued ones
        included."""
        tokens = dict.fromkeys(self._interactions)
        for item in self.queue:
            if item[0] == BEGIN:
                tokens[item[1]] = None
            elif item[0] == END:
                tokens.pop(item[1], None)
        return list(tokens)

    async def run(self) -> None:
        """Drain the queue in batches until STOP. Writing is not overlapped with preparing
        the next batch on purpose: sqlite3 takes the GIL back for every row, so overlapping
        makes both sides wait on the GIL (measured: 20% slower)."""
        queue = self.queue
        stopping = False
        while not stopping:
            while not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill()
            items, commit, stopping = self._take()
            batch = WriteBatch()
            self._apply(items, batch)
            if not self.failed and len(batch):
                await self._write(batch)
                if not self.failed:
                    commit.chunks = batch.chunk_count()
            recorded, self._recorded = self._recorded, []
            stored_id = self.cassette.stored_id  # the database's id, once the start is written
            commit.recorded = [replace(r, id=stored_id(r.id)) for r in recorded]
            self.on_commit(commit)

    async def finish(self) -> None:
        """After `run`: leave the cassette one whole file (unless storage failed), close it."""
        try:
            if not self.failed:
                await self.cassette.finish_recording()
        finally:
            await self.cassette.close()

    async def _fill(self) -> None:
        """Let the next batch grow for up to BATCH_DELAY_S (see there)."""
        if self._full():
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(BATCH_DELAY_S, self._wakeup.set)
        try:
            while True:
                self._wakeup.clear()
                await self._wakeup.wait()
                if loop.time() >= timer.when() or self._full():
                    return
        finally:
            timer.cancel()

    def _full(self) -> bool:
        """Whether the queue holds enough for a batch not to wait (BATCH_WAIT_ITEMS items,
        counted as `_take` counts them, or BATCH_WAIT_BYTES), or an item that ends something."""
        count = size = 0
        for item in self.queue:
            kind = item[0]
            if kind == RUN:
                count += len(item[3])
                size += sum(map(len, item[3]))
            elif kind in _NO_WAIT:
                return True
            elif kind != ACK:
                count += 1
            if count >= BATCH_WAIT_ITEMS or size >= BATCH_WAIT_BYTES:
                return True
        return False

    def _take(self) -> tuple[list[Item], Commit, bool]:
        """The next batch: up to MAX_BATCH chunks and other items, or MAX_BATCH_BYTES of
        body (a run is cut there), or up to a FLUSH or STOP; ACKs passed on the way are
        reported with it."""
        queue = self.queue
        items: list[Item] = []
        commit = Commit(None)
        append, pop = items.append, queue.popleft
        count = size = 0
        while queue and count < MAX_BATCH and size < MAX_BATCH_BYTES:
            item = pop()
            kind = item[0]
            if kind == RUN:
                datas = item[3]
                total = sum(map(len, datas))
                if (count + len(datas) > MAX_BATCH
                        or size + total - len(datas[-1]) >= MAX_BATCH_BYTES):
                    # as many as fit: up to the item limit, and up to the chunk that reaches
                    # the byte limit (one chunk at least)
                    sizes = list(accumulate(map(len, islice(datas, MAX_BATCH - count))))
                    fit = min(len(sizes), bisect_left(sizes, MAX_BATCH_BYTES - size) + 1)
                    queue.appendleft((RUN, item[1], item[2][fit:], datas[fit:]))
                    item = (RUN, item[1], item[2][:fit], datas[:fit])
                    total = sizes[fit - 1]
                count += len(item[3])
                size += total
            elif kind == ACK:
                commit.acked = item[1]
                continue
            elif kind == FLUSH:
                commit.flushed.append(item[1])
                break
            elif kind == STOP:
                return items, commit, True
            else:
                count += 1
            append(item)
        while queue and queue[0][0] == ACK:  # an ACK right behind the batch is passed too
            commit.acked = pop()[1]
        return items, commit, False

    async def _write(self, batch: WriteBatch) -> None:
        try:
            await self.cassette.write(batch)
        except Exception as exc:  # noqa: BLE001 - any storage failure must stop recording
            self.failed = True
            self.on_failure(exc)

    def _apply(self, items: list[Item], batch: WriteBatch) -> None:
        """Turn queued items into redacted rows. Each body's chunks in the batch are fed
        together (interleaved streams too): only the order within one interaction matters,
        so its chunks are fed before its end, and a head always precedes its chunks."""
        pending: dict[int, tuple[list[int], list[bytes]]] = {}
        for item in items:
            kind = item[0]
            if kind == RUN:
                run = pending.get(item[1])
                if run is None:
                    pending[item[1]] = (item[2], item[3])
                else:
                    run[0].extend(item[2])
                    run[1].extend(item[3])
            elif kind == BEGIN:
                self._begin(item, batch)
            elif kind == HEAD:
                self._head(item, batch)
            elif kind == END:
                run = pending.pop(item[1], None)
                if run is not None:
                    self._feed(item[1], *run, batch)
                self._end(item, batch)
        for token, (offsets, datas) in pending.items():
            self._feed(token, offsets, datas, batch)

    def _begin(self, item: Item, batch: WriteBatch) -> None:
        """The request redacted (a compressed body decoded for it, and stored decoded if
        that changed it); what it taught the redaction is kept for its response."""
        _, token, started_at, request = item
        base = self.rules.scrubber()
        codings = content_codings(request.headers) if request.body else []
        decoded = decode_body(request.body, codings) if codings else None
        stored, scrub = base.request(request, decoded)
        if decoded is not None:
            if stored.body == decoded:  # nothing to hide: the body as sent
                stored = RecordedRequest(stored.method, stored.url, stored.headers,
                                         request.body, stored.http_version)
            else:
                stored = RecordedRequest(stored.method, stored.url,
                                         without_coding(stored.headers, len(stored.body)),
                                         stored.body, stored.http_version)
        iid = self.cassette.allocate_id()
        self._interactions[token] = _Open(iid, stored.method, stored.url, scrub)
        batch.starts.append(InteractionStart(iid, started_at, stored))

    def _head(self, item: Item, batch: WriteBatch) -> None:
        """The head redacted; an event stream with a content coding is stored decoded (its
        chunks are parsed and redacted as text), so its head loses the coding."""
        _, token, offset_ns, head, is_sse = item
        state = self._interactions.get(token)
        if state is None:
            return
        headers = state.scrub.headers(head.headers)
        codings = content_codings(head.headers)
        if codings is None:
            codings = []  # a coding not decodable here: stored as received
        elif codings and is_sse:
            headers = without_coding(headers, None)
        dialect = None if is_sse else dialect_for(head.headers)  # NDJSON, AWS event stream...
        head = ResponseHead(head.status, state.scrub.string(head.reason), headers,
                            head.http_version)
        state.head, state.head_offset_ns, state.is_sse = head, offset_ns, is_sse
        self._bodies[token] = Body(state.id, state.scrub, is_sse, codings, dialect)
        batch.heads.append(HeadUpdate(state.id, head, offset_ns, is_sse))

    def _feed(self, token: int, offsets: list[int], datas: list[bytes], batch: WriteBatch
              ) -> None:
        body = self._bodies.get(token)
        if body is None:  # the interaction already ended: nothing may follow its end
            log.debug("sse-recorder: %d chunks after the end of #%d dropped", len(datas), token)
            return
        body.feed(offsets, datas, batch)

    def _end(self, item: Item, batch: WriteBatch) -> None:
        _, token, offset_ns, reason, error, check_truncation = item
        state = self._interactions.pop(token, None)
        body = self._bodies.pop(token, None)
        if state is None:
            return
        if body is not None:
            mid_event = body.finish(batch)
            if check_truncation and mid_event and reason is Outcome.CLEAN:
                reason = Outcome.CLOSED
                error = "connection closed in the middle of an event"
            if body.decoded_size is not None and state.head is not None:
                # stored decoded: the head must not claim the coding (nor its length)
                head = state.head
                size = body.decoded_size if reason is Outcome.CLEAN else body.decoded_size + 1
                head = ResponseHead(head.status, head.reason,
                                    without_coding(head.headers, size), head.http_version)
                batch.heads.append(HeadUpdate(state.id, head, state.head_offset_ns,
                                              state.is_sse))
        if error is not None:
            error = state.scrub.string(error)
        complete = reason is Outcome.CLEAN
        counted = body.counter if body is not None else None
        batch.ends.append(EndUpdate(state.id, complete, reason, offset_ns, error,
                                    counted.events if counted is not None else 0))
        counts = (body.events, body.next_stored, body.stored_size) if body else (0, 0, 0)
        self._recorded.append(Recorded(
            state.id, state.method, state.url, state.head.status if state.head else None,
            *counts, duration_ns=offset_ns, outcome=reason, error=error,
        ))

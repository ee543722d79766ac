"""Turn live traffic into cassette rows, off the proxy's hot path. Knows nothing of mitmproxy.

The proxy calls `begin`, `head`, `chunk` and `end` synchronously; each only queues (a few
microseconds). A single writer task drains the queue in batches and writes one transaction
per batch. Between the queue and the batch, every value goes through the one redaction step
(`record.redact`): the request, the response head, the body (decoded if compressed, redacted,
then parsed into events: `record.body`) and the error text; nothing reaches a batch otherwise.

Loss on a crash is bounded by time: a batch is cut by size as well as by count (so one
transaction is a few ms of work when the writer has the CPU), and the writer keeps
`backlog_since_ns`, when the oldest uncommitted data may have been queued. The proxy checks
it after each chunk: past `LAG_HIGH_NS` it stops reading from that upstream and marks the
session `congested`; once a commit brings the lag under `LAG_LOW_NS`, `on_congestion(False)`
lets it read again. So the backlog, what a `kill -9` loses, stays near LAG_HIGH_NS at any
rate the proxy can forward: a flood is slowed to what the writer can store.
A storage failure is reported once through `on_failure`, so the shell can stop the proxy
instead of passing traffic unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.model import is_event_stream as _is_event_stream
from sse_recorder.record.body import Body
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

MAX_BATCH = 1024  # items per transaction: ~6 ms of work, so the proxy loop is never held long
MAX_BATCH_BYTES = 256 * 1024  # body bytes per transaction: a flood's 64 KiB reads are ~600 rows
LAG_HIGH_NS = 100_000_000  # uncommitted data this old: congested (stop reading upstreams)
LAG_LOW_NS = 50_000_000  # back under this after a commit: no longer congested
NO_BACKLOG = 1 << 62  # `backlog_since_ns` when everything is committed


@dataclass(frozen=True, slots=True)
class Recorded:
    """One interaction as committed to the cassette: what `sse-recorder record` prints a
    line for."""

    id: int
    method: str
    url: str  # as stored (redacted)
    status: int | None  # None: no response head
    events: int
    chunks: int
    body_size: int
    duration_ns: int | None  # end offset
    outcome: Outcome
    error: str | None  # e.g. mitmproxy's upstream error text (certificate, connection refused)


@dataclass(frozen=True)
class RecorderConfig:
    redaction: RedactionRules = field(default_factory=RedactionRules)
    # Called on the session's loop once the batch holding an interaction's end is committed.
    on_recorded: Callable[[Recorded], None] | None = None


@dataclass(slots=True)
class _Open:
    """Writer-side facts about an open interaction."""

    method: str
    url: str  # redacted
    scrub: Scrubber  # the rules plus what its request taught (an echo is found too)
    head: ResponseHead | None = None  # as stored
    head_offset_ns: int = 0
    is_sse: bool = False


_BEGIN, _HEAD, _CHUNK, _END, _STOP, _MARK, _FLUSH = range(7)


class RecordingSession:
    """One cassette being recorded. Create, `await start()`, feed it, `await close()`."""

    def __init__(
        self,
        cassette_path: str,
        config: RecorderConfig | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        on_congestion: Callable[[bool], None] | None = None,
    ) -> None:
        self.cassette_path = cassette_path
        self.config = config or RecorderConfig()
        self.on_failure = on_failure
        self.failure: Exception | None = None
        # A deque and an Event rather than asyncio.Queue: appending is the hot path, and
        # Queue.put_nowait costs ~2 us against ~0.1 us.
        self._queue: deque[tuple] = deque()
        self._wakeup = asyncio.Event()
        self._writer_idle = False
        self._cassette: Cassette | None = None
        self._writer: asyncio.Task[None] | None = None
        self._open: set[int] = set()  # interactions begun and not ended (hot-path view)
        self._bodies: dict[int, Body] = {}  # writer-side state
        self._interactions: dict[int, _Open] = {}
        self._recorded: list[Recorded] = []  # ended in the batch being written
        self.chunks_written = 0
        self.on_congestion = on_congestion
        # The oldest uncommitted item was queued no earlier than this (monotonic ns; an
        # upper bound on its age, kept by the writer): the proxy compares it with its clock
        # after each chunk, and past LAG_HIGH_NS stops reading and sets `congested`.
        self.backlog_since_ns = NO_BACKLOG
        self.congested = False
        self.max_lag_ns = 0  # the oldest data a commit held (for benchmarks)

    async def start(self) -> None:
        """Open (or create) the cassette; raises CassetteError before any traffic flows."""
        self._cassette = await Cassette.open_for_recording(self.cassette_path)
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="sse-recorder")

    # -- hot path: stamp and queue, nothing else -----------------------------------------

    def begin(self, request: RecordedRequest, started_at: float) -> int:
        assert self._cassette is not None, "start() first"
        iid = self._cassette.allocate_id()
        self._open.add(iid)
        self._put((_BEGIN, iid, started_at, request))
        return iid

    def head(self, iid: int, head: ResponseHead, offset_ns: int) -> bool:
        """Record the response head; returns whether the body is an event stream."""
        is_sse = _is_event_stream(head.headers)
        self._put((_HEAD, iid, offset_ns, head, is_sse))
        return is_sse

    def chunk(self, iid: int, offset_ns: int, data: bytes) -> None:
        self._put((_CHUNK, iid, offset_ns, data))

    def _put(self, item: tuple) -> None:
        self._queue.append(item)
        if self._writer_idle:
            self._writer_idle = False
            self.backlog_since_ns = time.monotonic_ns()
            self._wakeup.set()

    def end(
        self,
        iid: int,
        reason: Outcome,
        offset_ns: int | None,
        error: str | None = None,
        *,
        check_truncation: bool = False,
    ) -> None:
        """Finalize an interaction. With `check_truncation` (a close-delimited body, whose
        framing cannot show truncation) a stream ending mid-event counts as closed early."""
        if iid in self._open:
            self._open.discard(iid)
            self._put((_END, iid, offset_ns, reason, error, check_truncation))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; the next item starts a new
        batch (tests use it to put a boundary exactly there)."""
        if self._writer is None or self._writer.done():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put((_FLUSH, done))
        await done

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Mark open interactions as stopped, write everything queued, close the file."""
        if self._cassette is None:
            return
        for iid in list(self._open):
            self.end(iid, Outcome.STOPPED, None, "recording stopped")
        self._put((_STOP,))
        if self._writer is not None:
            await self._writer
        cassette, self._cassette = self._cassette, None
        try:
            if self.failure is None:
                await cassette.finish_recording()
        finally:
            await cassette.close()

    # -- the writer ----------------------------------------------------------------------

    async def _run(self) -> None:
        """Drain the queue in batches, one transaction each. Writing is not overlapped with
        preparing the next batch on purpose: sqlite3 takes the GIL back for every row, so
        overlapping makes both sides wait on the GIL (measured: 20% slower)."""
        queue = self._queue
        stopping = False
        while not stopping:
            while not queue:
                self.backlog_since_ns = NO_BACKLOG  # everything is committed
                self._congestion(False)
                self._wakeup.clear()
                self._writer_idle = True
                await self._wakeup.wait()
            taken_at = time.monotonic_ns()
            items, flushed, since = self._take(taken_at)
            batch = WriteBatch()
            stopping = self._apply(items, batch)
            if self.failure is None and len(batch):
                await self._write(batch)
            committed_at = time.monotonic_ns()
            self.max_lag_ns = max(self.max_lag_ns, committed_at - self.backlog_since_ns)
            if since is not None:  # what is still uncommitted was queued after `since`
                self.backlog_since_ns = since
            if self.congested and committed_at - self.backlog_since_ns < LAG_LOW_NS:
                self._congestion(False)
            for done in flushed:
                if not done.done():
                    done.set_result(None)
            if self._recorded:
                recorded, self._recorded = self._recorded, []
                if self.failure is None:
                    self._report(recorded)

    def _take(self, taken_at: int) -> tuple[list[tuple], list[asyncio.Future[None]], int | None]:
        """The next batch: up to MAX_BATCH items or MAX_BATCH_BYTES of body, or up to a
        flush; and when what stays queued once it is committed was queued at the earliest:
        `taken_at` if it takes everything, else the time of the last mark it passes (a mark
        is queued behind what a batch leaves; None: no mark passed)."""
        queue = self._queue
        items: list[tuple] = []
        flushed: list[asyncio.Future[None]] = []
        append, pop = items.append, queue.popleft
        size = 0
        since: int | None = None
        while queue and len(items) < MAX_BATCH and size < MAX_BATCH_BYTES:
            item = pop()
            kind = item[0]
            if kind == _CHUNK:
                size += len(item[3])
            elif kind == _FLUSH:
                flushed.append(item[1])
                break
            elif kind == _MARK:
                since = item[1]
                continue
            append(item)
        if not queue:
            return items, flushed, taken_at
        queue.append((_MARK, taken_at))
        return items, flushed, since

    def _report(self, recorded: list[Recorded]) -> None:
        callback = self.config.on_recorded
        if callback is None:
            return
        for item in recorded:
            try:
                callback(item)
            except Exception:  # noqa: BLE001 - a display hook must not stop the recording
                log.exception("sse-recorder: on_recorded failed")

    def _congestion(self, congested: bool) -> None:
        if congested is self.congested:
            return
        self.congested = congested
        if self.on_congestion is not None:
            try:
                self.on_congestion(congested)
            except Exception:  # noqa: BLE001 - the proxy's business; recording goes on
                log.exception("sse-recorder: on_congestion failed")

    async def _write(self, batch: WriteBatch) -> None:
        assert self._cassette is not None
        try:
            await self._cassette.write(batch)
            self.chunks_written += len(batch.chunks)
        except Exception as exc:  # noqa: BLE001 - any storage failure must stop recording
            self.failure = exc
            log.error("sse-recorder: cannot write %s: %s", self.cassette_path, exc)
            if self.on_failure is not None:
                self.on_failure(exc)

    def _apply(self, items: list[tuple], batch: WriteBatch) -> bool:
        """Turn queued items into redacted rows. Each body's chunks in the batch are fed
        together (interleaved streams too): only the order within one interaction matters,
        so its chunks are fed before its end, and a head always precedes its chunks."""
        pending: dict[int, list[tuple[int, bytes]]] = {}
        stopping = False
        for item in items:
            kind = item[0]
            if kind == _CHUNK:
                chunks = pending.get(item[1])
                if chunks is None:
                    chunks = pending[item[1]] = []
                chunks.append((item[2], item[3]))
            elif kind == _BEGIN:
                self._begin(item, batch)
            elif kind == _HEAD:
                self._head(item, batch)
            elif kind == _END:
                chunks = pending.pop(item[1], None)
                if chunks:
                    self._feed(item[1], chunks, batch)
                self._end(item, batch)
            else:
                stopping = True
                break
        for iid, chunks in pending.items():
            self._feed(iid, chunks, batch)
        return stopping

    def _begin(self, item: tuple, batch: WriteBatch) -> None:
        """The request redacted (a compressed body decoded for it, and stored decoded if
        that changed it); what it taught the redaction is kept for its response."""
        _, iid, started_at, request = item
        base = self.config.redaction.scrubber()
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
        self._interactions[iid] = _Open(stored.method, stored.url, scrub)
        batch.starts.append(InteractionStart(iid, started_at, stored))

    def _head(self, item: tuple, batch: WriteBatch) -> None:
        """The head redacted; an event stream with a content coding is stored decoded (its
        chunks are parsed and redacted as text), so its head loses the coding."""
        _, iid, offset_ns, head, is_sse = item
        state = self._interactions.get(iid)
        if state is None:
            return
        headers = state.scrub.headers(head.headers)
        codings = content_codings(head.headers)
        if codings is None:
            codings = []  # a coding not decodable here: stored as received
        elif codings and is_sse:
            headers = without_coding(headers, None)
        head = ResponseHead(head.status, state.scrub.string(head.reason), headers,
                            head.http_version)
        state.head, state.head_offset_ns, state.is_sse = head, offset_ns, is_sse
        self._bodies[iid] = Body(iid, state.scrub, is_sse, codings)
        batch.heads.append(HeadUpdate(iid, head, offset_ns, is_sse))

    def _feed(self, iid: int, chunks: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        body = self._bodies.get(iid)
        if body is None:  # the interaction already ended: nothing may follow its end
            log.debug("sse-recorder: %d chunks after the end of #%d dropped", len(chunks), iid)
            return
        body.feed(chunks, batch)

    def _end(self, item: tuple, batch: WriteBatch) -> None:
        _, iid, offset_ns, reason, error, check_truncation = item
        state = self._interactions.pop(iid, None)
        body = self._bodies.pop(iid, None)
        if body is not None:
            mid_event = body.finish(batch)
            if check_truncation and mid_event and reason is Outcome.CLEAN:
                reason = Outcome.CLOSED
                error = "connection closed in the middle of an event"
            if body.decoded_size is not None and state is not None and state.head is not None:
                # stored decoded: the head must not claim the coding (nor its length)
                head = state.head
                size = body.decoded_size if reason is Outcome.CLEAN else body.decoded_size + 1
                head = ResponseHead(head.status, head.reason,
                                    without_coding(head.headers, size), head.http_version)
                batch.heads.append(HeadUpdate(iid, head, state.head_offset_ns, state.is_sse))
        if error is not None and state is not None:
            error = state.scrub.string(error)
        complete = reason is Outcome.CLEAN
        batch.ends.append(EndUpdate(iid, complete, reason, offset_ns, error))
        if state is not None:
            counts = (body.events, body.next_stored, body.stored_size) if body else (0, 0, 0)
            self._recorded.append(Recorded(
                iid, state.method, state.url, state.head.status if state.head else None,
                *counts, duration_ns=offset_ns, outcome=reason, error=error,
            ))

"""Turn live traffic into cassette rows, off the proxy's hot path. Knows nothing of mitmproxy.

The proxy calls `begin`, `head`, `chunk` and `end` synchronously; each only stamps and
queues (a few microseconds). A single writer task drains the queue in batches: it redacts,
parses SSE events, and writes one transaction per batch, so a commit follows new data by
one batch-write time (well under the 250 ms bound). A storage failure is reported once
through `on_failure`, so the shell can stop the proxy instead of passing traffic unrecorded.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sse_recorder.model import Outcome, RecordedEvent, RecordedRequest, ResponseHead, header_value
from sse_recorder.model import is_event_stream as _is_event_stream
from sse_recorder.record.redact import RedactionRules, StreamRedactor
from sse_recorder.sse import Comment, Item, SSEParser
from sse_recorder.store.cassette import (
    Cassette,
    EndUpdate,
    HeadUpdate,
    InteractionStart,
    WriteBatch,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1024  # items per transaction: ~6 ms of work, so the proxy loop is never held long


@dataclass(frozen=True)
class RecorderConfig:
    redaction: RedactionRules = field(default_factory=RedactionRules)


class _Body:
    """Per-interaction state in the writer: redaction, SSE parsing, chunk numbering."""

    def __init__(self, iid: int, rules: RedactionRules, is_sse: bool) -> None:
        self.iid = iid
        self.redactor = StreamRedactor(rules)
        self.rules = rules
        self.parser = SSEParser() if is_sse else None
        self.next_chunk = 0  # seq of the next raw chunk (in arrival order)
        self.next_stored = 0  # seq of the next chunk to store
        self.next_event = 0
        self.position = 0  # raw bytes seen
        self.chunk_starts: list[int] = []  # raw stream position of recent chunks' first byte
        self.first_seq = 0  # seq of chunk_starts[0]

    def feed(self, chunks: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        """Consecutive chunks of this body, in arrival order: parse once, store redacted."""
        first_new = self.next_chunk
        self.next_chunk += len(chunks)
        events: list[Item] = []
        if self.parser is not None:
            starts = self.chunk_starts
            position = self.position
            for _, data in chunks:
                starts.append(position)
                position += len(data)
            self.position = position
            joined = chunks[0][1] if len(chunks) == 1 else b"".join(d for _, d in chunks)
            events = self.parser.feed(joined)
        released = self.redactor.feed_many(chunks)
        if events:
            # Event data can only hold a secret if the raw lines it came from did.
            redact = self.rules.redact_json_text if self.redactor.redacted else None
            self._events(events, first_new, chunks, batch, redact)
        if self.parser is not None:
            self._forget_chunks_before(self.parser)
        self._store(released, batch)

    def finish(self, batch: WriteBatch) -> bool:
        """Store what is held back; returns whether the body ended in the middle of an event."""
        self._store(self.redactor.flush(), batch)
        return self.parser is not None and not self.parser.at_event_boundary

    def _store(self, released: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        """Number the redacted chunks the redactor let go and add them to the batch."""
        seq, iid, append = self.next_stored, self.iid, batch.chunks.append
        for stored_ns, stored in released:
            append((iid, seq, stored_ns, stored))
            seq += 1
        self.next_stored = seq

    def _events(
        self,
        items: list[Item],
        first_new: int,
        chunks: list[tuple[int, bytes]],
        batch: WriteBatch,
        redact: Callable[[bytes], bytes] | None,
    ) -> None:
        """Store parsed items with the chunks they span. Items come in stream order, so the
        chunk holding each one's line ending is found by walking forward (this is per
        event, on the recorder's hot path)."""
        starts, base, iid = self.chunk_starts, self.first_seq, self.iid
        append = batch.events.append
        last = first_new - base  # index into starts of the chunk being looked at
        count = len(starts)
        seq = self.next_event
        for item in items:
            end = item.end - 1  # the byte holding its line ending
            while last + 1 < count and starts[last + 1] <= end:
                last += 1
            first = last if starts[last] <= item.start else max(
                bisect.bisect_right(starts, item.start) - 1, 0
            )
            offset_ns = chunks[last - (first_new - base)][0]
            if isinstance(item, Comment):
                text = redact(item.text.encode()).decode() if redact else item.text
                append((iid, RecordedEvent(seq, "comment", None, text, None, None, offset_ns,
                                           base + first, base + last)))
            else:
                data = redact(item.data.encode()).decode() if redact else item.data
                append((iid, RecordedEvent(seq, "event", item.type, data, item.id, item.retry,
                                           offset_ns, base + first, base + last)))
            seq += 1
        self.next_event = seq

    def _forget_chunks_before(self, parser: SSEParser) -> None:
        # Only the chunks of the event being parsed can still be some event's first chunk.
        keep_from = parser.earliest_open_position
        drop = bisect.bisect_right(self.chunk_starts, keep_from) - 1
        if drop > 0:
            del self.chunk_starts[:drop]
            self.first_seq += drop


_BEGIN, _HEAD, _CHUNK, _END, _STOP = range(5)


class RecordingSession:
    """One cassette being recorded. Create, `await start()`, feed it, `await close()`."""

    def __init__(
        self,
        cassette_path: str,
        config: RecorderConfig | None = None,
        on_failure: Callable[[Exception], None] | None = None,
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
        self._bodies: dict[int, _Body] = {}  # writer-side state
        self.chunks_written = 0

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
                self._wakeup.clear()
                self._writer_idle = True
                await self._wakeup.wait()
            take = min(len(queue), MAX_BATCH)
            items = [queue.popleft() for _ in range(take)]
            batch = WriteBatch()
            stopping = self._apply(items, batch)
            if self.failure is None and len(batch):
                await self._write(batch)

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
        """Turn queued items into rows. Each body's chunks in the batch are fed together
        (interleaved streams too): only the order within one interaction matters, so its
        chunks are fed before its end, and a head always precedes its chunks."""
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
                _, iid, started_at, request = item
                batch.starts.append(
                    InteractionStart(iid, started_at, self._redact_request(request))
                )
            elif kind == _HEAD:
                _, iid, offset_ns, head, is_sse = item
                rules = self.config.redaction
                head = ResponseHead(
                    head.status, head.reason, rules.redact_headers(head.headers),
                    head.http_version,
                )
                self._bodies[iid] = _Body(iid, rules, is_sse)
                batch.heads.append(HeadUpdate(iid, head, offset_ns, is_sse))
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

    def _feed(self, iid: int, chunks: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        body = self._bodies.get(iid)
        if body is None:  # the interaction already ended: nothing may follow its end
            log.debug("sse-recorder: %d chunks after the end of #%d dropped", len(chunks), iid)
            return
        body.feed(chunks, batch)

    def _end(self, item: tuple, batch: WriteBatch) -> None:
        _, iid, offset_ns, reason, error, check_truncation = item
        body = self._bodies.pop(iid, None)
        if body is not None:
            mid_event = body.finish(batch)
            if check_truncation and mid_event and reason is Outcome.CLEAN:
                reason = Outcome.CLOSED
                error = "connection closed in the middle of an event"
        complete = reason is Outcome.CLEAN
        batch.ends.append(EndUpdate(iid, complete, reason, offset_ns, error))

    def _redact_request(self, request: RecordedRequest) -> RecordedRequest:
        rules = self.config.redaction
        content_type = header_value(request.headers, "content-type")
        return RecordedRequest(
            method=request.method,
            url=rules.redact_url(request.url),
            headers=rules.redact_headers(request.headers),
            body=rules.redact_body(request.body, content_type),
            http_version=request.http_version,
        )

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
from collections.abc import Callable
from dataclasses import dataclass, field

from .cassette import Cassette, EndUpdate, HeadUpdate, InteractionStart, WriteBatch
from .model import EndReason, RecordedEvent, RecordedRequest, ResponseHead, header_value
from .model import is_event_stream as _is_event_stream
from .redact import RedactionRules, StreamRedactor
from .sse import Comment, Item, SSEParser

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # queue items per transaction


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

    def feed(self, offset_ns: int, data: bytes, batch: WriteBatch) -> None:
        seq = self.next_chunk
        self.next_chunk += 1
        if self.parser is not None:
            self.chunk_starts.append(self.position)
            self.position += len(data)
            for item in self.parser.feed(data):
                self._event(item, seq, offset_ns, batch)
            self._forget_chunks_before(self.parser)
        for stored_ns, stored in self.redactor.feed(offset_ns, data):
            batch.chunks.append((self.iid, self.next_stored, stored_ns, stored))
            self.next_stored += 1

    def finish(self, batch: WriteBatch) -> bool:
        """Store what is held back; returns whether the body ended in the middle of an event."""
        for stored_ns, stored in self.redactor.flush():
            batch.chunks.append((self.iid, self.next_stored, stored_ns, stored))
            self.next_stored += 1
        return self.parser is not None and not self.parser.at_event_boundary

    def _event(self, item: Item, seq: int, offset_ns: int, batch: WriteBatch) -> None:
        first = self.first_seq + max(bisect.bisect_right(self.chunk_starts, item.start) - 1, 0)
        redact = self.rules.redact_json_text
        if isinstance(item, Comment):
            stored = RecordedEvent(
                self.next_event, "comment", None, redact(item.text.encode()).decode(),
                None, None, offset_ns, first, seq,
            )
        else:
            stored = RecordedEvent(
                self.next_event, "event", item.type, redact(item.data.encode()).decode(),
                item.id, item.retry, offset_ns, first, seq,
            )
        self.next_event += 1
        batch.events.append((self.iid, stored))

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
        self._queue: asyncio.Queue[tuple] = asyncio.Queue()
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
        self._queue.put_nowait((_BEGIN, iid, started_at, request))
        return iid

    def head(self, iid: int, head: ResponseHead, offset_ns: int) -> bool:
        """Record the response head; returns whether the body is an event stream."""
        is_sse = _is_event_stream(head.headers)
        self._queue.put_nowait((_HEAD, iid, offset_ns, head, is_sse))
        return is_sse

    def chunk(self, iid: int, offset_ns: int, data: bytes) -> None:
        self._queue.put_nowait((_CHUNK, iid, offset_ns, data))

    def end(
        self,
        iid: int,
        reason: EndReason,
        offset_ns: int | None,
        error: str | None = None,
        *,
        check_truncation: bool = False,
    ) -> None:
        """Finalize an interaction. With `check_truncation` (a close-delimited body, whose
        framing cannot show truncation) a stream ending mid-event counts as closed early."""
        if iid in self._open:
            self._open.discard(iid)
            self._queue.put_nowait((_END, iid, offset_ns, reason, error, check_truncation))

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Mark open interactions as stopped, write everything queued, close the file."""
        if self._cassette is None:
            return
        for iid in list(self._open):
            self.end(iid, EndReason.RECORDING_STOPPED, None, "recording stopped")
        self._queue.put_nowait((_STOP,))
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
        assert self._cassette is not None
        queue = self._queue
        stopping = False
        while not stopping:
            item = await queue.get()
            batch = WriteBatch()
            stopping = self._apply(item, batch)
            while not stopping and len(batch) < MAX_BATCH and not queue.empty():
                stopping = self._apply(queue.get_nowait(), batch)
            if self.failure is not None or not len(batch):
                continue
            try:
                await self._cassette.write(batch)
                self.chunks_written += len(batch.chunks)
            except Exception as exc:  # noqa: BLE001 - any storage failure must stop recording
                self.failure = exc
                log.error("sse-recorder: cannot write %s: %s", self.cassette_path, exc)
                if self.on_failure is not None:
                    self.on_failure(exc)

    def _apply(self, item: tuple, batch: WriteBatch) -> bool:
        kind = item[0]
        if kind == _CHUNK:
            _, iid, offset_ns, data = item
            body = self._bodies.get(iid)
            if body is None:  # a body with no recorded head: treat as opaque
                body = self._bodies[iid] = _Body(iid, self.config.redaction, False)
            body.feed(offset_ns, data, batch)
        elif kind == _BEGIN:
            _, iid, started_at, request = item
            batch.starts.append(InteractionStart(iid, started_at, self._redact_request(request)))
        elif kind == _HEAD:
            _, iid, offset_ns, head, is_sse = item
            rules = self.config.redaction
            head = ResponseHead(
                head.status, head.reason, rules.redact_headers(head.headers), head.http_version
            )
            self._bodies[iid] = _Body(iid, rules, is_sse)
            batch.heads.append(HeadUpdate(iid, head, offset_ns, is_sse))
        elif kind == _END:
            _, iid, offset_ns, reason, error, check_truncation = item
            body = self._bodies.pop(iid, None)
            if body is not None:
                mid_event = body.finish(batch)
                if check_truncation and mid_event and reason is EndReason.CLEAN:
                    reason = EndReason.UPSTREAM_CLOSED
                    error = "connection closed in the middle of an event"
            complete = reason is EndReason.CLEAN
            batch.ends.append(EndUpdate(iid, complete, reason, offset_ns, error))
        else:
            return True
        return False

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

"""Turn live traffic into cassette rows, off the proxy's hot path. Knows nothing of mitmproxy.

The proxy calls `begin`, `head`, `chunk` and `end` synchronously; each only stamps and
queues (a few microseconds). A single writer task drains the queue in batches: it redacts,
parses SSE events (one `record.body.Body` per response) and writes one transaction per
batch, so a commit follows new data by one batch-write time (well under the 250 ms bound).
A storage failure is reported once through `on_failure`, so the shell can stop the proxy
instead of passing traffic unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead, header_value
from sse_recorder.model import is_event_stream as _is_event_stream
from sse_recorder.record.body import Body
from sse_recorder.record.redact import RedactionRules
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
        self._bodies: dict[int, Body] = {}  # writer-side state
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
                self._bodies[iid] = Body(iid, rules, is_sse)
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

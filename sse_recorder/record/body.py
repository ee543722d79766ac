"""One response body on its way into the cassette, in the recorder's writer task.

Chunks arrive as the transport cut them, not as events: each body parses its own SSE
stream once, maps every event to the first and last chunk it spans (kept in the cassette
for tools and replay), and stores the chunks redacted, as the redactor releases them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from sse_recorder.model import RecordedEvent
from sse_recorder.record.redact import RedactionRules, StreamRedactor
from sse_recorder.sse import Comment, Item, SSEParser
from sse_recorder.store.cassette import WriteBatch


class Body:
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

"""One response body on its way into the cassette, in the recorder's writer task.

Chunks arrive as the transport cut them, not as events. An event stream is redacted a run
of whole events at a time (up to its last blank line), so redaction sees every event whole,
a value wrapped over two `data:` lines included; a chunk is stored once all of it is
redacted (a chunk ending inside an event waits for that event's end), and only then parsed:
events are derived from the bytes stored, so no event can hold what the chunks do not.
Each event is mapped to the first and last stored chunk it spans. Any other body is
redacted whole at its end (decoded first if it has a content coding).
"""

from __future__ import annotations

import bisect
import logging

from sse_recorder.framing.base import Frame
from sse_recorder.framing.base import Parser as FrameParser
from sse_recorder.framing.registry import Dialect
from sse_recorder.model import RecordedEvent
from sse_recorder.record.redact import (
    MAX_HELD,
    Scrubber,
    StreamDecoder,
    apply,
    decode_body,
    split_like,
)
from sse_recorder.sse import Comment, Item, SSEParser
from sse_recorder.store.cassette import WriteBatch

log = logging.getLogger(__name__)


class Body:
    """Per-interaction state in the writer: holding, redaction, SSE parsing, numbering."""

    def __init__(
        self,
        iid: int,
        scrub: Scrubber,
        is_sse: bool,
        codings: list[str] | None = None,
        dialect: Dialect | None = None,
    ) -> None:
        """`codings`: the body's content codings. An event stream is decoded as it comes
        (the caller stores its head without them); any other body is decoded at its end,
        and stored decoded only if redaction changed it (then `decoded_size` is set).
        `dialect`: the framing of a stream that is not SSE (`framing.registry.dialect_for`);
        such a body without a content coding is stored a run of whole frames at a time."""
        self.iid = iid
        self.scrub = scrub
        self.parser = SSEParser() if is_sse else None
        self.codings = codings or []
        framed = dialect is not None and not is_sse and not self.codings
        self.dialect = dialect if framed else None
        self.framer: FrameParser | None = dialect.parser() if framed and dialect else None
        self._scout = dialect.parser() if framed and dialect else None  # finds frame ends
        self._raw_position = 0  # bytes fed to the scout
        self._aligned = 0  # held chunks that end where a frame ends
        self.decoder = StreamDecoder(self.codings) if is_sse and self.codings else None
        self.decoded_size: int | None = None
        self._held: list[tuple[int, bytes]] = []  # not stored yet
        self._ready = 0  # bytes at the start of `_held` already redacted (whole events)
        self.next_stored = 0  # seq of the next chunk to store
        self.next_event = 0
        self.events = 0  # events stored (comments not counted)
        self.stored_size = 0  # bytes of the chunks stored
        self.position = 0  # stored bytes so far
        self.chunk_starts: list[int] = []  # stored stream position of recent chunks' first byte
        self.first_seq = 0  # seq of chunk_starts[0]

    def feed(self, chunks: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        """Consecutive chunks of this body, in arrival order."""
        decoder = self.decoder
        if decoder is not None:
            failed = decoder.failed
            chunks = [(ns, decoder.decode(data)) for ns, data in chunks]
            if decoder.failed and not failed:
                log.warning("sse-recorder: #%d: cannot decode the body (%s): the rest is not "
                            "stored", self.iid, ", ".join(self.codings))
        self._held.extend(chunks)
        if self.parser is not None:
            self._redact_complete_events(batch)
        elif self._scout is not None:
            self._release_whole_frames(chunks, batch)
        # other bodies are stored whole by finish()

    def finish(self, batch: WriteBatch) -> bool:
        """Store what is held; returns whether the body ended in the middle of an event."""
        if self.framer is not None:
            self._release_frames(len(self._held), batch, final=True)
            return False
        if self.parser is None:
            self._finish_whole(batch)
            return False
        if self._held:
            self._redact_up_to(None)
            self._release(len(self._held), batch)
        return not self.parser.at_event_boundary

    # -- event streams -------------------------------------------------------------------

    def _redact_complete_events(self, batch: WriteBatch) -> None:
        """Redact the held bytes up to the last blank line (whole events), then store every
        chunk that lies wholly in what is redacted. A chunk ending inside an event waits for
        that event's end (usually the next chunk); past MAX_HELD, a line end will do."""
        held = self._held
        buffer = held[0][1] if len(held) == 1 else b"".join(data for _, data in held)
        tail = buffer[self._ready:]
        cut = max(tail.rfind(b"\n\n"), tail.rfind(b"\r\r"), tail.rfind(b"\n\r"))
        if cut >= 0:
            self._redact_up_to(self._ready + cut + 2, buffer)
        elif len(tail) > MAX_HELD:
            line_end = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
            self._redact_up_to(self._ready + line_end + 1 if line_end >= 0 else None, buffer)
        else:
            return
        count, position = 0, 0
        for _, data in self._held:
            if position + len(data) > self._ready:
                break
            position += len(data)
            count += 1
        if count:
            self._ready -= position
            self._release(count, batch)

    def _redact_up_to(self, end: int | None, buffer: bytes | None = None) -> None:
        """Redact held bytes from `_ready` to `end` (None: all of them): whole events."""
        held = self._held
        if buffer is None:
            buffer = b"".join(data for _, data in held)
        if end is None:
            end = len(buffer)
        spans = self.scrub.stream_spans(buffer[self._ready:end])
        if spans:
            start = self._ready
            shifted = [(a + start, b + start, r) for a, b, r in spans]
            self._held = split_like(held, shifted)
            end += sum(len(r) - (b - a) for a, b, r in spans)
        self._ready = end

    def _release(self, count: int, batch: WriteBatch) -> None:
        """Store the first `count` held chunks (redacted) and parse them."""
        stored = self._held[:count]
        del self._held[:count]
        assert self.parser is not None
        first_new = self.next_stored
        starts = self.chunk_starts
        position = self.position
        for _, data in stored:
            starts.append(position)
            position += len(data)
        self.position = position
        joined = stored[0][1] if len(stored) == 1 else b"".join(data for _, data in stored)
        events = self.parser.feed(joined)
        if events:
            self._events(events, first_new, stored, batch)
        self._forget_chunks_before(self.parser)
        self._store(stored, batch)

    def _events(
        self,
        items: list[Item],
        first_new: int,
        chunks: list[tuple[int, bytes]],
        batch: WriteBatch,
    ) -> None:
        """Store parsed items with the chunks they span. Items come in stream order, so the
        chunk holding each one's line ending is found by walking forward (this is per
        event, on the recorder's hot path)."""
        starts, base, iid = self.chunk_starts, self.first_seq, self.iid
        append = batch.events.append
        last = first_new - base  # index into starts of the chunk being looked at
        count = len(starts)
        seq = self.next_event
        comments = 0
        for item in items:
            end = item.end - 1  # the byte holding its line ending
            while last + 1 < count and starts[last + 1] <= end:
                last += 1
            first = last if starts[last] <= item.start else max(
                bisect.bisect_right(starts, item.start) - 1, 0
            )
            offset_ns = chunks[last - (first_new - base)][0]
            if isinstance(item, Comment):
                comments += 1
                append((iid, RecordedEvent(seq, "comment", None, item.text, None, None,
                                           offset_ns, base + first, base + last)))
            else:
                append((iid, RecordedEvent(seq, "event", item.type, item.data, item.id,
                                           item.retry, offset_ns, base + first, base + last)))
            seq += 1
        self.events += seq - self.next_event - comments
        self.next_event = seq

    def _forget_chunks_before(self, parser: SSEParser) -> None:
        # Only the chunks of the event being parsed can still be some event's first chunk.
        keep_from = parser.earliest_open_position
        drop = bisect.bisect_right(self.chunk_starts, keep_from) - 1
        if drop > 0:
            del self.chunk_starts[:drop]
            self.first_seq += drop

    # -- streams of other framings (NDJSON, AWS event stream...) -------------------------

    def _release_whole_frames(self, chunks: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        """Store the held chunks up to the last one that ends where a frame ends (redacted
        as whole frames); past MAX_HELD, whatever is held."""
        scout = self._scout
        assert scout is not None
        first_new = len(self._held) - len(chunks)
        for index, (_, data) in enumerate(chunks, first_new):
            scout.feed(data)
            self._raw_position += len(data)
            if scout.open_start >= self._raw_position:
                self._aligned = index + 1
        if self._aligned:
            self._release_frames(self._aligned, batch)
        elif sum(len(data) for _, data in self._held) > MAX_HELD:
            self._release_frames(len(self._held), batch)

    def _release_frames(self, count: int, batch: WriteBatch, final: bool = False) -> None:
        framer, dialect = self.framer, self.dialect
        assert framer is not None and dialect is not None
        released = self._held[:count]
        del self._held[:count]
        self._aligned = 0
        if not released:
            if final:
                self._frame_events(framer.finish(), [], batch)
            return
        region = b"".join(data for _, data in released)
        spans = dialect.redact(region, self.scrub)
        stored = split_like(released, spans) if spans else released
        first_new = self.next_stored
        starts, position = self.chunk_starts, self.position
        if not starts:
            self.first_seq = first_new
        for _, data in stored:
            starts.append(position)
            position += len(data)
        self.position = position
        frames = framer.feed(b"".join(data for _, data in stored))
        if final:
            frames += framer.finish()
        self._store(stored, batch)
        self._frame_events(frames, stored, batch)

    def _frame_events(self, frames: list[Frame], stored: list[tuple[int, bytes]],
                      batch: WriteBatch) -> None:
        """Frames as event rows: kind frame, error or invalid, with the chunks they span."""
        starts, base, iid = self.chunk_starts, self.first_seq, self.iid
        seq = self.next_event
        last_ns = stored[-1][0] if stored else 0
        for frame in frames:
            first = max(bisect.bisect_right(starts, frame.start) - 1, 0)
            last = max(bisect.bisect_right(starts, max(frame.end - 1, frame.start)) - 1, 0)
            stored_index = last - (len(starts) - len(stored))
            offset_ns = stored[stored_index][0] if 0 <= stored_index < len(stored) else last_ns
            batch.events.append((iid, RecordedEvent(seq, frame.kind, frame.type, frame.data, None,
                                                    None, offset_ns, base + first,
                                                    base + last)))
            seq += 1
        self.events += seq - self.next_event
        self.next_event = seq
        if self.framer is not None:  # chunks before the open frame can no longer be needed
            drop = bisect.bisect_right(starts, self.framer.open_start) - 1
            if drop > 0:
                del starts[:drop]
                self.first_seq += drop

    # -- other bodies --------------------------------------------------------------------

    def _finish_whole(self, batch: WriteBatch) -> None:
        held, self._held = self._held, []
        if not held:
            return
        raw = held[0][1] if len(held) == 1 else b"".join(data for _, data in held)
        if not self.codings:
            spans = self.scrub.spans(raw)
            self._store(split_like(held, spans) if spans else held, batch)
            return
        decoded = decode_body(raw, self.codings)
        if decoded is None:
            log.warning("sse-recorder: #%d: body not decodable as %s: stored as received",
                        self.iid, ", ".join(self.codings))
            self._store(held, batch)
            return
        spans = self.scrub.spans(decoded)
        if not spans:
            self._store(held, batch)  # nothing to hide: the bytes exactly as received
            return
        body = apply(decoded, spans)
        self.decoded_size = len(body)
        self._store([(held[-1][0], body)], batch)

    def _store(self, released: list[tuple[int, bytes]], batch: WriteBatch) -> None:
        """Number the redacted chunks and add them to the batch."""
        seq, iid, append, size = self.next_stored, self.iid, batch.chunks.append, 0
        for stored_ns, stored in released:
            append((iid, seq, stored_ns, stored))
            size += len(stored)
            seq += 1
        self.next_stored = seq
        self.stored_size += size

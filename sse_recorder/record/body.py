"""One response body on its way into the cassette, in the recorder's writer task.

Chunks arrive as the transport cut them, not as events. An event stream is redacted a run
of whole events at a time (up to its last blank line), so redaction sees every event whole,
a value wrapped over two `data:` lines included; a chunk is stored once all of it is
redacted (a chunk ending inside an event waits for that event's end). The writer builds no
events: readers derive them from the chunks stored (`framing.derive`), so no event can hold
what the chunks do not; it only counts them (`sse.EventCounter`, mostly one regex per
batch) and notes whether the body ended inside one. A stream in another framing is stored
a run of whole frames at a time, any other body a run of whole lines at a time (one with a
content coding is decoded and redacted whole at its end). A run is redacted after the tail
of the one before when that matters (`_carry`); an event, frame or line past MAX_HELD is
stored before its end, all but LOOKAHEAD bytes of it, so a secret across the cut is seen.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate

from sse_recorder.framing.registry import Dialect
from sse_recorder.record.redact import (
    CARRY,
    LINE_CARRY,
    LOOKAHEAD,
    MAX_HELD,
    Scrubber,
    Span,
    StreamDecoder,
    apply,
    decode_body,
    split_like,
)
from sse_recorder.sse import EventCounter
from sse_recorder.store.cassette import WriteBatch

log = logging.getLogger(__name__)


class Body:
    """Per-interaction state in the writer: holding, redaction, counting, numbering. Chunks
    are held as two columns (offsets, data) so that a flood's thousands of chunks per batch
    are measured, cut and packed by C loops (`accumulate`, `bisect`, `join`), not a Python
    step per chunk."""

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
        self.counter = EventCounter() if is_sse else None
        self.codings = codings or []
        framed = dialect is not None and not is_sse and not self.codings
        self.dialect = dialect if framed else None
        self._scout = dialect.parser() if framed and dialect else None  # finds frame ends
        self._raw_position = 0  # bytes fed to the scout
        self._aligned = 0  # held chunks that end where a frame ends
        self.decoder = StreamDecoder(self.codings) if is_sse and self.codings else None
        self.decoded_size: int | None = None
        self._held_ns: list[int] = []  # offsets of the chunks not stored yet
        self._held: list[bytes] = []  # their data
        self._ready = 0  # bytes at the start of `_held` already redacted (whole events)
        self._carry = b""  # an event released before its end: its tail, raw (`_unfinished`)
        self.next_stored = 0  # seq of the next chunk to store
        self.frames = 0  # frames of a stream in another framing, as received
        self.stored_size = 0  # bytes of the chunks stored

    @property
    def events(self) -> int:
        """Events stored (comments not counted); frames for a stream in another framing."""
        return self.counter.events if self.counter is not None else self.frames

    def feed(self, offsets: list[int], datas: list[bytes], batch: WriteBatch) -> None:
        """Consecutive chunks of this body, in arrival order: their offsets and their data."""
        decoder = self.decoder
        if decoder is not None:
            failed = decoder.failed
            decoded = [decoder.decode(data) for data in datas]
            if decoder.failed and not failed:
                log.warning("sse-recorder: #%d: cannot decode the body (%s): the rest is not "
                            "stored", self.iid, ", ".join(self.codings))
            # a chunk that decodes to nothing (a gzip header sent alone) is no chunk of the
            # stored body: a replay could not send it (an empty HTTP chunk ends the body)
            kept = [i for i, data in enumerate(decoded) if data]
            offsets = [offsets[i] for i in kept]
            datas = [decoded[i] for i in kept]
        self._held_ns += offsets
        self._held += datas
        if self.counter is not None:
            self._redact_complete_events(batch)
        elif self._scout is not None:
            self._release_whole_frames(datas, batch)
        elif not self.codings:
            self._release_whole_lines(batch)
        # a body of another type with a content coding is decoded and stored whole by finish()

    def finish(self, batch: WriteBatch) -> bool:
        """Store what is held; returns whether the body ended in the middle of an event."""
        if self._scout is not None:
            self.frames += len(self._scout.finish())
            self._release_text(len(self._held), batch, whole=True)
            return False
        if self.counter is None:
            if self.codings:
                self._finish_whole(batch)
            else:
                self._release_text(len(self._held), batch, whole=False)
            return False
        if self._held:
            self._redact_up_to(None)
            self._release(len(self._held), batch)
        return not self.counter.at_event_boundary

    # -- event streams -------------------------------------------------------------------

    def _redact_complete_events(self, batch: WriteBatch) -> None:
        """Redact the held bytes up to the last blank line (whole events), then store every
        chunk that lies wholly in what is redacted. A chunk ending inside an event waits for
        that event's end (usually the next chunk); past MAX_HELD, the event is released up to
        a line end (or a byte) LOOKAHEAD before what is held, and the rest of it is redacted
        with its tail (`_carry`)."""
        held = self._held
        buffer = held[0] if len(held) == 1 else b"".join(held)
        tail = buffer[self._ready:]
        cut = _last_blank_line(tail)
        if cut >= 0:
            self._redact_up_to(self._ready + cut, buffer)
        elif len(tail) > MAX_HELD:
            before = len(tail) - LOOKAHEAD
            end = _line_start(tail, before) or before
            self._redact_up_to(self._ready + end, buffer, lookahead=True)
        else:
            return
        ends = list(accumulate(map(len, self._held)))
        count = bisect_right(ends, self._ready)  # the chunks that end where redaction has been
        if count:
            self._ready -= ends[count - 1]
            self._release(count, batch)

    def _redact_up_to(self, end: int | None, buffer: bytes | None = None, *,
                      lookahead: bool = False) -> None:
        """Redact held bytes from `_ready` to `end` (None: all of them) and count the events
        in them (as redacted: the bytes that will be stored). The redaction reads the tail of
        an event released before its end first, and with `lookahead` what is held after
        `end` too; only spans in the region apply (the part of one begun before it is
        dropped: its replacement went out with its start)."""
        if buffer is None:
            buffer = b"".join(self._held)
        if end is None:
            end = len(buffer)
        start, carry = self._ready, self._carry
        region = buffer[start:end]
        spans = self._spans_in(self.scrub.stream_spans, region,
                               buffer[end:] if lookahead else b"")
        stored = region
        if spans:
            shifted = [(a + start, b + start, r) for a, b, r in spans]
            self._held = split_like(self._held, shifted)
            end += sum(len(r) - (b - a) for a, b, r in spans)
            stored = apply(region, spans)
        assert self.counter is not None
        self.counter.feed(stored)
        self._ready = end
        self._carry = _unfinished(carry + region if carry else region)

    def _spans_in(self, find: Callable[[bytes], list[Span]], region: bytes, after: bytes
                  ) -> list[Span]:
        """`find`'s spans in `region`, read after the tail of what went before it (`_carry`)
        and before `after`; the part of a span begun before the region is replaced by
        nothing (its replacement went out with its start)."""
        carry = self._carry
        if not (carry or after):
            return find(region)
        return _within(find(carry + region + after), len(carry), len(carry) + len(region))

    def _take(self, count: int) -> tuple[list[int], list[bytes]]:
        """The first `count` held chunks' offsets and data, no longer held."""
        offsets, datas = self._held_ns[:count], self._held[:count]
        del self._held_ns[:count], self._held[:count]
        return offsets, datas

    def _release(self, count: int, batch: WriteBatch) -> None:
        """Store the first `count` held chunks (redacted)."""
        self._store(*self._take(count), batch)

    # -- streams of other framings (NDJSON, AWS event stream...) -------------------------

    def _release_whole_frames(self, datas: list[bytes], batch: WriteBatch) -> None:
        """Store the held chunks up to the last one that ends where a frame ends (redacted
        as whole frames); past MAX_HELD, all but LOOKAHEAD of what is held."""
        scout = self._scout
        assert scout is not None
        first_new = len(self._held) - len(datas)
        for index, data in enumerate(datas, first_new):
            self.frames += len(scout.feed(data))
            self._raw_position += len(data)
            if scout.open_start >= self._raw_position:
                self._aligned = index + 1
        if self._aligned:
            self._release_text(self._aligned, batch, whole=True)
        else:
            self._release_long(batch)

    # -- other bodies --------------------------------------------------------------------

    def _release_whole_lines(self, batch: WriteBatch) -> None:
        """A body of another type (a log, chunked JSON) is stored as it comes: the held
        chunks up to the last one that ends a line; past MAX_HELD, all but LOOKAHEAD."""
        held = self._held
        count = len(held)
        while count and not held[count - 1].endswith((b"\n", b"\r")):
            count -= 1
        if count:
            self._release_text(count, batch, whole=False)
        else:
            self._release_long(batch)

    def _release_long(self, batch: WriteBatch) -> None:
        """Past MAX_HELD with no end in sight: the chunks that lie wholly before the last
        LOOKAHEAD bytes held go (a secret across that cut is seen whole in what stays)."""
        ends = list(accumulate(map(len, self._held)))
        if ends and ends[-1] > MAX_HELD:
            self._release_text(bisect_right(ends, ends[-1] - LOOKAHEAD), batch, whole=False,
                               lookahead=True)

    def _release_text(self, count: int, batch: WriteBatch, *, whole: bool,
                      lookahead: bool = False) -> None:
        """Store the first `count` held chunks, redacted after the tail of what went before
        them (`_carry`: a credential's key there, its value here, is found) and, with
        `lookahead`, before what stays held. `whole`: they end where a frame ends, so what
        follows owes them nothing. An event stream message is redacted whole or not at all:
        it has neither."""
        offsets, datas = self._take(count)
        self._aligned = 0
        if not datas:
            return
        region = datas[0] if len(datas) == 1 else b"".join(datas)
        if self.dialect is not None and self.dialect.binary:
            spans = self.dialect.redact(region, self.scrub)
        else:
            spans = self._spans_in(self.scrub.spans, region,
                                   b"".join(self._held) if lookahead else b"")
            kept = CARRY if lookahead else LINE_CARRY  # a cut at a line end needs only lines
            self._carry = b"" if whole else (self._carry + region)[-kept:]
        self._store(offsets, split_like(datas, spans) if spans else datas, batch)

    def _finish_whole(self, batch: WriteBatch) -> None:
        """A body of another type with a content coding, at its end: decoded whole to be
        redacted (a coded stream cannot be cut at its lines)."""
        offsets, datas = self._held_ns, self._held
        self._held_ns, self._held = [], []
        if not datas:
            return
        raw = datas[0] if len(datas) == 1 else b"".join(datas)
        decoded = decode_body(raw, self.codings)
        if decoded is None:
            log.warning("sse-recorder: #%d: body not decodable as %s: stored as received",
                        self.iid, ", ".join(self.codings))
            self._store(offsets, datas, batch)
            return
        spans = self.scrub.spans(decoded)
        if not spans:
            self._store(offsets, datas, batch)  # nothing to hide: the bytes exactly as received
            return
        body = apply(decoded, spans)
        self.decoded_size = len(body)
        self._store([offsets[-1]], [body], batch)

    def _store(self, offsets: list[int], datas: list[bytes], batch: WriteBatch) -> None:
        """Number the redacted chunks and add them to the batch, as one run."""
        if not datas:
            return
        batch.runs.append((self.iid, self.next_stored, offsets, datas))
        self.next_stored += len(datas)
        self.stored_size += sum(map(len, datas))


def _within(spans: list[Span], low: int, high: int) -> list[Span]:
    """The parts of `spans` in [low, high), relative to `low`; a part cut off a span's start
    is replaced by nothing."""
    out: list[Span] = []
    for start, end, replacement in spans:
        if end > low and start < high:
            out.append((max(start, low) - low, min(end, high) - low,
                        replacement if start >= low else b""))
    return out


def _unfinished(text: bytes) -> bytes:
    """The event `text` ends inside, as the redaction of its rest must read it: its last
    CARRY bytes or so, whole lines, a longer line keeping its field name (`data:`)."""
    if text.endswith((b"\n\n", b"\r\r", b"\n\r")):  # (a run of whole events: the usual)
        return b""
    event = text[max(_last_blank_line(text), 0):]
    if not event.strip(b"\r\n"):
        return b""
    if len(event) <= CARRY:
        return event
    cut = len(event) - CARRY
    line = _line_start(event, cut)
    colon = event.find(b":", line, cut)
    if colon < 0:  # the cut is at a line's start, or inside its field name
        return event[line:] if cut - line < 64 else event[cut:]
    return event[line:colon + 1] + b" " + event[cut:]


def _last_blank_line(text: bytes) -> int:
    """Where the text after the last blank line (an event's end) begins; -1: none. A CRLF
    blank line's last LF stays after it (it ends no event of its own)."""
    found = max(text.rfind(b"\n\n"), text.rfind(b"\r\r"), text.rfind(b"\n\r"))
    return found + 2 if found >= 0 else -1


def _line_start(text: bytes, position: int) -> int:
    """Where the line holding `position` begins (0: the text's first line)."""
    return max(text.rfind(b"\n", 0, position), text.rfind(b"\r", 0, position)) + 1

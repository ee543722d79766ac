"""The Last-Event-ID cut: where a resumed stream starts, as pure functions over chunks.

Rules:
- the stream restarts just after the end of the first event (or id-only block) whose
  `id:` field is the id the client sent, found by parsing the recorded bytes (so the
  result does not depend on how the stream was chunked);
- the cut is at the event's line ending, and a CRLF ending stays whole: the LF goes with
  what was skipped even when it is the first byte of a later chunk;
- a chunk holding the event's end and the start of the next event is cut there; the
  schedule then counts from that chunk's offset, so the recorded gaps after it stay;
- a block without data (`id: 5` then a blank line) counts too: it dispatches no event, but
  a client that read it reconnects with its id (`IdBlock`); the cassette's events table
  has no row for it, so whether an id is known is decided here, by parsing, never there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sse_recorder.model import Chunk
from sse_recorder.sse import Event, SSEParser


class Cut:
    """Sans-IO: feed the recorded chunks in order until `feed` answers with the chunks that
    start what is left (every later chunk then goes out as it is); `finish` at the end."""

    def __init__(self, last_id: str) -> None:
        self.last_id = last_id
        self.origin_ns = 0  # offset of the chunk holding the event's end
        self.skipped = 0  # body bytes before the cut
        self._parser = SSEParser(id_blocks=True)
        self._position = 0  # stream position of the next chunk's first byte
        self._lf_pending = False  # cut after a CR ending a chunk: drop a LF that follows

    def feed(self, chunk: Chunk) -> list[Chunk] | None:
        """None while the cut is not settled; else what to send first (maybe nothing)."""
        if self._lf_pending:
            if not chunk.data:
                return None
            self._lf_pending = False
            return [self._without_lf(chunk)]
        start = self._position
        self._position += len(chunk.data)
        end = next((item.end for item in self._parser.feed(chunk.data)
                    if isinstance(item, Event) and item.id == self.last_id), None)
        if end is None:
            return None
        self.origin_ns, self.skipped = chunk.offset_ns, end
        cut = end - start  # >= 1: the event ended on a CR or LF of this chunk
        left = Chunk(chunk.seq, chunk.offset_ns, chunk.data[cut:])
        if chunk.data[cut - 1:cut] != b"\r":
            return [left]
        if not left.data:  # the LF of the CRLF, if any, is in a later chunk
            self._lf_pending = True
            return None
        return [self._without_lf(left)]

    def finish(self) -> list[Chunk] | None:
        """At the stream's end: [] when the cut was found, None when no event had the id."""
        if self._lf_pending:
            self._lf_pending = False
            return []
        return None

    def _without_lf(self, chunk: Chunk) -> Chunk:
        if not chunk.data.startswith(b"\n"):
            return chunk
        self.skipped += 1
        return Chunk(chunk.seq, chunk.offset_ns, chunk.data[1:])


@dataclass(frozen=True, slots=True)
class Resumed:
    """A stream resumed after an event."""

    chunks: list[Chunk]  # what is left, starting with the rest of the cut chunk
    origin_ns: int  # the offset the schedule counts from
    skipped: int  # body bytes cut off (a Content-Length shrinks by as much)


def resume(chunks: Iterable[Chunk], last_id: str) -> Resumed | None:
    """The stream after the first block whose id is `last_id`; None when none has it."""
    cut = Cut(last_id)
    iterator = iter(chunks)
    for chunk in iterator:
        first = cut.feed(chunk)
        if first is not None:
            return Resumed(first + list(iterator), cut.origin_ns, cut.skipped)
    first = cut.finish()
    return None if first is None else Resumed(first, cut.origin_ns, cut.skipped)

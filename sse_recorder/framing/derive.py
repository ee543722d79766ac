"""A stored body's events, derived from its chunks when a cassette is read.

The recorder stores chunks only (format v2); what a reader sees as events is computed here
from the bytes stored, so no event can hold what the chunks do not, and the recorder spends
nothing on events while traffic flows. Each event is mapped to the first and last chunk it
spans and stamped with the arrival of the chunk that completed it. An event stream is parsed
by `sse.SSEParser`; a body in another framing (`registry.dialect_for`) is split into frames
unless it is stored with a content coding; any other body has no events. Chunks are fed one
at a time and only their positions are kept, so a huge body is never held whole.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from sse_recorder.framing.base import Frame
from sse_recorder.framing.registry import Dialect, dialect_for
from sse_recorder.model import Chunk, Headers, RecordedEvent, content_codings_named
from sse_recorder.sse import Comment, Item, SSEParser


class Deriver:
    """Feed a body's chunks in order, then `finish()` for its events. `dialect`: the framing
    of a body that is not SSE (default: the one its head's `headers` name, unless coded)."""

    def __init__(self, is_sse: bool, headers: Headers, dialect: Dialect | None = None) -> None:
        if dialect is None and not is_sse and not content_codings_named(headers):
            dialect = dialect_for(headers)
        self._framer = dialect.parser() if dialect is not None and not is_sse else None
        parser = SSEParser() if is_sse else self._framer
        self._parse: Callable[[bytes], list[Item] | list[Frame]] | None = (
            parser.feed if parser is not None else None)
        self._starts: list[int] = []  # each chunk's first byte in the body
        self._stamps: list[tuple[int, int]] = []  # each chunk's (seq, offset_ns)
        self._position = 0
        self._events: list[RecordedEvent] = []

    def feed(self, chunk: Chunk) -> None:
        if self._parse is None:  # a body without events
            return
        self._starts.append(self._position)
        self._stamps.append((chunk.seq, chunk.offset_ns))
        self._position += len(chunk.data)
        self._add(self._parse(chunk.data))

    def finish(self) -> list[RecordedEvent]:
        if self._framer is not None:
            self._add(self._framer.finish())
        return self._events

    def _add(self, found: list[Item] | list[Frame]) -> None:
        for item in found:
            self._events.append(self._event(len(self._events), item))

    def _chunk_at(self, position: int) -> int:
        return max(bisect_right(self._starts, position) - 1, 0)

    def _event(self, seq: int, item: Item | Frame) -> RecordedEvent:
        first_seq = self._stamps[self._chunk_at(item.start)][0]
        last_seq, offset_ns = self._stamps[self._chunk_at(max(item.end - 1, item.start))]
        if isinstance(item, Frame):
            return RecordedEvent(seq, item.kind, item.type, item.data, None, None, offset_ns,
                                 first_seq, last_seq)
        if isinstance(item, Comment):
            return RecordedEvent(seq, "comment", None, item.text, None, None, offset_ns,
                                 first_seq, last_seq)
        return RecordedEvent(seq, "event", item.type, item.data, item.id, item.retry, offset_ns,
                             first_seq, last_seq)


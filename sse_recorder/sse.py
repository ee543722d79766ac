"""Sans-IO Server-Sent Events parser and encoder.

Implements the WHATWG HTML "event stream interpretation" (section 9.2.6,
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
bytes go in through `feed`, dispatched events and comments come out. Invariants:
- the items produced do not depend on how the stream was chunked;
- memory is bounded by the current line and the current event;
- only CR, LF and CRLF end lines, and a CRLF split across two chunks is one line ending.
Comments are kept as items of their own because heartbeats matter to replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Comment", "Event", "EventCounter", "IdBlock", "Item", "SSEParser", "encode_event",
           "parse"]

_BOM = b"\xef\xbb\xbf"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the only line endings of an event stream


@dataclass(frozen=True, slots=True)
class Event:
    """A dispatched event. `id` and `retry` are the fields seen in this event's block."""

    type: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    # Byte positions of the block in the stream (BOM included), from its first field line to
    # the CR or LF that ended it (the LF of a final CRLF is not included); equal for every chunking.
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (`: heartbeat`), with one leading space removed like a field value."""

    text: str
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IdBlock(Event):
    """A block that set the event ID without data (`id: 5` then a blank line): no event is
    dispatched, but from its blank line on a reconnecting client sends this id as
    Last-Event-ID (the spec sets the last event ID string before it checks for data).
    Reported only by `SSEParser(id_blocks=True)`, so no other reader ever sees one."""


Item = Event | Comment


class SSEParser:
    """Incremental parser: `feed(bytes)` any number of times, then `close()`."""

    def __init__(self, id_blocks: bool = False, *, at_stream_start: bool = True) -> None:
        """`at_stream_start=False`: the bytes fed continue a stream from an event boundary
        (a leading BOM is then not the stream's, and is not skipped)."""
        self._id_blocks = id_blocks  # report blocks that set an id without data (IdBlock)
        self._pending = bytearray()  # the current, unterminated line (amortised appends)
        self._pending_start = 0  # stream position of `_pending[0]`
        self._position = 0  # bytes consumed so far
        self._after_cr = False  # the last byte seen ended a line with CR: skip one LF
        self._at_stream_start = at_stream_start
        self.last_event_id = ""  # the spec's "last event ID buffer"
        self.reconnection_time: int | None = None
        self._reset_event()

    def _reset_event(self) -> None:
        self._event_type = ""
        self._data: list[str] = []
        self._has_data = False
        self._id: str | None = None
        self._retry: int | None = None
        self._block_start: int | None = None

    def feed(self, chunk: bytes) -> list[Item]:
        """Consume a chunk and return the items it completed."""
        if self._at_stream_start:
            buffered = bytes(self._pending) + chunk
            if len(buffered) < len(_BOM) and _BOM.startswith(buffered):
                self._pending[:] = buffered
                return []
            self._at_stream_start = False
            self._pending.clear()
            chunk = buffered
            if chunk.startswith(_BOM):
                self._position = len(_BOM)
                chunk = chunk[len(_BOM) :]
            self._pending_start = self._position
        items: list[Item] = []
        base = self._position
        self._position += len(chunk)
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk[0] == 0x0A:  # the LF of a CRLF split across chunks
                chunk = chunk[1:]
                base += 1
                self._pending_start = base
        if b"\r" not in chunk:  # LF line endings only: the common case, split in C
            self._feed_lf(chunk, base, items)
            return items
        position = base
        pending = self._pending
        # bytes.splitlines breaks on exactly CR, LF and CRLF: the spec's line endings.
        for piece in chunk.splitlines(True):
            size = len(piece)
            last = piece[-1]
            if last == 0x0A:
                cut = 2 if size > 1 and piece[-2] == 0x0D else 1
            elif last == 0x0D:
                cut = 1
                if position + size == base + len(chunk):
                    self._after_cr = True  # an LF may still follow in the next chunk
            else:  # the unterminated tail of the chunk
                if not pending:
                    self._pending_start = position
                pending += piece
                break
            if pending:
                pending += piece[:-cut]
                line = bytes(pending)
                pending.clear()
            else:
                line = piece[:-cut]
            item = self._process_line(line, self._pending_start, position + size - cut + 1)
            if item is not None:
                items.append(item)
            position += size
            self._pending_start = position
        return items

    def _feed_lf(self, chunk: bytes, position: int, items: list[Item]) -> None:
        """`feed` for a chunk without CR (so no CRLF can straddle it): the same items, with
        `data:` lines and blank lines handled inline (this is per line, on the recorder's
        hot path)."""
        lines = chunk.split(b"\n")
        tail = lines.pop()  # after the last LF: the start of an unterminated line
        pending = self._pending
        for line in lines:
            if pending:
                pending += line
                line = bytes(pending)
                pending.clear()
                start = self._pending_start
                end = start + len(line) + 1
            else:
                start = position
                end = position + len(line) + 1
            position = end
            if not line:
                event = self._dispatch(end)
                if event is not None:
                    items.append(event)
            elif line[:5] == b"data:":
                if self._block_start is None:
                    self._block_start = start
                self._data.append((line[6:] if line[5:6] == b" " else line[5:]).decode(
                    "utf-8", errors="replace"))
                self._has_data = True
            else:
                item = self._process_line(line, start, end)
                if item is not None:
                    items.append(item)
        if not pending:
            self._pending_start = position
        if tail:
            pending += tail

    def close(self) -> list[Item]:
        """End of stream: an unterminated line and an undispatched event are discarded."""
        self._pending.clear()
        self._reset_event()
        return []

    @property
    def at_event_boundary(self) -> bool:
        """True when no line or event is half received (a clean place for a stream to end)."""
        return not self._pending and self._block_start is None

    @property
    def earliest_open_position(self) -> int:
        """Stream position where the event or line still being received began."""
        return self._block_start if self._block_start is not None else self._pending_start

    def _process_line(self, raw: bytes, start: int, end: int) -> Item | None:
        if not raw:
            return self._dispatch(end)
        if self._block_start is None and raw[0] != 0x3A:
            self._block_start = start
        if raw.startswith(b"data") and (len(raw) == 4 or raw[4] == 0x3A):  # the common case
            data = raw[6:] if raw[5:6] == b" " else raw[5:]
            self._data.append(data.decode("utf-8", errors="replace"))
            self._has_data = True
            return None
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            text = line[1:]
            return Comment(text[1:] if text.startswith(" ") else text, start, end)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                try:
                    retry = int(value.lstrip("0") or "0")
                except ValueError:  # more digits than `sys.get_int_max_str_digits()` allows
                    return None
                self._retry = retry
                self.reconnection_time = retry
        return None

    def _dispatch(self, end: int) -> Event | None:
        start = self._block_start if self._block_start is not None else end
        if not self._has_data:
            block = (IdBlock(id=self._id, start=start, end=end)
                     if self._id_blocks and self._id is not None else None)
            self._reset_event()
            return block
        event = Event(
            type=self._event_type or "message",
            data="\n".join(self._data),
            id=self._id,
            retry=self._retry,
            start=start,
            end=end,
        )
        self._reset_event()
        return event


# From the line end before a `data` line to the line end before the blank line that ends
# its block (the blank line's own LF then starts the next match), in text without CR fed
# after an LF: one match per block that dispatches an event (its later lines, data lines
# too, are inside the match). Its literal start lets the engine skip ahead to each LF, and
# its only group is empty, so `findall` builds no bytes per match: 25% faster than `^data`.
_DISPATCHING = re.compile(rb"\ndata(?::[^\n]*)?\n(?:[^\n]+\n)*(?=\n)()")


class EventCounter:
    """How many events an `SSEParser` would dispatch from a stream fed in pieces, and whether
    it ends at an event boundary, without building the events: the recorder's writer needs
    only these two figures (the events themselves are derived when a cassette is read).
    A piece of whole events without CR, fed at an event boundary, is counted by one regex
    in C; anything else goes through a parser until the stream is at a boundary again."""

    def __init__(self) -> None:
        self.events = 0
        self._position = 0
        self._parser: SSEParser | None = None  # between boundaries only

    def feed(self, piece: bytes) -> None:
        parser = self._parser
        if (parser is None and piece.endswith(b"\n\n") and b"\r" not in piece
                and (self._position or not piece.startswith(_BOM[:1]))):
            self.events += len(_DISPATCHING.findall(b"\n" + piece))
        else:
            if parser is None:
                parser = self._parser = SSEParser(at_stream_start=not self._position)
            self.events += sum(type(item) is Event for item in parser.feed(piece))
            if parser.at_event_boundary:
                self._parser = None
        self._position += len(piece)

    @property
    def at_event_boundary(self) -> bool:
        return self._parser is None or self._parser.at_event_boundary


def parse(stream: bytes) -> list[Item]:
    """Parse a complete stream in one go."""
    parser = SSEParser()
    return parser.feed(stream) + parser.close()


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
    newline: str = "\n",
) -> bytes:
    """Encode one event block; multi-line data becomes several `data:` lines.

    CR, LF and CRLF in `data` or `comment` all start a new line (a parser reads each of them
    as a line ending, so `data` comes back with LF between its lines). Values that cannot be
    encoded faithfully raise ValueError: `event` or `id` with a CR or LF, `id` with a NUL
    (a parser ignores it), a negative `retry` (a parser ignores it) and a `newline` that is
    not a line ending.
    """
    if newline not in ("\n", "\r", "\r\n"):
        raise ValueError(f"newline must be LF, CR or CRLF, not {newline!r}")
    for name, value in (("event", event), ("id", id)):
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError(f"{name} cannot contain CR or LF: {value!r}")
    if id is not None and "\0" in id:
        raise ValueError(f"id cannot contain NUL: {id!r}")
    if retry is not None and retry < 0:
        raise ValueError(f"retry must be a non-negative integer, not {retry!r}")
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {part}" for part in _LINE_BREAK.split(comment))
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    if data is not None:
        lines.extend(f"data: {part}" for part in _LINE_BREAK.split(data))
    return (newline.join(lines) + newline + newline).encode("utf-8")

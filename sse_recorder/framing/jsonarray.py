"""A JSON body streamed in pieces (Google's `streamGenerateContent` without `alt=sse`, chunked
`application/json`): when its top level is an array, each element is a frame, complete at
its closing bracket or quote (a number or literal at the `,` or `]` after it). Any other
top-level value (an ordinary JSON answer) has no frames: its chunks are all there is, as
before. A regular expression finds the next interesting byte, so the
scan is not a Python loop per byte.
"""

from __future__ import annotations

import re

from sse_recorder.framing.base import Frame, classify_json, spell

_OUTSIDE = re.compile(rb'["{}\[\],]|[^\s"{}\[\],]')  # structure, or a scalar's first byte
_IN_STRING = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"
_SCALAR_END = re.compile(rb'[\s"{}\[\],]')


class ArrayParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._base = 0  # stream position of _buffer[0]
        self._i = 0  # scan position in _buffer
        self._top: bytes | None = None  # b"[" for an array, b"v" for any other value
        self._depth = 0
        self._in_string = False
        self._element: int | None = None  # _buffer index where the open element began
        self._scalar = False  # the open element is a number or literal

    @property
    def open_start(self) -> int:
        return self._base + (self._element if self._element is not None else self._i)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = self._scan()
        keep = self._element if self._element is not None else self._i
        if keep:
            self._buffer = self._buffer[keep:]
            self._base += keep
            self._i -= keep
            if self._element is not None:
                self._element = 0
        return frames

    def finish(self) -> list[Frame]:
        frames = self._scan()
        if self._element is not None:
            text = self._buffer[self._element:].rstrip(_WHITESPACE)
            if text:
                frames.append(self._frame(self._element, self._element + len(text)))
            self._element = None
        self._base += len(self._buffer)
        self._buffer, self._i = b"", 0
        return frames

    def _frame(self, start: int, end: int) -> Frame:
        text = self._buffer[start:end]
        kind, type_ = classify_json(text)
        return Frame(self._base + start, self._base + end, kind, type_, spell(text))

    def _scan(self) -> list[Frame]:
        if self._top == b"v":  # not an array: nothing in it is a frame, however it is cut
            self._i = len(self._buffer)
            return []
        buffer, frames = self._buffer, []
        i, size = self._i, len(self._buffer)
        level = 1 if self._top == b"[" else 0  # the depth at which elements lie
        while i < size:
            if self._in_string:
                match = _IN_STRING.search(buffer, i)
                if match is None:
                    i = size
                    break
                i = match.end()
                if match.group() == b"\\":
                    if i >= size:
                        i -= 1  # the escaped byte is not here yet
                        break
                    i += 1
                    continue
                self._in_string = False
                if self._depth == level and self._element is not None:
                    frames.append(self._frame(self._element, i))
                    self._element = None
                continue
            match = _OUTSIDE.search(buffer, i)
            if match is None:
                i = size
                break
            at, byte = match.start(), match.group()
            i = at + 1
            if self._top is None:
                if byte == b"[":
                    self._top, self._depth, level = b"[", 1, 1
                    continue
                self._top = b"v"  # not an array: nothing to frame
                self._element, i = None, size
                break
            if self._scalar and byte in (b",", b"]", b"}"):
                self._scalar = False
                if self._element is not None:
                    end = self._element + len(buffer[self._element:at].rstrip(_WHITESPACE))
                    frames.append(self._frame(self._element, end))
                    self._element = None
            if byte == b'"':
                self._in_string = True
                if self._element is None and self._depth == level:
                    self._element = at
            elif byte in (b"{", b"["):
                if self._element is None and self._depth == level:
                    self._element = at
                self._depth += 1
            elif byte in (b"}", b"]"):
                self._depth -= 1
                if self._depth == level and self._element is not None:
                    frames.append(self._frame(self._element, i))
                    self._element = None
            elif byte != b",":  # a number or literal begins
                if self._element is None and self._depth == level:
                    self._element, self._scalar = at, True
                i = _scalar_end(buffer, i)
        self._i = i
        return frames


def _scalar_end(buffer: bytes, i: int) -> int:
    """Skip the rest of a number or literal (up to whitespace or structure)."""
    match = _SCALAR_END.search(buffer, i)
    return match.start() if match else len(buffer)

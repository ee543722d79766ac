"""NDJSON / JSON Lines: one frame per line, ended by LF, CRLF or a lone CR.

A CR at the end of what was fed waits for the next byte (it may be the CR of a CRLF), so a
CRLF split between chunks is one line ending; an empty line is no frame; a last line without
its ending is a frame at `finish()`.
"""

from __future__ import annotations

from sse_recorder.framing.base import Frame, classify_json, spell


class LineParser:
    def __init__(self) -> None:
        self._buffer = b""  # from the start of the open line
        self._base = 0  # stream position of _buffer[0]
        self._scanned = 0  # bytes of _buffer known to hold no line ending

    @property
    def open_start(self) -> int:
        return self._base

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        return self._lines(final=False)

    def finish(self) -> list[Frame]:
        frames = self._lines(final=True)
        if self._buffer:
            frames.append(_frame(self._base, self._buffer, len(self._buffer)))
            self._base += len(self._buffer)
            self._buffer = b""
        return frames

    def _lines(self, final: bool) -> list[Frame]:
        buffer, frames, start = self._buffer, [], 0
        i = self._scanned
        size = len(buffer)
        while i < size:
            lf = buffer.find(b"\n", i)
            cr = buffer.find(b"\r", i, lf if lf >= 0 else size)
            if cr >= 0:
                if cr + 1 == size and not final:
                    i = cr
                    break  # maybe the CR of a CRLF: wait for the next byte
                end = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
                text_end = cr
            elif lf >= 0:
                end, text_end = lf + 1, lf
            else:
                i = size
                break
            if text_end > start:
                frames.append(_frame(self._base + start, buffer[start:text_end], end - start))
            start = i = end
        if start:
            self._buffer = buffer[start:]
            self._base += start
        self._scanned = max(i - start, 0)
        return frames


def _frame(position: int, line: bytes, length: int) -> Frame:
    kind, type_ = classify_json(line)
    return Frame(position, position + length, kind, type_, spell(line))

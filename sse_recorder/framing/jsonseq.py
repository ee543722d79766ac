"""JSON text sequences (RFC 7464, `application/json-seq`): RS, a JSON text, LF.

A record is complete at an LF after which its text parses as JSON (a text may hold LFs of
its own), or at the next RS, or at the end: a record that never parsed is INVALID (the RFC's
"possibly truncated"). Bytes before the first RS belong to no record.
"""

from __future__ import annotations

from sse_recorder.framing.base import INVALID, Frame, classify_json, is_json, spell

RS = b"\x1e"


class SeqParser:
    def __init__(self) -> None:
        self._buffer = b""  # from the open record's RS (or unframed bytes before one)
        self._base = 0
        self._scanned = 0

    @property
    def open_start(self) -> int:
        return self._base

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        return self._records(final=False)

    def finish(self) -> list[Frame]:
        frames = self._records(final=True)
        buffer = self._buffer
        if buffer.startswith(RS) and buffer[1:].strip():
            frames.append(_frame(self._base, buffer, len(buffer),
                                 complete=is_json(buffer[1:])))
        self._base += len(buffer)
        self._buffer = b""
        return frames

    def _records(self, final: bool) -> list[Frame]:
        buffer, frames = self._buffer, []
        start, i = 0, self._scanned
        while True:
            if not buffer.startswith(RS, start):
                rs = buffer.find(RS, start)
                if rs < 0:
                    start = i = len(buffer)  # nothing framed yet: not kept
                    break
                start = i = rs
            rs = buffer.find(RS, max(i, start + 1))
            limit = rs if rs >= 0 else len(buffer)
            lf = buffer.find(b"\n", max(i, start + 1), limit)
            while lf >= 0 and not is_json(buffer[start + 1 : lf]):
                lf = buffer.find(b"\n", lf + 1, limit)
            if lf >= 0:
                frames.append(_frame(self._base + start, buffer[start:lf + 1], lf + 1 - start))
                start = i = lf + 1
            elif rs >= 0:  # the next record began before this one was complete
                if buffer[start + 1 : rs].strip():
                    frames.append(_frame(self._base + start, buffer[start:rs], rs - start,
                                         complete=False))
                start = i = rs
            else:
                i = len(buffer)
                break
        self._buffer = buffer[start:]
        self._base += start
        self._scanned = i - start
        return frames


def _frame(position: int, record: bytes, length: int, complete: bool = True) -> Frame:
    text = record[1:].rstrip(b"\n") if complete else record[1:]
    kind, type_ = classify_json(text) if complete else (INVALID, None)
    return Frame(position, position + length, kind, type_, spell(text))

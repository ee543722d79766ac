"""The AWS event stream (`application/vnd.amazon.eventstream`, Bedrock's response streams).

A message is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes),
headers, payload, and a CRC32 of everything before it, lengths big-endian. A header is a
1-byte name length, the name, a 1-byte type and a value whose size the type gives (bytes and
strings carry a 2-byte length). `:message-type` says what a message is: `event` (its
`:event-type` is the frame type), `exception` (an error frame of `:exception-type`, e.g.
Bedrock's `throttlingException`) or `error` (`:error-code`). A bad CRC or impossible lengths
end the framing there: one INVALID frame says why, and the rest of the body is raw chunks.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

from sse_recorder.framing.base import ERROR, FRAME, INVALID, Frame, FrameKind, spell

PRELUDE = 12
MAX_HEADERS = 128 * 1024  # the format's limits, as botocore checks them
MAX_PAYLOAD = 24 * 1024 * 1024
_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")

# header type -> (size of the value, or None for a 2-byte length first; decoder)
_FIXED: dict[int, tuple[int, Any]] = {
    0: (0, lambda raw: True), 1: (0, lambda raw: False),
    2: (1, lambda raw: struct.unpack(">b", raw)[0]),
    3: (2, lambda raw: struct.unpack(">h", raw)[0]),
    4: (4, lambda raw: struct.unpack(">i", raw)[0]),
    5: (8, lambda raw: struct.unpack(">q", raw)[0]),
    8: (8, lambda raw: struct.unpack(">q", raw)[0]),  # timestamp, ms since the epoch
    9: (16, lambda raw: str(uuid.UUID(bytes=raw))),
}
_VARIABLE: dict[int, Any] = {6: bytes, 7: lambda raw: raw.decode("utf-8")}
# :message-type -> (frame kind, the header naming the frame type)
MESSAGE_TYPES: dict[str, tuple[FrameKind, str]] = {
    "event": (FRAME, ":event-type"),
    "exception": (ERROR, ":exception-type"),
    "error": (ERROR, ":error-code"),
}


class FramingError(ValueError):
    pass


def decode_headers(raw: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    i = 0
    try:
        while i < len(raw):
            size = raw[i]
            name = raw[i + 1 : i + 1 + size].decode("utf-8")
            kind = raw[i + 1 + size]
            i += 2 + size
            if kind in _FIXED:
                width, read = _FIXED[kind]
                if i + width > len(raw):
                    raise FramingError(f"header {name!r} runs past the headers")
                headers[name] = read(raw[i : i + width])
                i += width
            elif kind in _VARIABLE:
                (length,) = struct.unpack(">H", raw[i : i + 2])
                value = raw[i + 2 : i + 2 + length]
                if len(value) != length:
                    raise FramingError(f"header {name!r} runs past the headers")
                headers[name] = _VARIABLE[kind](value)
                i += 2 + length
            else:
                raise FramingError(f"header {name!r} has unknown type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise FramingError(f"bad headers ({exc})") from None
    return headers


def encode_headers(headers: Sequence[tuple[str, str | bytes | bool | int]]) -> bytes:
    """Headers as strings (7), bytes (6), booleans (0/1) or int32 (4)."""
    out = bytearray()
    for name, value in headers:
        raw_name = name.encode("utf-8")
        out += bytes([len(raw_name)]) + raw_name
        if isinstance(value, bool):
            out.append(0 if value else 1)
        elif isinstance(value, int):
            out += b"\x04" + struct.pack(">i", value)
        else:
            raw = value.encode("utf-8") if isinstance(value, str) else value
            out += (b"\x07" if isinstance(value, str) else b"\x06")
            out += struct.pack(">H", len(raw)) + raw
    return bytes(out)


def encode_raw(raw_headers: bytes, payload: bytes) -> bytes:
    total = PRELUDE + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + _U32.pack(zlib.crc32(prelude)) + raw_headers + payload
    return message + _U32.pack(zlib.crc32(message))


def encode(headers: Sequence[tuple[str, str | bytes | bool | int]], payload: bytes) -> bytes:
    """One message, CRCs computed."""
    return encode_raw(encode_headers(headers), payload)


def lengths(data: bytes, at: int = 0) -> tuple[int, int]:
    """(total length, headers length) from the prelude at `at` (not checked)."""
    total, headers_length, _ = _PRELUDE.unpack_from(data, at)
    return total, headers_length


def split(message: bytes) -> tuple[bytes, bytes]:
    """(raw headers, payload) of one whole message (its CRCs not checked)."""
    _, headers_length, _ = _PRELUDE.unpack_from(message)
    return (message[PRELUDE : PRELUDE + headers_length],
            message[PRELUDE + headers_length : -4])


def check_prelude(prelude: bytes) -> tuple[int, int]:
    total, headers_length, crc = _PRELUDE.unpack(prelude)
    if zlib.crc32(prelude[:8]) != crc:
        raise FramingError("prelude CRC mismatch")
    if headers_length > MAX_HEADERS:
        raise FramingError(f"headers length {headers_length} over {MAX_HEADERS}")
    if total < PRELUDE + 4 + headers_length:
        raise FramingError(f"total length {total} too short")
    if total - PRELUDE - 4 - headers_length > MAX_PAYLOAD:
        raise FramingError(f"payload over {MAX_PAYLOAD} bytes")
    return total, headers_length


def describe(message: bytes) -> tuple[FrameKind, str | None, bytes]:
    """(kind, type, payload) of one whole, checked message."""
    total, headers_length = check_prelude(message[:PRELUDE])
    (crc,) = _U32.unpack(message[-4:])
    if zlib.crc32(message[:-4]) != crc:
        raise FramingError("message CRC mismatch")
    headers = decode_headers(message[PRELUDE : PRELUDE + headers_length])
    payload = message[PRELUDE + headers_length : -4]
    kind, type_header = MESSAGE_TYPES.get(str(headers.get(":message-type", "event")),
                                          (FRAME, ":event-type"))
    if kind is ERROR and type_header == ":error-code" and not payload:
        payload = str(headers.get(":error-message", "")).encode()
    found = headers.get(type_header)
    return kind, None if found is None else str(found), payload


class EventStreamParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._base = 0
        self.broken: str | None = None  # why the framing stopped

    @property
    def open_start(self) -> int:
        return self._base

    def feed(self, data: bytes) -> list[Frame]:
        if self.broken is not None:
            self._base += len(data)
            return []
        self._buffer += data
        frames: list[Frame] = []
        buffer, i = self._buffer, 0
        while len(buffer) - i >= PRELUDE:
            try:
                total, _ = check_prelude(buffer[i : i + PRELUDE])
                if len(buffer) - i < total:
                    break
                kind, type_, payload = describe(buffer[i : i + total])
            except FramingError as exc:
                frames.append(Frame(self._base + i, self._base + len(buffer), INVALID, None,
                                    str(exc)))
                self.broken = str(exc)
                i = len(buffer)
                break
            frames.append(Frame(self._base + i, self._base + i + total, kind, type_,
                                spell(payload)))
            i += total
        self._buffer = buffer[i:]
        self._base += i
        return frames

    def finish(self) -> list[Frame]:
        frames = []
        if self._buffer and self.broken is None:
            self.broken = f"truncated message ({len(self._buffer)} bytes at the end)"
            frames.append(Frame(self._base, self._base + len(self._buffer), INVALID, None,
                                self.broken))
        self._base += len(self._buffer)
        self._buffer = b""
        return frames

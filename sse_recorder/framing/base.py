"""What every stream framing shares: the frame value, the parser protocol, payload spelling.

A parser is sans-IO like `sse.SSEParser`: bytes in (cut anywhere), frames out, each with its
stream positions, so the recorder can map a frame to the chunks it spans and the replay can
cut the body at frame boundaries for faults. `finish()` says the stream ended (a last line
without its line ending is still a frame).
"""

from __future__ import annotations

import base64
import json
from typing import Final, Literal, NamedTuple, Protocol

BASE64_PREFIX = "base64:"
FrameKind = Literal["frame", "error", "invalid"]  # the events table's `kind` values for frames
FRAME: Final = "frame"
ERROR: Final = "error"
INVALID: Final = "invalid"
FRAME_KINDS = (FRAME, ERROR, INVALID)


class Frame(NamedTuple):
    """One frame: where it lies in the stream (its terminator included) and what it says."""

    start: int
    end: int
    kind: FrameKind  # INVALID: the framing is broken here
    type: str | None  # e.g. the AWS `:event-type`, a JSON object's "type"
    data: str  # the payload as text (see `spell`)


class Parser(Protocol):
    def feed(self, data: bytes) -> list[Frame]: ...

    def finish(self) -> list[Frame]: ...

    @property
    def open_start(self) -> int:
        """Stream position of the first byte not yet part of a returned frame."""
        ...


def spell(payload: bytes) -> str:
    """A payload as the events table's text: UTF-8 as is, anything else (and text that would
    read as the prefix) as `base64:` and its base64, so the prefix is never ambiguous."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.startswith(BASE64_PREFIX):
        return text
    return BASE64_PREFIX + base64.b64encode(payload).decode("ascii")


def unspell(data: str) -> bytes:
    """The payload bytes a stored `data` spells."""
    if data.startswith(BASE64_PREFIX):
        return base64.b64decode(data[len(BASE64_PREFIX):])
    return data.encode("utf-8")


def classify_json(payload: bytes) -> tuple[FrameKind, str | None]:
    """(kind, type) of a JSON text frame: an object with an "error" key is an error frame
    (Ollama's and Google's error shape), its "type" string is the frame type; text that is
    not JSON is INVALID."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return INVALID, None
    if not isinstance(value, dict):
        return FRAME, None
    kind: FrameKind = ERROR if "error" in value else FRAME
    type_ = value.get("type")
    return kind, type_ if isinstance(type_, str) else None


def is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return True

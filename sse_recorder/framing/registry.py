"""One entry per stream framing: its parser, and what faults and redaction need of it.

`DIALECTS` maps a media type (no parameters, lower case) to its `Dialect`; `dialect_for`
reads it from response headers. An unknown type has no dialect: its chunks are kept and
replayed as they came, with no frames.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sse_recorder.framing import eventstream
from sse_recorder.framing.base import INVALID, Parser
from sse_recorder.framing.eventstream import EventStreamParser
from sse_recorder.framing.jsonarray import ArrayParser
from sse_recorder.framing.jsonseq import RS, SeqParser
from sse_recorder.framing.ndjson import LineParser
from sse_recorder.model import Headers, header_value

Span = tuple[int, int, bytes]


class Scrub(Protocol):
    """What redaction offers (`record.redact.Scrubber`)."""

    def spans(self, data: bytes) -> list[Span]: ...

    def text(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Dialect:
    """What a framing means to the rest of the tool (all pure: bytes in, bytes out)."""

    name: str
    parser: Callable[[], Parser]
    binary: bool
    # where a frame's own text lies in a block that ends with it (separators before it)
    locate: Callable[[bytes], tuple[int, int]]

    def corrupt(self, block: bytes, mode: str) -> bytes | None:
        """The block (ending with one whole frame) corrupted as `mode` says; None when the
        mode means nothing here (`field` is SSE's; `crc` the event stream's)."""
        if self.binary:
            return _corrupt_message(block, mode)
        start, end = self.locate(block)
        return _TEXT_CORRUPTIONS[mode](block, start, end) if mode in _TEXT_CORRUPTIONS else None

    def adversarial_cuts(self, data: bytes) -> list[int]:
        """Cut points inside frames that break naive readers."""
        return _message_cuts(data) if self.binary else _text_cuts(data)

    def redact(self, region: bytes, scrub: Scrub) -> list[Span]:
        """Redaction spans for a run of whole frames. Text frames are redacted in place; an
        event stream message whose payload changes is re-encoded whole (its lengths and
        CRCs follow the payload); one whose framing is broken is kept as received."""
        if not self.binary:
            return scrub.spans(region)
        out: list[Span] = []
        for frame in EventStreamParser().feed(region):
            if frame.kind == INVALID:
                break
            raw_headers, payload = eventstream.split(region[frame.start:frame.end])
            redacted = scrub.text(payload)
            if redacted != payload:
                out.append((frame.start, frame.end,
                            eventstream.encode_raw(raw_headers, redacted)))
        return out


def _line_text(block: bytes) -> tuple[int, int]:
    stripped = block.rstrip(b"\r\n")
    return len(stripped) - len(stripped.lstrip(b"\r\n")), len(stripped)


def _seq_text(block: bytes) -> tuple[int, int]:
    start = block.rfind(RS) + 1
    return start, len(block.rstrip(b"\n"))


def _element_text(block: bytes) -> tuple[int, int]:
    stripped = block.lstrip(b" \t\r\n[,")
    return len(block) - len(stripped), len(block)


_TEXT_CORRUPTIONS: dict[str, Callable[[bytes, int, int], bytes]] = {
    "json": lambda b, s, e: b[:s] + b"!" + b[s:],  # a stray byte before the value
    "utf8": lambda b, s, e: b[: s + 1] + b"\xff\xfe" + b[s + 1 :],
    "truncate": lambda b, s, e: b[: s + max((e - s) // 2, 1)],  # half the text, no ending
}


def _corrupt_message(message: bytes, mode: str) -> bytes | None:
    """One whole message with a bad CRC, cut in half, or a payload that is not JSON (or not
    UTF-8) under valid CRCs."""
    if len(message) < 16:
        return None
    raw_headers, payload = eventstream.split(message)
    if mode == "crc":
        return message[:-1] + bytes([message[-1] ^ 0xFF])
    if mode == "truncate":
        return message[: len(message) // 2]
    if mode == "json":
        return eventstream.encode_raw(raw_headers, b"!" + payload)
    if mode == "utf8":
        return eventstream.encode_raw(raw_headers, b"\xff\xfe" + payload)
    return None


def _message_cuts(data: bytes) -> list[int]:
    """Inside each prelude (after 1, 4, 8 and 11 bytes), in the headers, in the payload and
    inside the message CRC."""
    points: set[int] = set()
    i = 0
    while i + 12 <= len(data):
        total, headers_length = eventstream.lengths(data, i)
        if total < 16 or i + total > len(data):
            break
        points.update(i + k for k in (1, 4, 8, 11))
        points.add(i + 12 + headers_length // 2)
        points.add(i + 12 + headers_length + (total - 16 - headers_length) // 2)
        points.add(i + total - 2)
        i += total
    return sorted(c for c in points if 0 < c < len(data))


def _text_cuts(data: bytes) -> list[int]:
    """Between CR and LF, inside a UTF-8 character, after a frame's first byte and before
    its line ending."""
    points: set[int] = set()
    for match in re.finditer(rb"\r\n", data):
        points.add(match.start() + 1)
    for match in re.finditer(rb"[\xc0-\xff]", data):
        points.add(match.start() + 1)
    for match in re.finditer(rb"(?:^|[\n\x1e,\[])\s*([^\s\n])", data):
        points.add(match.start(1) + 1)
    for match in re.finditer(rb"[^\r\n](\r?\n)", data):
        points.add(match.start(1))
    return sorted(c for c in points if 0 < c < len(data))


NDJSON = Dialect("ndjson", LineParser, False, _line_text)
JSON_SEQ = Dialect("json-seq", SeqParser, False, _seq_text)
EVENT_STREAM = Dialect("aws-eventstream", EventStreamParser, True, lambda b: (0, len(b)))
JSON = Dialect("json", ArrayParser, False, _element_text)

# media type -> dialect; `record --stream-type` adds types to stream (see policy.py)
DIALECTS: dict[str, Dialect] = {
    "application/x-ndjson": NDJSON,
    "application/ndjson": NDJSON,
    "application/jsonl": NDJSON,
    "application/x-jsonlines": NDJSON,
    "application/jsonlines": NDJSON,
    "application/json-seq": JSON_SEQ,
    "application/vnd.amazon.eventstream": EVENT_STREAM,
    "application/json": JSON,
}


def media_type(headers: Headers) -> str:
    return (header_value(headers, "content-type") or "").split(";", 1)[0].strip().lower()


def dialect_for(headers: Headers) -> Dialect | None:
    return DIALECTS.get(media_type(headers))


# inject shapes that are frames of a vendor's own stream format (not SSE events)
FRAME_SHAPES: dict[str, bytes] = {
    "bedrock-throttling": eventstream.encode(
        [(":exception-type", "throttlingException"), (":content-type", "application/json"),
         (":message-type", "exception")],
        json.dumps({"message": "Too many requests, please wait before trying again."},
                   separators=(",", ":")).encode()),
    "bedrock-validation": eventstream.encode(
        [(":exception-type", "validationException"), (":content-type", "application/json"),
         (":message-type", "exception")],
        b'{"message":"Malformed input request, please reformat your input and try again."}'),
    "ollama-error": b'{"error":"an error was encountered while running the model"}\n',
}

"""Whether the recorder streams a response through (chunk by chunk, live) or lets the proxy
buffer it and stores it whole: a pure decision on the response head.

| body framing (RFC 9112)         | event stream or stream type | any other type             |
|---------------------------------|-----------------------------|----------------------------|
| none (HEAD, 1xx, 204, 304)      | buffer                      | buffer                     |
| chunked / HTTP/2                | stream                      | stream                     |
| close-delimited                 | stream                      | stream                     |
| Content-Length                  | stream                      | stream above `buffer_limit`|

A streamed body reaches the client as it arrives and is stored chunk by chunk with offsets;
a buffered one (a small JSON answer) is one chunk, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sse_recorder.framing.registry import DIALECTS, media_type
from sse_recorder.model import Framing, ResponseHead, body_framing, header_value

BUFFER_LIMIT = 1 << 20  # Content-Length bodies up to this size are buffered (unless a stream)
STREAM_TYPES = frozenset({"text/event-stream", *DIALECTS} - {"application/json"})


@dataclass(frozen=True)
class StreamPolicy:
    stream_types: frozenset[str] = STREAM_TYPES
    buffer_limit: int = BUFFER_LIMIT

    def with_types(self, extra: Iterable[str]) -> StreamPolicy:
        """This policy with more media types that always stream."""
        return StreamPolicy(self.stream_types | {t.strip().lower() for t in extra if t.strip()},
                            self.buffer_limit)


def _length_rule(head: ResponseHead, known: bool, policy: StreamPolicy) -> bool:
    if known:
        return True
    length = (header_value(head.headers, "content-length") or "").strip()
    return length.isdigit() and int(length) > policy.buffer_limit


_RULES: dict[Framing, Callable[[ResponseHead, bool, StreamPolicy], bool]] = {
    Framing.NONE: lambda head, known, policy: False,
    Framing.CHUNKED: lambda head, known, policy: True,
    Framing.CLOSE: lambda head, known, policy: True,
    Framing.LENGTH: _length_rule,
}


DEFAULT = StreamPolicy()


def streams(head: ResponseHead, method: str, policy: StreamPolicy = DEFAULT) -> bool:
    """Whether the response is streamed through (see the table above)."""
    known = media_type(head.headers) in policy.stream_types
    return _RULES[body_framing(head, method)](head, known, policy)

"""Keep credentials out of cassettes: pure functions over headers, URLs and bodies.

Redacted values are replaced by one fixed marker so the shape of what was sent stays
visible. JSON fields are redacted textually, inside one line, so the same rule serves
request bodies, whole response bodies and SSE streams cut into arbitrary chunks (the
recorder only hands over complete lines, see `StreamRedactor`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sse_recorder.model import Headers

MARKER = "[REDACTED]"
MAX_HELD = 1 << 20  # a "line" longer than this is released unterminated

DEFAULT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
        "private-token",
    }
)
DEFAULT_QUERY_PARAMS = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "key",
        "access_token",
        "token",
        "client_secret",
        "password",
        "signature",
        "sig",
        "x-amz-signature",
        "x-amz-security-token",
    }
)
DEFAULT_JSON_FIELDS = frozenset(
    {
        "api_key",
        "apiKey",
        "access_token",
        "accessToken",
        "refresh_token",
        "refreshToken",
        "id_token",
        "newToken",
        "client_secret",
        "password",
        "secret",
    }
)


@dataclass(frozen=True)
class RedactionRules:
    """What to redact. Header and query names match case-insensitively, JSON keys exactly."""

    headers: frozenset[str] = DEFAULT_HEADERS
    query_params: frozenset[str] = DEFAULT_QUERY_PARAMS
    json_fields: frozenset[str] = DEFAULT_JSON_FIELDS
    _json: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False, default=None)

    @classmethod
    def with_extra(
        cls,
        headers: Iterable[str] = (),
        query_params: Iterable[str] = (),
        json_fields: Iterable[str] = (),
    ) -> RedactionRules:
        """The defaults plus the user's own names."""
        return cls(
            headers=DEFAULT_HEADERS | {h.lower() for h in headers},
            query_params=DEFAULT_QUERY_PARAMS | {q.lower() for q in query_params},
            json_fields=DEFAULT_JSON_FIELDS | set(json_fields),
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", frozenset(h.lower() for h in self.headers))
        object.__setattr__(self, "query_params", frozenset(q.lower() for q in self.query_params))
        keys = b"|".join(re.escape(k.encode()) for k in sorted(self.json_fields))
        # "key" : "string (possibly cut at end of line)" | number | true | false
        pattern = (
            rb'("(?:' + keys + rb')"\s*:\s*)'
            rb'("(?:[^"\\\r\n]|\\.)*"?|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false)'
        )
        object.__setattr__(self, "_json", re.compile(pattern) if keys else None)

    def redact_headers(self, headers: Headers) -> Headers:
        return tuple(
            (name, MARKER if name.lower() in self.headers else value) for name, value in headers
        )

    def redact_url(self, url: str) -> str:
        parts = urlsplit(url)
        if not parts.query:
            return url
        return urlunsplit(parts._replace(query=self._redact_query(parts.query)))

    def _redact_query(self, query: str) -> str:
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(k.lower() in self.query_params for k, _ in pairs):
            return query
        return urlencode(
            [(k, MARKER if k.lower() in self.query_params else v) for k, v in pairs],
            quote_via=quote,
            safe="[]",
        )

    def redact_body(self, body: bytes, content_type: str | None = None) -> bytes:
        """Redact JSON fields anywhere in a body; form bodies also lose secret parameters."""
        if content_type and content_type.lower().startswith("application/x-www-form-urlencoded"):
            try:
                return self._redact_query(body.decode("ascii")).encode("ascii")
            except UnicodeDecodeError:
                pass
        return self.redact_json_text(body)

    def redact_json_text(self, data: bytes) -> bytes:
        regex = self._json
        if regex is None:
            return data
        return regex.sub(lambda m: m.group(1) + b'"' + MARKER.encode() + b'"', data)

    def json_spans(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(start, end, replacement) of every JSON value to redact in `data`."""
        regex = self._json
        if regex is None:
            return []
        marker = b'"' + MARKER.encode() + b'"'
        return [(m.start(2), m.end(2), marker) for m in regex.finditer(data)]


class StreamRedactor:
    """Redacts a chunked body while keeping its chunk boundaries (and so its timing).

    JSON fields never span lines, so a chunk is released once every line it touches is
    complete; a chunk ending mid-line waits for the line's end (or the end of the body).
    """

    def __init__(self, rules: RedactionRules) -> None:
        self._rules = rules
        self._held: list[tuple[int, bytes]] = []  # (offset_ns, data) not yet released
        self._held_size = 0
        self.redacted = False  # whether the last release had anything to redact

    def feed(self, offset_ns: int, data: bytes) -> list[tuple[int, bytes]]:
        return self.feed_many([(offset_ns, data)])

    def feed_many(self, chunks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Take several chunks at once; release all up to the last one ending a line."""
        held = self._held
        held.extend(chunks)
        self._held_size += sum(len(data) for _, data in chunks)
        last = len(held) - 1
        while last >= 0 and not held[last][1].endswith((b"\n", b"\r")):
            last -= 1
        if self._held_size > MAX_HELD:
            last = len(held) - 1
        if last < 0:
            return []
        ready, self._held = held[: last + 1], held[last + 1 :]
        self._held_size = sum(len(data) for _, data in self._held)
        return self._redact(ready)

    def flush(self) -> list[tuple[int, bytes]]:
        ready, self._held, self._held_size = self._held, [], 0
        return self._redact(ready) if ready else []

    def _redact(self, chunks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        region = chunks[0][1] if len(chunks) == 1 else b"".join(data for _, data in chunks)
        spans = self._rules.json_spans(region)
        self.redacted = bool(spans)
        if not spans:
            return chunks
        out = bytearray()
        boundaries: list[int] = []
        pos = 0
        cut = 0
        ends: list[int] = []
        for _, data in chunks:
            pos += len(data)
            ends.append(pos)
        span_iter = iter(spans)
        span = next(span_iter, None)
        shift = 0
        for end in ends[:-1]:
            while span is not None and span[1] <= end:
                shift += len(span[2]) - (span[1] - span[0])
                span = next(span_iter, None)
            if span is not None and span[0] < end < span[1]:
                fraction = (end - span[0]) / (span[1] - span[0])
                boundaries.append(span[0] + shift + round(fraction * len(span[2])))
            else:
                boundaries.append(end + shift)
        for start, end, replacement in spans:
            out += region[cut:start]
            out += replacement
            cut = end
        out += region[cut:]
        result = []
        previous = 0
        for (offset_ns, _), boundary in zip(chunks, [*boundaries, len(out)], strict=True):
            result.append((offset_ns, bytes(out[previous:boundary])))
            previous = boundary
        return result

"""Which recorded interaction answers an incoming request: pure functions, no I/O.

A request matches a recording when every enabled criterion agrees (method, path, query,
body by default). JSON bodies compare as JSON (key order ignored); a recorded value that
was redacted matches any value; listed JSON fields, query parameters and headers are
ignored. Identical requests get the recorded responses in recorded order, then the last
one again or an error. A miss names the closest recording and what differed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sse_recorder.errors import ConfigError
from sse_recorder.model import Headers, Interaction, RecordedRequest
from sse_recorder.record.redact import MARKER

CRITERIA = ("method", "scheme", "host", "path", "query", "body", "headers")
DEFAULT_CRITERIA = frozenset({"method", "path", "query", "body"})
# Never compared by a bare "headers" criterion: they describe the connection, not the
# request (Last-Event-ID is served by resuming the recorded stream).
UNCOMPARED_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection",
    "transfer-encoding", "te", "trailer", "upgrade", "last-event-id",
})


class WhenExhausted(StrEnum):
    REPEAT_LAST = "repeat-last"
    ERROR = "error"


@dataclass(frozen=True)
class MatchConfig:
    criteria: frozenset[str] = DEFAULT_CRITERIA
    ignore_json: frozenset[str] = frozenset()
    ignore_query: frozenset[str] = frozenset()
    ignore_headers: frozenset[str] = frozenset()
    # with "headers": only these names compared (none listed: every header but the
    # ignored ones and UNCOMPARED_HEADERS)
    match_headers: frozenset[str] = frozenset()
    when_exhausted: WhenExhausted = WhenExhausted.REPEAT_LAST

    @classmethod
    def parse(
        cls,
        match: str | None = None,
        ignore_json: Iterable[str] = (),
        ignore_query: Iterable[str] = (),
        ignore_headers: Iterable[str] = (),
        when_exhausted: str = WhenExhausted.REPEAT_LAST.value,
    ) -> MatchConfig:
        """`match` is a comma list of criteria; `header:NAME` also compares that header."""
        criteria = set(DEFAULT_CRITERIA)
        headers: set[str] = set()
        if match:
            criteria = set()
            for part in (p.strip() for p in match.split(",") if p.strip()):
                if part.lower().startswith("header:"):
                    criteria.add("headers")
                    headers.add(part.split(":", 1)[1].strip().lower())
                elif part in CRITERIA:
                    criteria.add(part)
                else:
                    raise ConfigError(
                        f"bad --match part {part!r}: use {', '.join(CRITERIA)} or header:NAME"
                    )
        try:
            exhausted = WhenExhausted(when_exhausted)
        except ValueError:
            raise ConfigError(
                f"bad exhausted policy {when_exhausted!r}: use repeat-last or error"
            ) from None
        return cls(
            frozenset(criteria),
            frozenset(ignore_json),
            frozenset(q.lower() for q in ignore_query),
            frozenset(h.lower() for h in ignore_headers),
            frozenset(headers),
            exhausted,
        )


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    method: str
    target: str  # path and query, as on the request line
    headers: Headers
    body: bytes = b""
    scheme: str = "http"
    host: str = ""


@dataclass(frozen=True, slots=True)
class Miss:
    """No recording matched: the nearest one and what differed, or why none is left."""

    nearest: Interaction | None
    differences: tuple[str, ...]
    exhausted: bool = False

    def explain(self, request: IncomingRequest) -> str:
        lines = [f"sse-recorder: no recorded interaction matches {request.method} "
                 f"{request.target}"]
        if self.exhausted and self.nearest is not None:
            lines = [f"sse-recorder: every recorded response to {request.method} "
                     f"{request.target} was already served (policy: error)"]
        elif self.nearest is not None:
            n = self.nearest
            lines.append(f"nearest recording: #{n.id} {n.request.method} {n.request.url}")
            lines.extend(f"  differs in {d}" for d in self.differences)
        else:
            lines.append("the cassette has no interactions")
        return "\n".join(lines) + "\n"


def _split(url_or_target: str) -> tuple[str, str, str, str]:
    parts = urlsplit(url_or_target)
    return parts.scheme, parts.hostname or "", parts.path or "/", parts.query


def _query(query: str, ignored: frozenset[str]) -> list[tuple[str, str]]:
    return sorted(
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in ignored
    )


def _strip_json(value: Any, ignored: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip_json(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [_strip_json(v, ignored) for v in value]
    return value


def _json_differences(recorded: Any, incoming: Any, where: str = "") -> list[str]:
    """Differences between two JSON values; a redacted recorded value matches anything."""
    if recorded == MARKER:
        return []
    if isinstance(recorded, dict) and isinstance(incoming, dict):
        out: list[str] = []
        for key in sorted(set(recorded) | set(incoming), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in incoming:
                out.append(f"body field {path}: missing from the request")
            elif key not in recorded:
                out.append(f"body field {path}: not in the recording")
            else:
                out.extend(_json_differences(recorded[key], incoming[key], path))
        return out
    if isinstance(recorded, list) and isinstance(incoming, list) and len(recorded) == len(
        incoming
    ):
        out = []
        for index, (a, b) in enumerate(zip(recorded, incoming, strict=True)):
            out.extend(_json_differences(a, b, f"{where}[{index}]"))
        return out
    if recorded != incoming:
        return [f"body field {where or '(root)'}: recorded {_short(recorded)}, "
                f"got {_short(incoming)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _body_differences(recorded: bytes, incoming: bytes, config: MatchConfig) -> list[str]:
    if recorded == incoming:
        return []
    try:
        a, b = json.loads(recorded or b"null"), json.loads(incoming or b"null")
    except ValueError:
        return [f"body: recorded {len(recorded)} bytes, got {len(incoming)} bytes that differ"]
    return _json_differences(_strip_json(a, config.ignore_json), _strip_json(b, config.ignore_json))


def differences(
    recorded: RecordedRequest, incoming: IncomingRequest, config: MatchConfig
) -> list[str]:
    """What keeps `incoming` from matching `recorded` under `config` (empty: a match)."""
    out: list[str] = []
    scheme, host, path, query = _split(recorded.url)
    _, _, in_path, in_query = _split(incoming.target)
    c = config.criteria
    if "method" in c and recorded.method.upper() != incoming.method.upper():
        out.append(f"method: recorded {recorded.method}, got {incoming.method}")
    if "scheme" in c and incoming.scheme and scheme != incoming.scheme:
        out.append(f"scheme: recorded {scheme}, got {incoming.scheme}")
    if "host" in c and incoming.host and host.lower() != incoming.host.lower():
        out.append(f"host: recorded {host}, got {incoming.host}")
    if "path" in c and path != in_path:
        out.append(f"path: recorded {path}, got {in_path}")
    if "query" in c:
        a, b = _query(query, config.ignore_query), _query(in_query, config.ignore_query)
        if a != b:
            a = [(k, v) for k, v in a if not (v == MARKER and any(k == k2 for k2, _ in b))]
            b = [(k, v) for k, v in b if not any(k == k2 and v2 == MARKER for k2, v2 in
                                                 _query(query, config.ignore_query))]
            if a != b:
                out.append(f"query: recorded {_fmt_query(a)}, got {_fmt_query(b)}")
    if "body" in c:
        out.extend(_body_differences(recorded.body, incoming.body, config))
    if "headers" in c:
        out.extend(_header_differences(recorded.headers, incoming.headers, config))
    return out


def _fmt_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in pairs) or "(none)"


def _header_differences(
    recorded: Headers, incoming: Headers, config: MatchConfig
) -> list[str]:
    def wanted(name: str) -> bool:
        if name in config.ignore_headers:
            return False
        if config.match_headers:
            return name in config.match_headers
        return name not in UNCOMPARED_HEADERS

    def pick(headers: Headers) -> dict[str, str]:
        return {k.lower(): v for k, v in headers if wanted(k.lower())}

    a, b = pick(recorded), pick(incoming)
    return [
        f"header {name}: recorded {a.get(name, '(absent)')!r}, got {b.get(name, '(absent)')!r}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name) and a.get(name) != MARKER
    ]


@dataclass
class Matcher:
    """Matches requests against recordings, serving repeats in recorded order."""

    interactions: Sequence[Interaction]
    config: MatchConfig = field(default_factory=MatchConfig)
    _served: dict[int, int] = field(default_factory=dict)  # interaction id -> times served
    # Recordings by (method, path) as far as the criteria compare them, so a request is
    # checked in full only against the few that can match (the rest are a miss anyway).
    _index: dict[tuple[str, str], list[Interaction]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for interaction in self.interactions:
            if interaction.response is not None:
                key = self._key(interaction.request.method, _split(interaction.request.url)[2])
                self._index.setdefault(key, []).append(interaction)

    def _key(self, method: str, path: str) -> tuple[str, str]:
        criteria = self.config.criteria
        return (method.upper() if "method" in criteria else "",
                path if "path" in criteria else "")

    def match(self, request: IncomingRequest) -> Interaction | Miss:
        bucket = self._index.get(
            self._key(request.method, _split(request.target)[2]), []
        )
        candidates = [
            i for i in bucket if not differences(i.request, request, self.config)
        ]
        if not candidates:
            return self._nearest(request)
        for candidate in candidates:
            if candidate.id not in self._served:
                self._served[candidate.id] = 1
                return candidate
        if self.config.when_exhausted is WhenExhausted.ERROR:
            return Miss(candidates[-1], (), exhausted=True)
        last = candidates[-1]
        self._served[last.id] += 1
        return last

    def _nearest(self, request: IncomingRequest) -> Miss:
        best: tuple[int, Interaction, list[str]] | None = None
        for interaction in self.interactions:
            found = differences(interaction.request, request, self.config)
            # Method and path differences weigh more than a body field or a header.
            weight = sum(3 if d.startswith(("method", "path")) else 1 for d in found)
            if interaction.response is None:
                weight += 10
            if best is None or weight < best[0]:
                best = (weight, interaction, found)
        if best is None:
            return Miss(None, ())
        return Miss(best[1], tuple(best[2]) or ("(a recording without a response)",))

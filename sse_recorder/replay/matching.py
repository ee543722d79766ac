"""Which recorded interaction answers an incoming request: pure functions, no I/O.

A request matches a recording when every enabled criterion agrees (method, path, query,
body by default). JSON bodies compare as JSON (key order ignored); a recorded value that
was redacted matches any value; listed JSON fields, query parameters and headers are
ignored. Identical requests get the recorded responses in recorded order, then the last
one again or an error. A miss names the closest recording and what differed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from sse_recorder.errors import ConfigError
from sse_recorder.model import Headers, Interaction, RecordedRequest
from sse_recorder.record.redact import MARKER
from sse_recorder.wire.connections import HOP_BY_HOP

CANDIDATES_KEPT = 4096  # distinct requests whose matches a Matcher remembers
CACHED_BODY = 4096  # bytes: a request with a larger body is matched afresh every time
CRITERIA = ("method", "scheme", "host", "path", "query", "body", "headers")
DEFAULT_CRITERIA = frozenset({"method", "path", "query", "body"})
# Never compared by a bare "headers" criterion: they describe the connection, not the
# request (Last-Event-ID is served by resuming the recorded stream).
UNCOMPARED_HEADERS = HOP_BY_HOP | {"host", "last-event-id"}
# The criterion each ignore list takes names out of: when it is not compared, the list
# changes nothing (`MatchConfig.idle`), which the command line refuses rather than accept.
IGNORED_FROM = {"ignore_json": "body", "ignore_query": "query", "ignore_headers": "headers"}


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

    def idle(self, ignore: str) -> frozenset[str]:
        """The names in the ignore list `ignore` (an `IGNORED_FROM` key) that no comparison
        looks at: all of them when its criterion is not compared, and with `header:NAME`
        criteria the headers not named."""
        names: frozenset[str] = getattr(self, ignore)
        if IGNORED_FROM[ignore] not in self.criteria:
            return names
        if ignore == "ignore_headers" and self.match_headers:
            return names - self.match_headers
        return frozenset()


# The scheme a request had before `replay --proxy` (or `record --replay-matched`) rerouted
# it to the replay server over plain HTTP: the router sends it in this field, which the
# server takes off before matching. Without it the scheme is unknown (a client of the
# replay server itself), and `--match scheme` does not compare it.
SCHEME_FIELD = "X-SSE-Recorder-Scheme"


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    method: str
    target: str  # path and query, as on the request line
    headers: Headers
    body: bytes = b""
    scheme: str = ""  # "": unknown, not compared
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


_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


@functools.lru_cache(maxsize=4096)  # the same recorded URLs and targets, request after request
def split_url(url_or_target: str) -> tuple[str, str, str, str]:
    """(scheme, host, path, query) of a recorded URL or a request target, whatever it holds.

    Never raises: a request target is whatever a client sent (`//[`, `http://[::1/x`), and
    `urlsplit` raises ValueError for brackets it cannot pair. An origin-form target (`/...`)
    is a path and a query, never an authority, even when it starts with `//`."""
    scheme, authority, rest = "", "", url_or_target
    if not url_or_target.startswith("/"):
        absolute = _ABSOLUTE.fullmatch(url_or_target)
        if absolute is not None:
            scheme, authority, rest = absolute.groups()
    path, _, query = rest.partition("#")[0].partition("?")
    return scheme.lower(), host_of(authority), path or "/", query


def host_of(authority: str) -> str:
    """The host of `user@host:port` or `[v6]:port`, lower-case, without brackets."""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0].lower()
    return hostport.partition(":")[0].lower()


def _query(query: str, ignored: frozenset[str]) -> list[tuple[str, str]]:
    if not query:
        return []
    return sorted(
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in ignored
    )


_NOT_JSON = object()


def _load(body: bytes, parsed: dict[bytes, Any]) -> Any:
    """`body` as JSON, parsed once per request (`parsed` is the request's memo); _NOT_JSON
    when it is not JSON, or nests deeper than the parser can go (a RecursionError)."""
    value = parsed.get(body, parsed)
    if value is parsed:
        try:
            value = json.loads(body or b"null")
        except (ValueError, RecursionError):
            value = _NOT_JSON
        parsed[body] = value
    return value


def _json_differences(recorded: Any, incoming: Any, ignored: frozenset[str]) -> list[str]:
    """Differences between two JSON values, in document order; keys in `ignored` are
    skipped at any depth and a redacted recorded value matches anything. Iterative, so
    that no nesting depth can exhaust the stack."""
    out: list[str] = []
    stack: list[tuple[Any, Any, str] | str] = [(recorded, incoming, "")]
    while stack:
        item = stack.pop()
        if isinstance(item, str):  # a difference found above, kept in its place
            out.append(item)
            continue
        a, b, where = item
        if a == MARKER:
            continue
        todo: list[tuple[Any, Any, str] | str] = []
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted((set(a) | set(b)) - ignored, key=str):
                path = f"{where}.{key}" if where else str(key)
                if key not in b:
                    todo.append(f"body field {path}: missing from the request")
                elif key not in a:
                    todo.append(f"body field {path}: not in the recording")
                else:
                    todo.append((a[key], b[key], path))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            todo = [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))]
        elif a != b:
            todo = [f"body field {where or '(root)'}: recorded {_short(a)}, got {_short(b)}"]
        stack.extend(reversed(todo))
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        text = f"(a {type(value).__name__} nested too deep to show)"
    return text if len(text) <= 60 else text[:57] + "..."


def _body_differences(
    recorded: bytes, incoming: bytes, config: MatchConfig, parsed: dict[bytes, Any]
) -> list[str]:
    if recorded == incoming:
        return []
    a, b = _load(recorded, parsed), _load(incoming, parsed)
    if a is _NOT_JSON or b is _NOT_JSON:
        return [f"body: recorded {len(recorded)} bytes, got {len(incoming)} bytes that differ"]
    return _json_differences(a, b, config.ignore_json)


def differences(
    recorded: RecordedRequest, incoming: IncomingRequest, config: MatchConfig,
    parsed: dict[bytes, Any] | None = None,
) -> list[str]:
    """What keeps `incoming` from matching `recorded` under `config` (empty: a match).
    `parsed` memoises JSON bodies across the calls for one request."""
    out: list[str] = []
    scheme, host, path, query = split_url(recorded.url)
    _, _, in_path, in_query = split_url(incoming.target)
    c = config.criteria
    if "method" in c and recorded.method.upper() != incoming.method.upper():
        out.append(f"method: recorded {recorded.method}, got {incoming.method}")
    if "scheme" in c and incoming.scheme and scheme != incoming.scheme:
        out.append(f"scheme: recorded {scheme}, got {incoming.scheme}")
    if "host" in c and incoming.host and host.lower() != incoming.host.lower():
        out.append(f"host: recorded {host}, got {incoming.host}")
    if "path" in c and not path_matches(path, in_path):
        out.append(f"path: recorded {path}, got {in_path}")
    if "query" in c:
        ours, theirs = _query(query, config.ignore_query), _query(in_query, config.ignore_query)
        if ours != theirs:  # a recorded [REDACTED] value stands for any value of that name
            a = [(k, v) for k, v in ours
                 if not (v == MARKER and any(k == k2 for k2, _ in theirs))]
            b = [(k, v) for k, v in theirs
                 if not any(k == k2 and v2 == MARKER for k2, v2 in ours)]
            if a != b:
                out.append(f"query: recorded {_fmt_query(a)}, got {_fmt_query(b)}")
    if "body" in c:
        out.extend(_body_differences(recorded.body, incoming.body, config,
                                       {} if parsed is None else parsed))
    if "headers" in c:
        out.extend(_header_differences(recorded.headers, incoming.headers, config))
    return out


def path_matches(recorded: str, incoming: str) -> bool:
    """Equal paths, where a redacted path segment or parameter value (`/token/[REDACTED]`,
    `;api_key=[REDACTED]`) stands for any value, as a redacted query value does."""
    if MARKER not in recorded:
        return recorded == incoming
    return _redacted_path(recorded).fullmatch(incoming) is not None


@functools.lru_cache(maxsize=1024)
def _redacted_path(recorded: str) -> re.Pattern[str]:
    return re.compile(re.escape(recorded).replace(re.escape(MARKER), "[^/;]*"))


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
    _served: set[int] = field(default_factory=set)  # interaction ids served at least once
    # Recordings by (method, path) as far as the criteria compare them, so a request is
    # checked in full only against the few that can match (the rest are a miss anyway).
    _index: dict[tuple[str, str], list[Interaction]] = field(default_factory=dict)

    # Recordings whose path was redacted: their path is a pattern, checked for every request.
    _patterned: list[Interaction] = field(default_factory=list)
    # The recordings a request matches, by what the criteria compare of it: a load test
    # sends the same few requests thousands of times (CANDIDATES_KEPT of them at most,
    # bodies up to CACHED_BODY bytes; misses are not kept)
    _candidates: dict[tuple[object, ...], list[Interaction]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for interaction in self.interactions:
            if interaction.response is None:
                continue
            path = split_url(interaction.request.url)[2]
            if MARKER in path and "path" in self.config.criteria:
                self._patterned.append(interaction)
            else:
                key = self._key(interaction.request.method, path)
                self._index.setdefault(key, []).append(interaction)

    def _key(self, method: str, path: str) -> tuple[str, str]:
        criteria = self.config.criteria
        return (method.upper() if "method" in criteria else "",
                path if "path" in criteria else "")

    def match(self, request: IncomingRequest) -> Interaction | Miss:
        key = None
        if len(request.body) <= CACHED_BODY:
            key = (request.method, request.target, request.body, request.scheme, request.host,
                   request.headers if "headers" in self.config.criteria else None)
        candidates = self._candidates.get(key) if key is not None else None
        if candidates is None:
            bucket = self._index.get(
                self._key(request.method, split_url(request.target)[2]), []
            )
            if self._patterned:
                bucket = sorted([*bucket, *self._patterned], key=lambda i: i.id)
            parsed: dict[bytes, Any] = {}
            candidates = [
                i for i in bucket if not differences(i.request, request, self.config, parsed)
            ]
            if not candidates:
                return self._nearest(request, parsed)
            if key is not None and len(self._candidates) < CANDIDATES_KEPT:
                self._candidates[key] = candidates
        for candidate in candidates:
            if candidate.id not in self._served:
                self._served.add(candidate.id)
                return candidate
        if self.config.when_exhausted is WhenExhausted.ERROR:
            return Miss(candidates[-1], (), exhausted=True)
        return candidates[-1]

    def _nearest(self, request: IncomingRequest, parsed: dict[bytes, Any]) -> Miss:
        best: tuple[int, Interaction, list[str]] | None = None
        for interaction in self.interactions:
            found = differences(interaction.request, request, self.config, parsed)
            # Method and path differences weigh more than a body field or a header.
            weight = sum(3 if d.startswith(("method", "path")) else 1 for d in found)
            if interaction.response is None:
                weight += 10
            if best is None or weight < best[0]:
                best = (weight, interaction, found)
        if best is None:
            return Miss(None, ())
        return Miss(best[1], tuple(best[2]) or ("(a recording without a response)",))

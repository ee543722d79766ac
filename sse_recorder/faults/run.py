"""Fault injection on replay: a small spec language and a pure stream transformer.

One spec language serves `--fault TYPE:key=value,...` and TOML plans (`[[fault]]` tables
with `type = "..."` and the same keys). Each fault can target a route, fire with a
probability per connection or per event, and draws from a generator seeded by
(seed, connection number, fault number), so the same seed and request order give the
same faults. `FaultRun.transform` turns the recorded stream, cut at event boundaries,
into timed writes plus an ending; it performs no I/O and records what fired.
"""

from __future__ import annotations

import json
import math
import random
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sse_recorder.errors import ConfigError
from sse_recorder.model import Outcome
from sse_recorder.routes import Route
from sse_recorder.sse import Comment, Event, Item, SSEParser

# -- value parsing ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?(?:/s)?\s*$")


def parse_duration(text: str | float, name: str) -> float:
    """Seconds from `250ms`, `2s`, `1.5`, `1m`."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name}: bad duration {text!r} (use e.g. 250ms, 2s, 1m)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def parse_size(text: str | int, name: str) -> int:
    """Bytes from `512`, `10K`, `1M` (powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{name}: bad size {text!r} (use e.g. 512, 10K, 1M)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(float(match.group(1)) * factor)


# -- the fault types -------------------------------------------------------------------------

SHAPES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "error": ("error", {"code": "RATE_LIMIT_EXCEEDED", "message": "API rate limit exceeded",
                        "details": {"limit": 100, "used": 100,
                                    "resetAt": "2024-01-15T11:00:00Z"},
                        "recoverable": True}),
    "warning": ("warning", {"code": "SLOW_NETWORK", "message": "Network is slow",
                            "suggestion": "Check the connection"}),
    "retry-hint": ("retry-hint", {"suggested": 5000, "reason": "server_busy"}),
    "backoff": ("backoff", {"attempt": 3, "nextRetry": 8000, "maxAttempts": 5}),
    "anthropic-overloaded": ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}),
    "openai-error": (None, {"error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": None}}),
}

HTTP_BODIES: dict[str, dict[int | None, dict[str, Any]]] = {
    "openai": {
        429: {"error": {"message": "Rate limit reached. Please try again later.",
                        "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
        401: {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                        "param": None, "code": "invalid_api_key"}},
        None: {"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": None, "code": None}},
    },
    "anthropic": {
        429: {"type": "error", "error": {
            "type": "rate_limit_error",
            "message": "Number of requests has exceeded your rate limit."}},
        401: {"type": "error", "error": {"type": "authentication_error",
                                         "message": "invalid x-api-key"}},
        529: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        None: {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
    },
}

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
           529: "Overloaded"}

# type -> (allowed keys, example); every type also takes route, p, per.
FAULT_TYPES: dict[str, tuple[frozenset[str], str]] = {
    "throttle": (frozenset({"rate"}), "throttle:rate=1K"),
    "latency": (frozenset({"head", "chunk", "jitter", "dist"}),
                "latency:head=500ms,chunk=20ms,jitter=10ms,dist=normal"),
    "pause": (frozenset({"after_event", "at", "duration"}), "pause:after_event=5,duration=30s"),
    "stall": (frozenset({"after_event", "at"}), "stall:after_event=12"),
    "rechunk": (frozenset({"mode", "size", "min", "max"}),
                "rechunk:mode=adversarial  (bytes,size=N | random,min=1,max=64 | byte | event"
                " | coalesce | adversarial)"),
    "drop": (frozenset({"after_events", "after_bytes", "after", "mid_event", "how"}),
             "drop:after_events=12,how=rst  (how=fin|rst; or after_bytes=, after=2s, mid_event=)"),
    "http": (frozenset({"status", "retry_after", "body", "shape", "header"}),
             "http:status=429,retry_after=2,shape=openai  (shape=openai|anthropic|text)"),
    "refuse": (frozenset(), "refuse  (reset the connection before any response)"),
    "no-head": (frozenset(), "no-head  (accept the request; the response head never comes)"),
    "inject": (frozenset({"at_event", "shape", "event", "data"}),
               "inject:at_event=3,shape=anthropic-overloaded  (shape=" + "|".join(SHAPES) + ")"),
    "heartbeat": (frozenset({"every", "style"}), "heartbeat:every=5s,style=comment (or ping)"),
    "retry": (frozenset({"value"}), "retry:value=1000  (send a retry: field first)"),
    "corrupt": (frozenset({"mode", "at_event"}),
                "corrupt:mode=json,at_event=2  (mode=field|utf8|json|duplicate|omit)"),
}
COMMON_KEYS = frozenset({"route", "p", "per", "on_resume"})
RECHUNK_MODES = ("bytes", "random", "byte", "event", "coalesce", "adversarial")
CORRUPT_MODES = ("field", "utf8", "json", "duplicate", "omit")
_DROP_HOW = {"fin": Outcome.CLOSED, "rst": Outcome.RESET}  # drop:how= -> the ending it makes


@dataclass(frozen=True)
class Fault:
    """One validated fault: its type, parameters, target and probability."""

    type: str
    params: dict[str, Any]
    route: Route | None = None
    probability: float = 1.0
    per_event: bool = False
    on_resume: str = "fresh"  # fresh: reconnections roll again; none: no faults on resume
    spec: str = ""

    def applies_to(self, method: str, host: str, path: str) -> bool:
        return self.route is None or self.route.matches(method, host, path)

    def get_duration(self, key: str, default: float | None = None) -> float | None:
        value = self.params.get(key)
        return default if value is None else parse_duration(value, f"{self.type}.{key}")

    def get_int(self, key: str, default: int | None = None) -> int | None:
        value = self.params.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.spec}: {key} must be a whole number") from None


def _fault(type_: str, raw: dict[str, Any], spec: str) -> Fault:
    if type_ not in FAULT_TYPES:
        raise ConfigError(f"{spec}: unknown fault type {type_!r}; see `sse-recorder faults`")
    allowed = FAULT_TYPES[type_][0] | COMMON_KEYS
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{spec}: {type_} does not take {', '.join(unknown)}")
    params = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    try:
        probability = float(raw.get("p", 1.0))
    except (TypeError, ValueError):
        raise ConfigError(f"{spec}: p must be a number between 0 and 1") from None
    if not 0 <= probability <= 1:
        raise ConfigError(f"{spec}: p must be between 0 and 1")
    per = str(raw.get("per", "connection"))
    if per not in ("connection", "event"):
        raise ConfigError(f"{spec}: per must be connection or event")
    on_resume = str(raw.get("on_resume", "fresh"))
    if on_resume not in ("fresh", "none"):
        raise ConfigError(f"{spec}: on_resume must be fresh or none")
    route = Route.parse(str(raw["route"])) if "route" in raw else None
    fault = Fault(type_, params, route, probability, per == "event", on_resume, spec)
    try:
        _validate(fault)
    except ConfigError as exc:  # a bad duration or size names its key: name the spec too
        message = str(exc)
        raise ConfigError(message if message.startswith(spec) else f"{spec}: {message}") from None
    return fault


def _validate(fault: Fault) -> None:
    """Check every parameter now, so a bad spec fails before the server starts."""
    p, spec = fault.params, fault.spec
    for key in ("head", "chunk", "jitter", "duration", "at", "after", "every"):
        if key in p:
            fault.get_duration(key)
    for key in ("after_event", "after_events", "mid_event", "at_event", "value", "status",
                "retry_after"):
        if key in p and (fault.get_int(key) or 0) < 0:
            raise ConfigError(f"{spec}: {key} must be >= 0")
    if fault.type == "throttle":
        if "rate" not in p or parse_size(p["rate"], "throttle.rate") <= 0:
            raise ConfigError(f"{spec}: throttle needs rate=BYTES_PER_SECOND > 0")
    if fault.type == "latency" and p.get("dist", "fixed") not in (
        "fixed", "uniform", "normal", "lognormal"
    ):
        raise ConfigError(f"{spec}: dist must be fixed, uniform, normal or lognormal")
    if fault.type == "pause" and ("duration" not in p or not ({"after_event", "at"} & set(p))
                                  and not fault.per_event):
        raise ConfigError(f"{spec}: pause needs duration= and after_event= or at=")
    if fault.type == "rechunk":
        mode = p.get("mode", "bytes")
        if mode not in RECHUNK_MODES:
            raise ConfigError(f"{spec}: mode must be one of {', '.join(RECHUNK_MODES)}")
        if mode == "bytes" and (fault.get_int("size", 0) or 0) < 1:
            raise ConfigError(f"{spec}: rechunk mode=bytes needs size >= 1")
        low, high = fault.get_int("min", 1) or 1, fault.get_int("max", 64) or 64
        if mode == "random" and not 1 <= low <= high:
            raise ConfigError(f"{spec}: rechunk random needs 1 <= min <= max")
    if fault.type == "drop":
        triggers = {"after_events", "after_bytes", "after", "mid_event"} & set(p)
        if len(triggers) != 1 and not (fault.per_event and not triggers):
            raise ConfigError(f"{spec}: drop needs exactly one of after_events, after_bytes,"
                              " after, mid_event")
        if "after_bytes" in p:
            parse_size(p["after_bytes"], "drop.after_bytes")
        if p.get("how", "fin") not in ("fin", "rst"):
            raise ConfigError(f"{spec}: how must be fin or rst")
    if fault.type == "http":
        status = fault.get_int("status")
        if status is None or not 100 <= status <= 599:
            raise ConfigError(f"{spec}: http needs status=100..599")
        if p.get("shape", "text") not in ("text", "openai", "anthropic"):
            raise ConfigError(f"{spec}: shape must be text, openai or anthropic")
    if fault.type == "inject":
        if "shape" not in p and "event" not in p and "data" not in p:
            raise ConfigError(f"{spec}: inject needs shape= (or event= and data=)")
        if "shape" in p and p["shape"] not in SHAPES:
            raise ConfigError(f"{spec}: shape must be one of {', '.join(SHAPES)}")
    if fault.type == "heartbeat" and (
        "every" not in p or (fault.get_duration("every") or 0) <= 0
    ):
        raise ConfigError(f"{spec}: heartbeat needs every=DURATION > 0")
    if fault.type == "heartbeat" and p.get("style", "comment") not in ("comment", "ping"):
        raise ConfigError(f"{spec}: style must be comment or ping")
    if fault.type == "retry" and fault.get_int("value") is None:
        raise ConfigError(f"{spec}: retry needs value=MILLISECONDS")
    if fault.type == "corrupt" and p.get("mode") not in CORRUPT_MODES:
        raise ConfigError(f"{spec}: mode must be one of {', '.join(CORRUPT_MODES)}")


def parse_spec(spec: str) -> Fault:
    """`TYPE` or `TYPE:key=value,key=value` (a route may contain spaces: route=POST */x)."""
    type_, _, rest = spec.strip().partition(":")
    raw: dict[str, Any] = {}
    for part in (p for p in rest.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{spec}: expected key=value, got {part.strip()!r}")
        raw[key.strip()] = value.strip()
    return _fault(type_.strip(), raw, spec.strip())


@dataclass(frozen=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()
    seed: int = 0

    @classmethod
    def load(cls, specs: Iterable[str] = (), plan_file: Path | None = None,
             seed: int | None = None) -> FaultPlan:
        faults: list[Fault] = []
        file_seed = 0
        if plan_file is not None:
            file_faults, file_seed = _load_toml(plan_file)
            faults += file_faults
        faults += [parse_spec(s) for s in specs]
        return cls(tuple(faults), seed if seed is not None else file_seed)

    def for_connection(self, number: int, method: str, host: str, path: str,
                       resumed: bool) -> FaultRun:
        chosen: list[tuple[Fault, random.Random]] = []
        for index, fault in enumerate(self.faults):
            rng = random.Random(f"{self.seed}:{number}:{index}")
            if not fault.applies_to(method, host, path):
                continue
            if resumed and fault.on_resume == "none":
                continue
            if not fault.per_event and rng.random() >= fault.probability:
                continue
            chosen.append((fault, rng))
        return FaultRun(chosen)


def _load_toml(path: Path) -> tuple[list[Fault], int]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fault plan: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"seed", "fault"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    seed = document.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"{path}: seed must be an integer")
    tables = document.get("fault", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: faults are [[fault]] tables")
    faults = []
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict) or "type" not in table:
            raise ConfigError(f"{path}: fault #{number} needs a type")
        raw = {k: v for k, v in table.items() if k != "type"}
        faults.append(_fault(str(table["type"]), raw, f"{path} fault #{number}"))
    return faults, seed


def describe_types() -> str:
    lines = ["Fault types (--fault TYPE:key=value,... or [[fault]] tables in a TOML plan):"]
    for name, (_, example) in FAULT_TYPES.items():
        lines.append(f"  {name:<10} {example}")
    lines.append("Every fault also takes route='[METHOD ]host/path-glob', p=PROBABILITY,"
                 " per=connection|event, on_resume=fresh|none.")
    return "\n".join(lines)


# -- the transformer -------------------------------------------------------------------------


@dataclass(slots=True)
class Piece:
    """A run of response bytes due at `due` seconds; `events` counts events completed by the
    end of this piece, `boundary` says whether it ends between events."""

    due: float
    data: bytes
    events: int = 0
    boundary: bool = True


@dataclass(frozen=True, slots=True)
class Ending:
    """Stop the body here instead of the recorded ending."""

    outcome: Outcome  # CLOSED (FIN), RESET (RST) or STALLED (held open, nothing more sent)
    due: float


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def split_at_events(chunks: Iterable[tuple[float, bytes]]) -> Iterator[Piece]:
    """Cut timed chunks at every event and comment boundary (a CRLF stays whole)."""
    parser = SSEParser()
    position = 0
    events = 0
    for due, data in chunks:
        start = position
        position += len(data)
        cursor = 0
        items = parser.feed(data)
        for index, item in enumerate(items):
            if isinstance(item, Comment) and _inside_block(item, items[index + 1 :], parser):
                continue  # a comment line inside an event: cutting there would split it
            cut = item.end - start
            if data[cut : cut + 1] == b"\n" and data[cut - 1 : cut] == b"\r":
                cut += 1  # the LF of the CRLF that ended the block
            if isinstance(item, Event):
                events += 1
            if cut > cursor:
                yield Piece(due, data[cursor:cut], events, True)
                cursor = cut
        if cursor < len(data):
            yield Piece(due, data[cursor:], events, parser.at_event_boundary)


def _inside_block(comment: Comment, later: Sequence[Item], parser: SSEParser) -> bool:
    """Whether a comment came between the field lines of an event (its block began before
    the comment): the next event says so, or, when none ended yet, the block still open."""
    following = next((item for item in later if isinstance(item, Event)), None)
    if following is not None:
        return following.start < comment.start
    return parser.earliest_open_position < comment.start


def _event_bytes(shape: str | None, event: str | None, data: str | None) -> bytes:
    from sse_recorder.sse import encode_event

    if shape is not None:
        name, payload = SHAPES[shape]
        return encode_event(json.dumps(payload), event=name)
    return encode_event(data or "", event=event)


def _adversarial_cuts(data: bytes) -> list[int]:
    """Cut points that break naive parsers: CR|LF, inside a UTF-8 character, inside a
    field name, and between an event and its blank line."""
    cuts: set[int] = set()
    line_start = 0
    for i, byte in enumerate(data):
        if byte == 0x0D and data[i + 1 : i + 2] == b"\n":
            cuts.add(i + 1)
        elif byte >= 0xC0:  # the lead byte of a multi-byte character
            cuts.add(i + 1)
        if i == line_start and byte not in (0x0A, 0x0D, 0x3A) and i + 2 < len(data):
            cuts.add(i + 1)  # inside the field name
        if byte in (0x0A, 0x0D):
            if data[i + 1 : i + 2] in (b"\n", b"\r") and not (
                byte == 0x0D and data[i + 1 : i + 2] == b"\n"
            ):
                cuts.add(i + 1)  # the event's last line | its blank line
            line_start = i + 1
    return sorted(c for c in cuts if 0 < c < len(data))


@dataclass
class FaultRun:
    """The faults chosen for one connection, applied to its stream; `log` says what fired."""

    chosen: list[tuple[Fault, random.Random]]
    log: list[dict[str, Any]] = field(default_factory=list)

    def _of(self, *types: str) -> list[tuple[Fault, random.Random]]:
        return [(f, r) for f, r in self.chosen if f.type in types]

    def _fired(self, fault: Fault, due: float | None = None, **details: Any) -> None:
        entry: dict[str, Any] = {"fault": fault.spec or fault.type, "type": fault.type}
        if due is not None:
            entry["at_ms"] = round(due * 1000, 3)
        entry.update(details)
        self.log.append(entry)

    # -- before any body -------------------------------------------------------------------

    def refuse(self) -> bool:
        for fault, _ in self._of("refuse"):
            self._fired(fault, 0.0)
            return True
        return False

    def no_head(self) -> bool:
        for fault, _ in self._of("no-head"):
            self._fired(fault, 0.0)
            return True
        return False

    def http_error(self) -> HttpError | None:
        for fault, _ in self._of("http"):
            status = fault.get_int("status") or 500
            shape = fault.params.get("shape", "text")
            headers: list[tuple[str, str]] = []
            if "retry_after" in fault.params:
                headers.append(("Retry-After", str(fault.params["retry_after"])))
            if "header" in fault.params:  # header=Name: value
                name, _, value = str(fault.params["header"]).partition(":")
                headers.append((name.strip(), value.strip()))
            if "body" in fault.params:
                body = str(fault.params["body"]).encode()
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
            elif shape == "text":
                reason = REASONS.get(status, "Error")
                body = f"{status} {reason} (injected by sse-recorder)\n".encode()
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
            else:
                bodies = HTTP_BODIES[shape]
                body = json.dumps(bodies.get(status, bodies[None])).encode()
                headers.append(("Content-Type", "application/json"))
            self._fired(fault, 0.0, status=status)
            return HttpError(status, REASONS.get(status, "Error"), tuple(headers), body)
        return None

    def head_delay(self) -> float:
        delay = 0.0
        for fault, _ in self._of("latency"):
            extra = fault.get_duration("head", 0.0) or 0.0
            if extra:
                delay += extra
                self._fired(fault, 0.0, head_delay_ms=round(extra * 1000, 3))
        return delay

    def needs_events(self) -> bool:
        for fault, _ in self.chosen:
            if fault.type in ("pause", "stall", "inject", "heartbeat", "corrupt", "retry"):
                return True
            if fault.type == "drop" and "after_bytes" not in fault.params and (
                "after" not in fault.params
            ):
                return True
            if fault.type == "rechunk" and fault.params.get("mode") in ("event", "coalesce"):
                return True
        return False

    # -- the body --------------------------------------------------------------------------

    def transform(self, pieces: Iterable[Piece]) -> Iterator[Piece | Ending]:
        stream: Iterable[Piece | Ending] = pieces
        stream = self._content(stream)
        stream = self._cuts(stream)
        stream = self._timing(stream)
        stream = self._rechunk(stream)
        stream = self._throttle(stream)
        stream = self._deadline(stream)
        yield from stream

    def _content(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        injects = self._of("inject")
        corrupts = self._of("corrupt")
        retries = self._of("retry")
        if not (injects or corrupts or retries):
            yield from stream
            return
        started = False
        held: list[Piece] = []  # the pieces of the block being received
        events_before = 0  # events completed before the held block
        for piece in stream:
            if isinstance(piece, Ending):
                yield from held
                yield piece
                return
            if not started:
                started = True
                for fault, _ in retries:
                    value = fault.get_int("value")
                    self._fired(fault, piece.due, value=value)
                    yield Piece(piece.due, f"retry: {value}\n\n".encode(), 0, True)
                yield from self._injections(injects, piece.due, 0)
            held.append(piece)
            if not piece.boundary:
                continue
            block, held = held, []
            is_event = piece.events > events_before
            events_before = piece.events
            yield from self._corrupt(corrupts, block, piece.events, is_event)
            if is_event:
                yield from self._injections(injects, piece.due, piece.events)
        yield from held

    def _injections(self, injects: list[tuple[Fault, random.Random]], due: float,
                    completed: int) -> Iterator[Piece]:
        for fault, rng in injects:
            if fault.per_event:
                fire = rng.random() < fault.probability
            else:
                fire = (fault.get_int("at_event", 0) or 0) == completed and not any(
                    entry.get("fault") == fault.spec for entry in self.log
                )
            if fire:
                data = _event_bytes(fault.params.get("shape"), fault.params.get("event"),
                                    fault.params.get("data"))
                self._fired(fault, due, event=completed)
                yield Piece(due, data, completed, True)

    def _corrupt(self, corrupts: list[tuple[Fault, random.Random]], pieces: list[Piece],
                 completed: int, is_event: bool) -> Iterator[Piece]:
        for fault, rng in corrupts if is_event else []:
            fire = rng.random() < fault.probability if fault.per_event else (
                fault.get_int("at_event", 1) == completed
            )
            if not fire:
                continue
            mode = fault.params["mode"]
            self._fired(fault, pieces[-1].due, event=completed, mode=mode)
            if mode == "omit":
                return
            if mode == "duplicate":
                yield from pieces
                yield Piece(pieces[-1].due, b"".join(p.data for p in pieces), completed, True)
                return
            data = b"".join(p.data for p in pieces)
            marker = data.find(b"data:")
            if marker >= 0:
                if mode == "field":
                    data = data[:marker] + b"data " + data[marker + 5:]
                elif mode == "utf8":
                    data = data[: marker + 5] + b"\xff\xfe" + data[marker + 5:]
                else:  # json: a stray character before the value
                    skip = 6 if data[marker + 5: marker + 6] == b" " else 5
                    data = data[: marker + skip] + b"!" + data[marker + skip:]
            yield Piece(pieces[-1].due, data, completed, True)
            return
        yield from pieces

    def _cuts(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        drops = self._of("drop")
        stalls = self._of("stall")
        if not (drops or stalls):
            yield from stream
            return
        sent = 0
        for piece in stream:
            if isinstance(piece, Ending):
                yield piece
                return
            for fault, _ in drops:
                how = fault.params.get("how", "fin")
                p = fault.params
                if "after_bytes" in p:
                    limit = parse_size(p["after_bytes"], "drop.after_bytes")
                    if sent + len(piece.data) >= limit:
                        cut = piece.data[: limit - sent]
                        if cut:
                            yield Piece(piece.due, cut, piece.events, False)
                        self._fired(fault, piece.due, bytes=limit, how=how)
                        yield Ending(_DROP_HOW[how], piece.due)
                        return
                elif "mid_event" in p and piece.boundary and piece.events == fault.get_int(
                    "mid_event"
                ):
                    half = piece.data[: len(piece.data) // 2]
                    if half:
                        yield Piece(piece.due, half, piece.events - 1, False)
                    self._fired(fault, piece.due, event=piece.events, how=how)
                    yield Ending(_DROP_HOW[how], piece.due)
                    return
            yield piece
            sent += len(piece.data)
            if not piece.boundary:
                continue
            for fault, rng in drops:
                p = fault.params
                if fault.per_event and not ({"after_bytes", "after", "mid_event"} & set(p)):
                    fire = rng.random() < fault.probability
                else:
                    fire = "after_events" in p and piece.events == fault.get_int("after_events")
                if fire:
                    how = p.get("how", "fin")
                    self._fired(fault, piece.due, event=piece.events, how=how)
                    yield Ending(_DROP_HOW[how], piece.due)
                    return
            for fault, rng in stalls:
                if fault.per_event:
                    fire = rng.random() < fault.probability
                elif "at" in fault.params:
                    fire = piece.due >= (fault.get_duration("at") or 0.0)
                else:
                    fire = piece.events == fault.get_int("after_event")
                if fire:
                    self._fired(fault, piece.due, event=piece.events)
                    yield Ending(Outcome.STALLED, piece.due)
                    return

    def _timing(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        pauses = self._of("pause")
        latencies = [(f, r) for f, r in self._of("latency") if "chunk" in f.params]
        beats = self._of("heartbeat")
        if not (pauses or latencies or beats):
            yield from stream
            return
        shift = 0.0
        last_due = 0.0
        paused: set[int] = set()
        ticks = [(f, f.get_duration("every") or 1.0) for f, _ in beats]
        next_tick = [every for _, every in ticks]
        at_boundary = True
        for piece in stream:
            if isinstance(piece, Ending):
                yield Ending(piece.outcome, max(piece.due + shift, last_due))
                return
            due = piece.due + shift
            for fault, rng in latencies:
                due += _draw(fault, rng)
            due = max(due, last_due)
            if at_boundary:
                for index, (fault, every) in enumerate(ticks):
                    while next_tick[index] < due:
                        style = fault.params.get("style", "comment")
                        data = b": heartbeat\n\n" if style == "comment" else (
                            b"event: ping\ndata: {}\n\n")
                        self._fired(fault, next_tick[index], style=style)
                        yield Piece(next_tick[index], data, piece.events, True)
                        last_due = next_tick[index]
                        next_tick[index] += every
            yield Piece(due, piece.data, piece.events, piece.boundary)
            last_due = due
            at_boundary = piece.boundary
            if not piece.boundary:
                continue
            for index, (fault, rng) in enumerate(pauses):
                if index in paused and not fault.per_event:
                    continue
                if fault.per_event:
                    fire = rng.random() < fault.probability
                elif "at" in fault.params:
                    fire = due >= (fault.get_duration("at") or 0.0)
                else:
                    fire = piece.events == fault.get_int("after_event")
                if fire:
                    paused.add(index)
                    duration = fault.get_duration("duration") or 0.0
                    shift += duration
                    self._fired(fault, due, event=piece.events,
                                duration_ms=round(duration * 1000, 3))

    def _deadline(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        """`drop:after=T`: last, so T counts the time pauses, latency and throttling add."""
        drops = [f for f, _ in self._of("drop") if "after" in f.params]
        if not drops:
            yield from stream
            return
        fault = min(drops, key=lambda f: f.get_duration("after") or 0.0)
        limit = fault.get_duration("after") or 0.0
        for action in stream:
            if action.due >= limit:
                how = fault.params.get("how", "fin")
                self._fired(fault, limit, how=how)
                yield Ending(_DROP_HOW[how], limit)
                return
            yield action

    def _rechunk(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        rechunks = self._of("rechunk")
        if not rechunks:
            yield from stream
            return
        fault, rng = rechunks[0]
        mode = fault.params.get("mode", "bytes")
        self._fired(fault, 0.0, mode=mode)
        held: list[Piece] = []
        for piece in stream:
            if isinstance(piece, Ending):
                if held:
                    yield _merge(held)
                yield piece
                return
            if mode in ("event", "coalesce"):
                held.append(piece)
                if mode == "event" and piece.boundary:
                    yield _merge(held)
                    held = []
                continue
            cuts = (_adversarial_cuts(piece.data) if mode == "adversarial"
                    else _size_cuts(len(piece.data), lambda: _piece_size(fault, rng)))
            bounds = [0, *cuts, len(piece.data)]
            for index, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
                last = index == len(bounds) - 2
                yield Piece(piece.due, piece.data[a:b], piece.events,
                            piece.boundary if last else False)
        if held:
            yield _merge(held)

    def _throttle(self, stream: Iterable[Piece | Ending]) -> Iterator[Piece | Ending]:
        throttles = self._of("throttle")
        if not throttles:
            yield from stream
            return
        fault = throttles[0][0]
        rate = float(parse_size(fault.params["rate"], "throttle.rate"))
        burst = max(1, int(rate / 50))  # at most 20 ms worth of bytes per write
        clock = 0.0
        self._fired(fault, 0.0, rate=rate)
        for piece in stream:
            if isinstance(piece, Ending):
                yield Ending(piece.outcome, max(piece.due, clock))
                return
            clock = max(clock, piece.due)
            data = piece.data
            for start in range(0, len(data), burst):
                part = data[start : start + burst]
                last = start + burst >= len(data)
                yield Piece(clock, part, piece.events, piece.boundary if last else False)
                clock += len(part) / rate


def _piece_size(fault: Fault, rng: random.Random) -> int:
    mode = fault.params.get("mode", "bytes")
    if mode == "byte":
        return 1
    if mode == "bytes":
        return fault.get_int("size", 1) or 1
    return rng.randint(fault.get_int("min", 1) or 1, fault.get_int("max", 64) or 64)


def _size_cuts(length: int, next_size: Callable[[], int]) -> list[int]:
    cuts, total = [], next_size()
    while total < length:
        cuts.append(total)
        total += next_size()
    return cuts


def _merge(pieces: Sequence[Piece]) -> Piece:
    return Piece(pieces[-1].due, b"".join(p.data for p in pieces), pieces[-1].events,
                 pieces[-1].boundary)


def _draw(fault: Fault, rng: random.Random) -> float:
    mean = fault.get_duration("chunk", 0.0) or 0.0
    spread = fault.get_duration("jitter", 0.0) or 0.0
    dist = fault.params.get("dist", "fixed")
    if dist == "uniform":
        value = rng.uniform(mean - spread, mean + spread)
    elif dist == "normal":
        value = rng.gauss(mean, spread)
    elif dist == "lognormal" and mean > 0:
        value = rng.lognormvariate(math.log(mean), spread / mean if mean else 0.0)
    else:
        value = mean
    return max(value, 0.0)

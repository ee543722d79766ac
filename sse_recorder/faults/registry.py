"""The fault types: one class per type, holding everything known about it.

Rules:
- a class names its type, its keys and how each is read (`Kind`), the example that
  `sse-recorder faults` shows, its `Stage` and whether the stream must be cut at events;
- one key name per concept across types: `after_event=K` is "once K events were sent"
  (pause, stall, drop, inject), `at=` a time, `at_event=`/`mid_event=` name event K itself;
- `parse` gets the values read by kind (durations in seconds, sizes and counts as ints; a
  value is read when first looked at), applies the type's own rules, and returns the typed
  parameters the stages use as they are: no stage parses text;
- a fault that could never fire, or a key its mode ignores, is an error here, not a no-op;
- messages name the bad part without the spec; `spec.py` puts the spec in front.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Self

from sse_recorder.demo.payloads import HTTP_BODIES, SEED_EVENTS, SHAPES
from sse_recorder.errors import ConfigError
from sse_recorder.framing.registry import FRAME_SHAPES
from sse_recorder.model import Outcome
from sse_recorder.sse import encode_event
from sse_recorder.wire.responses import reason_of


class Kind(Enum):
    """How a key's value is read (durations and counts up front, the rest when looked at)."""

    DURATION = "duration"  # seconds (float) from 250ms, 2s, 1m, or a bare number of ms
    COUNT = "count"  # a whole number >= 0
    SIZE = "size"  # bytes from 512, 10K, 1M
    WHOLE = "whole"  # a whole number
    FLAG = "flag"  # true or false (also yes/no, on/off, 1/0, a TOML boolean)
    TEXT = "text"


class Stage(Enum):
    """Where a fault acts; the body stages run in this order (see `stages.PIPELINE`)."""

    ANSWER = "answer"  # instead of the response: refuse, no-head, http
    CONTENT = "content"  # what is sent: inject, corrupt, retry
    CUTS = "cuts"  # where the body ends: drop, stall
    TIMING = "timing"  # when pieces are due: pause, latency, heartbeat
    RECHUNK = "rechunk"  # how the bytes are cut into writes
    THROTTLE = "throttle"  # the byte rate
    DEADLINE = "deadline"  # drop:after=T, last, so T counts the time the others add
    CLOSE = "close"  # slow_close: after everything, it delays whatever close ends the body


Values = Mapping[str, Any]  # key -> value as its Kind reads it; `in` does not read it


@dataclass(frozen=True)
class Params:
    """The typed parameters of one fault type; subclasses are the registry."""

    name: ClassVar[str]
    keys: ClassVar[dict[str, Kind]]
    example: ClassVar[str]
    stage: ClassVar[Stage]
    cut_at_events: ClassVar[bool] = False
    # The keys that say where it fires, which per=event replaces by a roll at every event;
    # None: the type has no per-event form (p= alone says how often it fires).
    per_event_replaces: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        return cls()

    def needs_events(self) -> bool:
        """Whether the stream must come cut at event boundaries (`split_at_events`)."""
        return self.cut_at_events

    def acts_at(self) -> Stage:
        return self.stage


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean X?)` for the closest of `choices`, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def choice(key: str, value: str, allowed: Iterable[str], one_of: bool = False) -> str:
    """`value` when it is one of `allowed`; else an error listing them, with a suggestion."""
    allowed = tuple(allowed)
    if value not in allowed:
        listed = (f"one of {', '.join(allowed)}" if one_of
                  else f"{', '.join(allowed[:-1])} or {allowed[-1]}")
        raise ConfigError(f"{key} must be {listed}, not {value!r}{did_you_mean(value, allowed)}")
    return value


def _one_position(values: Values, keys: tuple[str, ...], per_event: bool) -> bool:
    """Whether exactly one of the position keys is given (per=event: none, it rolls)."""
    given = [key for key in keys if key in values]
    return not given if per_event else len(given) == 1


def _signal(values: Values, type_: str, event: str, default_reason: str) -> tuple[bool, str]:
    """`signal=` and its `reason=`: whether the fault announces itself with the seed's
    `event`, and the reason that event carries (reason= alone would be ignored)."""
    signal = bool(values.get("signal", False))
    if "reason" in values and not signal:
        raise ConfigError(f"{type_} reason= is the {event} event's: give signal=true too")
    return signal, values.get("reason", default_reason)


@dataclass(frozen=True)
class Throttle(Params):
    name = "throttle"
    keys = {"rate": Kind.SIZE, "signal": Kind.FLAG, "reason": Kind.TEXT}
    example = "throttle:rate=1K,signal=true  (signal: a stream-throttle event first)"
    stage = Stage.THROTTLE

    rate: int  # bytes per second
    signal: bool = False  # announce it with a `stream-throttle` event before the body
    reason: str = "network_congestion"

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if values.get("rate", 0) <= 0:
            raise ConfigError("throttle needs rate=BYTES_PER_SECOND > 0")
        return cls(values["rate"], *_signal(values, "throttle", "stream-throttle",
                                            "network_congestion"))


DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal")


@dataclass(frozen=True)
class Latency(Params):
    name = "latency"
    keys = {"head": Kind.DURATION, "chunk": Kind.DURATION, "jitter": Kind.DURATION,
            "dist": Kind.TEXT}
    example = "latency:head=500ms,chunk=20ms,jitter=10ms,dist=normal"
    stage = Stage.TIMING

    head: float = 0.0  # before the response head
    chunk: float | None = None  # before every piece; None: pieces are not delayed
    jitter: float = 0.0
    dist: str = "fixed"  # uniform when jitter= is given (Toxiproxy's chunk +- jitter)

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if not {"head", "chunk"} & set(values):
            raise ConfigError("latency needs head= or chunk=")
        jitter = values.get("jitter", 0.0)
        dist = choice("dist", values.get("dist", "uniform" if jitter else "fixed"),
                      DISTRIBUTIONS)
        if "chunk" not in values and {"jitter", "dist"} & set(values):
            raise ConfigError("latency jitter= and dist= spread chunk=: give chunk= too")
        if dist == "fixed" and jitter:
            raise ConfigError("latency dist=fixed ignores jitter= (use dist=uniform, normal "
                              "or lognormal)")
        if dist != "fixed" and not jitter:
            raise ConfigError(f"latency dist={dist} needs jitter= > 0")
        if dist == "lognormal" and not values["chunk"]:
            raise ConfigError("latency dist=lognormal needs chunk= > 0")
        return cls(values.get("head", 0.0), values.get("chunk"), jitter, dist)


@dataclass(frozen=True)
class Pause(Params):
    name = "pause"
    keys = {"duration": Kind.DURATION, "at": Kind.DURATION, "after_event": Kind.COUNT,
            "signal": Kind.FLAG, "reason": Kind.TEXT}
    example = ("pause:after_event=5,duration=30s  (signal=true: stream-pause and "
               "stream-resume events around it)")
    stage = Stage.TIMING
    cut_at_events = True
    per_event_replaces = ("after_event", "at")

    duration: float
    after_event: int | None = None
    at: float | None = None
    signal: bool = False  # a `stream-pause` event as it starts, `stream-resume` as it ends
    reason: str = "buffer_full"

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if "duration" not in values or not _one_position(values, ("after_event", "at"),
                                                         per_event):
            raise ConfigError("pause needs duration= and after_event= or at= (one of them; "
                              "or per=event,p=P)")
        return cls(values["duration"], values.get("after_event"), values.get("at"),
                   *_signal(values, "pause", "stream-pause", "buffer_full"))


@dataclass(frozen=True)
class Stall(Params):
    name = "stall"
    keys = {"at": Kind.DURATION, "after_event": Kind.COUNT}
    example = "stall:after_event=12"
    stage = Stage.CUTS
    cut_at_events = True
    per_event_replaces = ("after_event", "at")

    after_event: int | None = None
    at: float | None = None

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if not _one_position(values, ("after_event", "at"), per_event):
            raise ConfigError("stall needs after_event= or at= (one of them; or per=event,p=P)")
        return cls(values.get("after_event"), values.get("at"))


@dataclass(frozen=True)
class Timeout(Params):
    """Toxiproxy's timeout: nothing more gets through, and the connection closes later."""

    name = "timeout"
    keys = {"duration": Kind.DURATION, "at": Kind.DURATION, "after_event": Kind.COUNT,
            "how": Kind.TEXT}
    example = ("timeout:after_event=3,duration=2s  (stall, then close duration later; "
               "how=fin|rst; no position: before the first byte)")
    stage = Stage.CUTS
    cut_at_events = True
    per_event_replaces = ("after_event", "at")

    duration: float  # the silence before the close
    after_event: int | None = None  # 0 (the default): no byte of the body gets through
    at: float | None = None
    how: str = "fin"

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if values.get("duration", 0) <= 0:
            raise ConfigError("timeout needs duration= > 0 (the silence before the close; "
                              "a stall that never closes is `stall`)")
        if "after_event" in values and "at" in values:
            raise ConfigError("timeout takes after_event= or at=, not both")
        after_event = values.get("after_event", None if "at" in values or per_event else 0)
        return cls(values["duration"], after_event, values.get("at"),
                   choice("how", values.get("how", "fin"), DROP_HOW))

    @property
    def ending(self) -> Outcome:
        return DROP_HOW[self.how]


@dataclass(frozen=True)
class SlowClose(Params):
    """Toxiproxy's slow_close: whatever close ends the response comes `delay` late."""

    name = "slow_close"
    keys = {"delay": Kind.DURATION}
    example = "slow_close:delay=2s  (after the last byte, hold the connection, then close)"
    stage = Stage.CLOSE

    delay: float

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if values.get("delay", 0) <= 0:
            raise ConfigError("slow_close needs delay= > 0")
        return cls(values["delay"])


RECHUNK_MODES: dict[str, tuple[str, ...]] = {  # mode -> the keys it reads
    "bytes": ("size",), "random": ("min", "max"), "byte": (), "event": (), "coalesce": (),
    "adversarial": (),
}
RECHUNK_KEY_MODE = {key: mode for mode, keys in RECHUNK_MODES.items() for key in keys}


@dataclass(frozen=True)
class Rechunk(Params):
    name = "rechunk"
    keys = {"mode": Kind.TEXT, "size": Kind.WHOLE, "min": Kind.WHOLE, "max": Kind.WHOLE,
            "delay": Kind.DURATION}
    example = ("rechunk:mode=adversarial  (bytes,size=N | random,min=1,max=64 | byte | event"
               " | coalesce | adversarial; delay=T between the writes: Toxiproxy's slicer)")
    stage = Stage.RECHUNK

    mode: str = "bytes"
    size: int = 1  # mode=bytes
    low: int = 1  # mode=random: sizes from low to high
    high: int = 64
    delay: float = 0.0  # seconds after each write before the next may go (Toxiproxy's slicer)

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        mode = choice("mode", values.get("mode", "bytes"), RECHUNK_MODES, one_of=True)
        ignored = [key for key in RECHUNK_KEY_MODE if key in values
                   and key not in RECHUNK_MODES[mode]]
        if ignored:
            raise ConfigError(f"rechunk mode={mode} ignores " + ", ".join(
                f"{key}= (it is for mode={RECHUNK_KEY_MODE[key]})" for key in ignored))
        size = values.get("size", 0) if mode == "bytes" else 1
        if size < 1:
            raise ConfigError("rechunk mode=bytes needs size >= 1")
        low, high = values.get("min", 1), values.get("max", 64)
        if mode == "random" and not 1 <= low <= high:
            raise ConfigError("rechunk random needs 1 <= min <= max")
        delay = values.get("delay", 0.0)
        if mode == "coalesce" and "delay" in values:
            raise ConfigError("rechunk mode=coalesce makes one write, so delay= would do "
                              "nothing")
        return cls(mode, size, low, high, delay)

    def needs_events(self) -> bool:
        return self.mode in ("event", "coalesce")


DROP_HOW = {"fin": Outcome.CLOSED, "rst": Outcome.RESET}  # how= -> the ending it makes
DROP_TRIGGERS = ("after_event", "after_bytes", "after", "mid_event")


@dataclass(frozen=True)
class Drop(Params):
    name = "drop"
    keys = {"after_event": Kind.COUNT, "after_bytes": Kind.SIZE, "after": Kind.DURATION,
            "mid_event": Kind.COUNT, "how": Kind.TEXT}
    example = "drop:after_event=12,how=rst  (how=fin|rst; or after_bytes=, after=2s, mid_event=)"
    stage = Stage.CUTS
    per_event_replaces = DROP_TRIGGERS

    after_event: int | None = None
    after_bytes: int | None = None
    after: float | None = None  # seconds, counting the time the other faults add
    mid_event: int | None = None
    how: str = "fin"

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if not _one_position(values, DROP_TRIGGERS, per_event):
            raise ConfigError(f"drop needs exactly one of {', '.join(DROP_TRIGGERS)} "
                              "(or per=event,p=P)")
        if values.get("mid_event", 1) < 1:
            raise ConfigError("drop mid_event= counts events from 1")
        how = choice("how", values.get("how", "fin"), DROP_HOW)
        return cls(values.get("after_event"), values.get("after_bytes"), values.get("after"),
                   values.get("mid_event"), how)

    @property
    def ending(self) -> Outcome:
        return DROP_HOW[self.how]

    def needs_events(self) -> bool:
        return self.after_bytes is None and self.after is None

    def acts_at(self) -> Stage:
        return Stage.DEADLINE if self.after is not None else Stage.CUTS


HTTP_SHAPES = ("text", *HTTP_BODIES)
NO_BODY = (204, 304)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2: a header name
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def _header(text: str) -> tuple[str, str]:
    """`Name: value` for an injected response, checked: a valid name, a value on one line,
    and none of the fields the server sets to frame the response."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _TOKEN.fullmatch(name):
        raise ConfigError(f"http header= takes 'Name: value', not {text!r}")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError("http header= takes a value on one line")
    if name.lower() in FRAMING_HEADERS:
        raise ConfigError(f"http header= cannot set {name}: the server frames the response")
    return name, value
TEXT_PLAIN = ("Content-Type", "text/plain; charset=utf-8")


@dataclass(frozen=True)
class Http(Params):
    name = "http"
    keys = {"status": Kind.COUNT, "retry_after": Kind.COUNT, "body": Kind.TEXT,
            "shape": Kind.TEXT, "header": Kind.TEXT}
    example = "http:status=429,retry_after=2,shape=openai  (shape=openai|anthropic|text)"
    stage = Stage.ANSWER

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        status = values.get("status")
        if status is None or not 200 <= status <= 599 or status in NO_BODY:
            # 1xx are not final answers, 204 and 304 have no body: a client would read the
            # injected body as the start of the next response
            raise ConfigError("http needs status=200..599, not 204 or 304 (the response "
                              "replaces the recorded one, body included)")
        if "body" in values and "shape" in values:
            raise ConfigError("http takes body= or shape=, not both (body= is sent as text)")
        shape = choice("shape", values.get("shape", "text"), HTTP_SHAPES)
        reason = reason_of(status)
        headers: list[tuple[str, str]] = []
        if "retry_after" in values:
            headers.append(("Retry-After", str(values["retry_after"])))
        if "header" in values:  # header=Name: value
            headers.append(_header(values["header"]))
        if "body" in values:
            body = values["body"].encode()
            headers.append(TEXT_PLAIN)
        elif shape == "text":
            body = f"{status} {reason} (injected by sse-recorder)\n".encode()
            headers.append(TEXT_PLAIN)
        else:
            bodies = HTTP_BODIES[shape]
            body = json.dumps(bodies.get(status, bodies[None])).encode()
            headers.append(("Content-Type", "application/json"))
        return cls(status, reason, tuple(headers), body)


@dataclass(frozen=True)
class Refuse(Params):
    name = "refuse"
    keys = {}
    example = "refuse  (reset the connection before any response)"
    stage = Stage.ANSWER


@dataclass(frozen=True)
class NoHead(Params):
    name = "no-head"
    keys = {}
    example = "no-head  (accept the request; the response head never comes)"
    stage = Stage.ANSWER


@dataclass(frozen=True)
class Inject(Params):
    name = "inject"
    keys = {"after_event": Kind.COUNT, "shape": Kind.TEXT, "event": Kind.TEXT,
            "data": Kind.TEXT}
    example = "inject:after_event=3,shape=anthropic-overloaded  (shape=NAME: see below)"
    stage = Stage.CONTENT
    cut_at_events = True
    per_event_replaces = ("after_event",)

    event: bytes  # the whole event, ready to send
    after_event: int = 0  # after this many events

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if not {"shape", "event", "data"} & set(values):
            raise ConfigError("inject needs shape= (or event= and data=)")
        if "shape" in values and {"event", "data"} & set(values):
            raise ConfigError("inject takes shape= or event=/data=, not both")
        if values.get("shape") in FRAME_SHAPES:  # a frame of a vendor's own stream format
            event = FRAME_SHAPES[values["shape"]]
        elif "shape" in values:
            name, payload = SHAPES[choice("shape", values["shape"], [*SHAPES, *FRAME_SHAPES],
                                          one_of=True)]
            event = encode_event(json.dumps(payload), event=name)
        else:
            event = encode_event(values.get("data", ""), event=values.get("event"))
        return cls(event, values.get("after_event", 0))


def _seconds(value: float) -> float | int:
    """A number of seconds as the seed writes them: whole when it is."""
    return int(value) if float(value).is_integer() else round(value, 3)


def _keep_alive(at: float, every: float) -> bytes:
    """The seed's keep-alive: how long the stream has run, and when the next one comes."""
    data = {**SEED_EVENTS["keep-alive"], "duration": _seconds(at), "nextPing": _seconds(every)}
    return encode_event(json.dumps(data), event="keep-alive")


def _seed_event(name: str) -> Callable[[float, float], bytes]:
    event = encode_event(json.dumps(SEED_EVENTS[name]), event=name)
    return lambda at, every: event


# style -> the beat sent at `at` seconds into the body, every `every` seconds
HEARTBEATS: dict[str, Callable[[float, float], bytes]] = {
    "comment": lambda at, every: b": heartbeat\n\n",
    "ping": lambda at, every: b"event: ping\ndata: {}\n\n",
    "heartbeat": _seed_event("heartbeat"),
    "keep-alive": _keep_alive,
    "connection-status": _seed_event("connection-status"),
}


@dataclass(frozen=True)
class Heartbeat(Params):
    name = "heartbeat"
    keys = {"every": Kind.DURATION, "style": Kind.TEXT}
    example = ("heartbeat:every=5s,style=comment  (style=" + "|".join(HEARTBEATS) + ")")
    stage = Stage.TIMING
    cut_at_events = True

    every: float
    style: str = "comment"

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if values.get("every", 0) <= 0:
            raise ConfigError("heartbeat needs every=DURATION > 0")
        return cls(values["every"], choice("style", values.get("style", "comment"), HEARTBEATS))

    def beat(self, at: float) -> bytes:
        """The heartbeat sent `at` seconds into the body."""
        return HEARTBEATS[self.style](at, self.every)


@dataclass(frozen=True)
class Retry(Params):
    name = "retry"
    keys = {"value": Kind.DURATION}
    example = "retry:value=1000  (send a retry: field first)"
    stage = Stage.CONTENT
    cut_at_events = True

    value: int  # milliseconds, as the retry: field carries them

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if "value" not in values:
            raise ConfigError("retry needs value=DURATION")
        milliseconds = values["value"] * 1000
        if abs(milliseconds - round(milliseconds)) > 1e-6:
            raise ConfigError("retry value= is a whole number of milliseconds")
        return cls(round(milliseconds))


# crc and truncate are for frames of other streams (framing.registry.Dialect.corrupt)
CORRUPT_MODES = ("field", "utf8", "json", "duplicate", "omit", "crc", "truncate")


@dataclass(frozen=True)
class Corrupt(Params):
    name = "corrupt"
    keys = {"mode": Kind.TEXT, "at_event": Kind.COUNT}
    example = "corrupt:mode=json,at_event=2  (mode=field|utf8|json|duplicate|omit)"
    stage = Stage.CONTENT
    cut_at_events = True
    per_event_replaces = ("at_event",)

    mode: str
    at_event: int = 1  # the event number (from 1) to corrupt

    @classmethod
    def parse(cls, values: Values, per_event: bool) -> Self:
        if "mode" not in values:
            raise ConfigError(f"corrupt needs mode= (one of {', '.join(CORRUPT_MODES)})")
        if values.get("at_event", 1) < 1:
            raise ConfigError("corrupt at_event= counts events from 1")
        return cls(choice("mode", values["mode"], CORRUPT_MODES, one_of=True),
                   values.get("at_event", 1))


# In the order `sse-recorder faults` lists them.
REGISTRY: dict[str, type[Params]] = {cls.name: cls for cls in (
    Throttle, Latency, Pause, Stall, Timeout, Rechunk, Drop, SlowClose, Http, Refuse, NoHead,
    Inject, Heartbeat, Retry, Corrupt,
)}

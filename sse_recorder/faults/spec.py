"""The fault spec language: `--fault TYPE:key=value,...` and TOML plans.

Rules:
- a TOML plan has `seed = N` and `[[fault]]` tables with `type = "..."` and the same keys;
- a duration carries a unit (250ms, 2s, 1m) or is a number of milliseconds, as in
  Toxiproxy: `latency:head=500` and `head = 500` in a plan are half a second;
- every fault takes route, p, per and on_resume; its type's keys come from the registry;
  an unknown key, type or option value is an error that suggests the nearest good one;
- per=event replaces the type's position keys by a roll at every event: giving both, or
  per=event on a type that has no per-event form, is an error (it would read wrong);
- every duration, then every count, is read up front; the type's rules then read the rest as
  they look at them, so the first problem found is the one reported. All of it happens when
  the plan loads: a bad spec fails before the server starts, with one line naming the spec;
- each fault draws from a generator seeded by (seed, connection number, fault number), so the
  same seed and request order give the same faults;
- routes match the recorded request's host; `FaultPlan.unreachable` names, at start, the
  faults whose route no recording in the cassette matches.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sse_recorder.demo.payloads import SHAPES
from sse_recorder.errors import ConfigError
from sse_recorder.faults.registry import REGISTRY, Kind, Params, choice, did_you_mean
from sse_recorder.faults.run import FaultRun
from sse_recorder.model import Interaction, Outcome
from sse_recorder.routes import Route, host_and_path
from sse_recorder.units import parse_duration, parse_size


def _whole(value: Any, key: str) -> int:
    """An int from text or a TOML number; never a bool, never a float cut short."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key} must be a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number") from None


FLAGS = {"true": True, "yes": True, "on": True, "1": True,
         "false": False, "no": False, "off": False, "0": False}


def _flag(value: Any, key: str) -> bool:
    """True or false, from a TOML boolean or the words people write."""
    if isinstance(value, bool):
        return value
    flag = FLAGS.get(str(value).strip().lower())
    if flag is None:
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    return flag


def _count(value: Any, key: str) -> int:
    number = _whole(value, key)
    if number < 0:
        raise ConfigError(f"{key} must be >= 0")
    return number


# A fault's time longer than this is a typo (or 1e308): it would hold a stream, and its
# client's slot, for good.
MAX_FAULT_DURATION_S = 86_400.0


def _duration(value: Any, type_: str, key: str) -> float:
    seconds = parse_duration(value, f"{type_}.{key}")
    if seconds > MAX_FAULT_DURATION_S:
        raise ConfigError(f"{type_}.{key}: {value!r} is longer than a day")
    return seconds


def _text(value: Any, key: str) -> str:
    if isinstance(value, list | tuple | dict):
        raise ConfigError(f"{key} takes one value, not a {type(value).__name__}")
    return str(value)


# Kind -> reader(value, type name, key)
_READERS: dict[Kind, Callable[[Any, str, str], Any]] = {
    Kind.DURATION: _duration,
    Kind.COUNT: lambda value, type_, key: _count(value, key),
    Kind.SIZE: lambda value, type_, key: parse_size(value, f"{type_}.{key}"),
    Kind.WHOLE: lambda value, type_, key: _whole(value, key),
    Kind.FLAG: lambda value, type_, key: _flag(value, key),
    Kind.TEXT: lambda value, type_, key: _text(value, key),
}
COMMON_KEYS = ("route", "p", "per", "on_resume")
PER = ("connection", "event")
ON_RESUME = ("fresh", "none")  # fresh: reconnections roll again; none: no faults on resume
PER_EVENT_TYPES = tuple(n for n, kind in REGISTRY.items() if kind.per_event_replaces is not None)
_UP_FRONT = (Kind.DURATION, Kind.COUNT, Kind.FLAG)


class _Values(Mapping[str, Any]):
    """A fault's own keys, each read by its kind the first time it is looked at."""

    def __init__(self, raw: Mapping[str, Any], type_: str, kinds: Mapping[str, Kind]) -> None:
        self._raw, self._type, self._kinds = raw, type_, kinds
        self._read: dict[str, Any] = {}
        for kind in _UP_FRONT:  # checked before the type's rules look at anything
            for key in (k for k, of in kinds.items() if of is kind and k in raw):
                self[key]  # a bad value raises here

    def __getitem__(self, key: str) -> Any:
        if key not in self._read:
            self._read[key] = _READERS[self._kinds[key]](self._raw[key], self._type, key)
        return self._read[key]

    def __contains__(self, key: object) -> bool:  # without reading the value
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(frozen=True)
class Fault:
    """One validated fault: its typed parameters, target and probability."""

    params: Params
    route: Route | None = None
    probability: float = 1.0
    per_event: bool = False
    on_resume: str = "fresh"  # fresh: reconnections roll again; none: no faults on resume
    spec: str = ""

    @property
    def type(self) -> str:
        return self.params.name

    def applies_to(self, method: str, host: str, path: str) -> bool:
        return self.route is None or self.route.matches(method, host, path)


def _fault(type_: str, raw: dict[str, Any], spec: str) -> Fault:
    """One fault from its type and keys; a problem is one line starting with `spec`."""
    try:
        return _read(type_, raw, spec)
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None


def _read(type_: str, raw: dict[str, Any], spec: str) -> Fault:
    kind = REGISTRY.get(type_)
    if kind is None:
        raise ConfigError(f"unknown fault type {type_!r}{did_you_mean(type_, REGISTRY)}; "
                          "see `sse-recorder faults`")
    takes = (*kind.keys, *COMMON_KEYS)
    unknown = sorted(set(raw) - set(takes))
    if unknown:
        hints = [did_you_mean(key, takes) for key in unknown]
        listed = ", ".join(key + hint for key, hint in zip(unknown, hints, strict=True))
        if not any(hints):
            listed += f" (it takes {', '.join(takes)})"
        raise ConfigError(f"{type_} does not take {listed}")
    try:
        probability = float(raw.get("p", 1.0))
    except (TypeError, ValueError):
        raise ConfigError("p must be a number between 0 and 1") from None
    if not 0 <= probability <= 1:
        raise ConfigError("p must be between 0 and 1")
    per_event = choice("per", str(raw.get("per", "connection")), PER) == "event"
    on_resume = choice("on_resume", str(raw.get("on_resume", "fresh")), ON_RESUME)
    route = Route.parse(str(raw["route"])) if "route" in raw else None
    if per_event and kind.per_event_replaces is None:
        raise ConfigError(f"{type_} has no per=event form (only {', '.join(PER_EVENT_TYPES)}"
                          " roll at every event); p= alone says how often it fires")
    ignored = [f"{key}=" for key in kind.per_event_replaces or () if key in raw]
    if per_event and ignored:
        raise ConfigError(f"per=event rolls p= at every event instead of a position, so "
                          f"{type_} would ignore {', '.join(ignored)}: give one or the other")
    own = {key: value for key, value in raw.items() if key not in COMMON_KEYS}
    params = kind.parse(_Values(own, type_, kind.keys), per_event)
    return Fault(params, route, probability, per_event, on_resume, spec)


def parse_spec(spec: str) -> Fault:
    """`TYPE` or `TYPE:key=value,key=value` (a route may contain spaces: route=POST */x)."""
    type_, _, rest = spec.strip().partition(":")
    raw: dict[str, Any] = {}
    for part in (p for p in rest.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{spec}: expected key=value, got {part.strip()!r}")
        if key.strip() in raw:
            raise ConfigError(f"{spec}: {key.strip()} is given twice")
        raw[key.strip()] = value.strip()
    return _fault(type_.strip(), raw, spec.strip())


def parse_table(table: Mapping[str, Any]) -> Fault:
    """A fault from a `[[fault]]`-style table (`type` and the spec's keys as values, as a
    TOML plan or a JSON object holds them); its spec text is written back from the table."""
    if "type" not in table:
        raise ConfigError("a fault table needs a type")
    raw = {key: value for key, value in table.items() if key != "type"}
    text = ",".join(f"{key}={_spec_value(value)}" for key, value in raw.items())
    type_ = str(table["type"])
    return _fault(type_, raw, f"{type_}:{text}" if text else type_)


def _spec_value(value: Any) -> str:
    """A table value as a spec writes it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one replay server and the seed their dice are rolled from.

    Each fault has an id (1, 2, ... in plan order; the control API adds and removes faults
    by id): its dice depend on the seed, the response number and its id alone, so adding or
    removing a fault leaves the others' draws as they were."""

    faults: tuple[Fault, ...] = ()
    seed: int = 0
    ids: tuple[int, ...] = ()  # one per fault; empty: 1, 2, ... in order

    def __post_init__(self) -> None:
        if not self.ids:
            object.__setattr__(self, "ids", tuple(range(1, len(self.faults) + 1)))
        if len(self.ids) != len(self.faults) or len(set(self.ids)) != len(self.ids):
            raise ValueError("a FaultPlan needs one distinct id per fault")

    def adding(self, fault: Fault, fault_id: int) -> FaultPlan:
        """This plan with `fault` last, as `fault_id`."""
        return FaultPlan((*self.faults, fault), self.seed, (*self.ids, fault_id))

    def removing(self, fault_id: int) -> FaultPlan:
        """This plan without the fault `fault_id` (the same plan when it has none)."""
        kept = [(i, f) for i, f in zip(self.ids, self.faults, strict=True) if i != fault_id]
        return FaultPlan(tuple(f for _, f in kept), self.seed, tuple(i for i, _ in kept))

    @classmethod
    def load(cls, specs: Iterable[str] = (), plan_file: Path | None = None,
             seed: int | None = None) -> FaultPlan:
        """The plan file's faults, then `specs`; `seed` wins over the file's."""
        faults: list[Fault] = []
        file_seed = 0
        if plan_file is not None:
            file_faults, file_seed = _load_toml(plan_file)
            faults += file_faults
        faults += [parse_spec(s) for s in specs]
        return cls(tuple(faults), seed if seed is not None else file_seed)

    def for_connection(self, number: int, method: str, host: str, path: str,
                       resumed: bool, ends: Outcome | None = None) -> FaultRun:
        """The faults this response gets: a function of the seed and `number` alone.
        `host` is the recorded one (the host of the matched recording's URL); `ends` is the
        close that ends the recorded body on this connection (CLOSED, RESET), None when
        its framing ends it (see `FaultRun.ends`)."""
        chosen: list[tuple[Fault, random.Random]] = []
        for fault_id, fault in zip(self.ids, self.faults, strict=True):
            rng = random.Random(f"{self.seed}:{number}:{fault_id - 1}")
            if not fault.applies_to(method, host, path):
                continue
            if resumed and fault.on_resume == "none":
                continue
            if not fault.per_event and rng.random() >= fault.probability:
                continue
            chosen.append((fault, rng))
        return FaultRun(chosen, ends)

    def unreachable(self, interactions: Iterable[Interaction]) -> list[str]:
        """One line per fault whose route no recording matches, saying why: it never fires."""
        recorded = sorted({(i.request.method.upper(), *host_and_path(i.request.url))
                           for i in interactions if i.response is not None})
        return [f"{fault.spec}: route {fault.route} never matches, so the fault never fires: "
                + _why_unmatched(fault.route, recorded)
                for fault in self.faults
                if fault.route is not None
                and not any(fault.route.matches(*request) for request in recorded)]


def _why_unmatched(route: Route, recorded: Sequence[tuple[str, str, str]]) -> str:
    """What part of a route no recording has: its host, its method, or its path."""
    if not recorded:
        return "the cassette holds no recorded response"
    hosts = sorted({host for _, host, _ in recorded})
    host, _, path = route.pattern.partition("/")
    if any(Route(route.method, f"*/{path}").matches(*request) for request in recorded):
        return (f"no recording is from host {host} (recorded: {', '.join(hosts)}); "
                "routes match the recorded host")
    seen = [f"{verb} {name}{where}" for verb, name, where in recorded]
    listed = ", ".join(seen[:3]) + (f" and {len(seen) - 3} more" if len(seen) > 3 else "")
    if any(Route("*", route.pattern).matches(*request) for request in recorded):
        return f"no {route.method} request is recorded there (recorded: {listed})"
    return f"no recorded request has that path (recorded: {listed})"


def _load_toml(path: Path) -> tuple[list[Fault], int]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fault plan: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"seed", "fault"})
    if unknown:
        listed = ", ".join(key + did_you_mean(key, ("seed", "fault")) for key in unknown)
        raise ConfigError(f"{path}: unknown top-level key(s) {listed}")
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
    """What `sse-recorder faults` prints."""
    lines = ["Fault types (--fault TYPE:key=value,... or [[fault]] tables in a TOML plan):"]
    lines += [f"  {name:<10} {kind.example}" for name, kind in REGISTRY.items()]
    lines += [
        "Every fault also takes route='[METHOD ]host/path-glob' (the host as recorded, without"
        " port), p=PROBABILITY, per=connection|event, on_resume=fresh|none.",
        "Durations carry a unit, 250ms, 2s or 1m; a bare number is milliseconds (500 = 500ms),"
        " in a --fault spec and as a TOML number alike.",
        "Sizes are bytes, or with K, M, G (powers of 1024): 512, 10K, 1M.",
        "after_event=K acts once K events were sent; per=event,p=P instead rolls P at every"
        f" event ({', '.join(PER_EVENT_TYPES)}).",
        "at=T acts at T, as drop:after=T does: nothing due at T or later goes out before it.",
        "Recorded chunks keep their boundaries and gaps except where a fault acts (rechunk"
        " and throttle re-cut them all).",
        f"inject:shape= takes {', '.join(SHAPES)}.",
    ]
    return "\n".join(lines)

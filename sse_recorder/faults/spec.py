"""The fault spec language: `--fault TYPE:key=value,...` and TOML plans.

Rules:
- a TOML plan has `seed = N` and `[[fault]]` tables with `type = "..."` and the same keys;
- every fault takes route, p, per and on_resume; its type's keys come from the registry;
- every duration, then every count, is read up front; the type's rules then read the rest as
  they look at them, so the first problem found is the one reported. All of it happens when
  the plan loads: a bad spec fails before the server starts, with one line naming the spec;
- each fault draws from a generator seeded by (seed, connection number, fault number), so the
  same seed and request order give the same faults.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sse_recorder.errors import ConfigError
from sse_recorder.faults.registry import REGISTRY, Kind, Params
from sse_recorder.faults.run import FaultRun
from sse_recorder.routes import Route

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?(?:/s)?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


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
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _whole(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number") from None


def _count(value: Any, key: str) -> int:
    number = _whole(value, key)
    if number < 0:
        raise ConfigError(f"{key} must be >= 0")
    return number


# Kind -> reader(value, type name, key)
_READERS: dict[Kind, Callable[[Any, str, str], Any]] = {
    Kind.DURATION: lambda value, type_, key: parse_duration(value, f"{type_}.{key}"),
    Kind.COUNT: lambda value, type_, key: _count(value, key),
    Kind.SIZE: lambda value, type_, key: parse_size(value, f"{type_}.{key}"),
    Kind.WHOLE: lambda value, type_, key: _whole(value, key),
    Kind.TEXT: lambda value, type_, key: str(value),
}
COMMON_KEYS = frozenset({"route", "p", "per", "on_resume"})
_UP_FRONT = (Kind.DURATION, Kind.COUNT)


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
    kind = REGISTRY.get(type_)
    if kind is None:
        raise ConfigError(f"{spec}: unknown fault type {type_!r}; see `sse-recorder faults`")
    unknown = sorted(set(raw) - set(kind.keys) - COMMON_KEYS)
    if unknown:
        raise ConfigError(f"{spec}: {type_} does not take {', '.join(unknown)}")
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
    try:
        own = {key: value for key, value in raw.items() if key not in COMMON_KEYS}
        params = kind.parse(_Values(own, type_, kind.keys), per == "event")
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None
    return Fault(params, route, probability, per == "event", on_resume, spec)


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
    """The faults of one replay server and the seed their dice are rolled from."""

    faults: tuple[Fault, ...] = ()
    seed: int = 0

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
                       resumed: bool) -> FaultRun:
        """The faults this response gets: a function of the seed and `number` alone."""
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
    """What `sse-recorder faults` prints."""
    lines = ["Fault types (--fault TYPE:key=value,... or [[fault]] tables in a TOML plan):"]
    lines += [f"  {name:<10} {kind.example}" for name, kind in REGISTRY.items()]
    lines.append("Every fault also takes route='[METHOD ]host/path-glob', p=PROBABILITY,"
                 " per=connection|event, on_resume=fresh|none.")
    return "\n".join(lines)

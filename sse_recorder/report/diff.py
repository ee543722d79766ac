"""What drifted between two recordings of the same traffic: pairs and findings, pure.

Interactions pair by the replay matching rules (`replay.matching.Matcher`, A's recordings
answering B's requests, repeats in recorded order) or by id. Each pair is compared on
status, response headers (volatile ones left out), the event-type sequence, the JSON shape
of each event type's data, the ending and timing; each difference is one `Finding`, a
dataclass per kind (`KINDS`). Timing counts only beyond a threshold, which is a ratio AND
a floor, so a 2 ms time to first byte turning into 5 ms is not drift, nor is 40 ms against
45 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from sse_recorder.errors import ConfigError
from sse_recorder.model import Interaction
from sse_recorder.replay.matching import (
    IncomingRequest,
    MatchConfig,
    Matcher,
    WhenExhausted,
    split_url,
)
from sse_recorder.report import shapes as shaping
from sse_recorder.report.timeline import Recording, Stats, stats, type_of
from sse_recorder.units import parse_duration

# -- findings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One difference between paired interactions `a` (in A) and `b` (in B)."""

    kind: ClassVar[str]
    about: ClassVar[str]  # what the kind means, for --help and the HTML page

    a: int | None
    b: int | None

    def message(self) -> str:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """The JSON object of `diff --json`: kind, ids, the kind's fields, the message."""
        return {"kind": self.kind, **asdict(self), "message": self.message()}


@dataclass(frozen=True)
class OnlyInA(Finding):
    kind = "only-in-a"
    about = "an interaction of A that no interaction of B pairs with"
    request: str

    def message(self) -> str:
        return f"only in A: #{self.a} {self.request}"


@dataclass(frozen=True)
class OnlyInB(Finding):
    kind = "only-in-b"
    about = "an interaction of B that no interaction of A pairs with"
    request: str

    def message(self) -> str:
        return f"only in B: #{self.b} {self.request}"


@dataclass(frozen=True)
class StatusChanged(Finding):
    kind = "status"
    about = "the response status differs (null: no response)"
    was: int | None
    now: int | None

    def message(self) -> str:
        return f"status {_none(self.was, 'no response')} -> {_none(self.now, 'no response')}"


@dataclass(frozen=True)
class HeaderChanged(Finding):
    kind = "header"
    about = "a response header was added, removed or changed value (volatile ones ignored)"
    name: str
    was: str | None
    now: str | None

    def message(self) -> str:
        return f"header {self.name}: {_none(self.was, '(absent)')} -> {_none(self.now, '(absent)')}"


@dataclass(frozen=True)
class TypeAdded(Finding):
    kind = "type-added"
    about = "an event type only B sends"
    type: str
    count: int

    def message(self) -> str:
        return f"event type {self.type} added ({_times(self.count)} in B)"


@dataclass(frozen=True)
class TypeRemoved(Finding):
    kind = "type-removed"
    about = "an event type only A sends"
    type: str
    count: int

    def message(self) -> str:
        return f"event type {self.type} removed ({_times(self.count)} in A)"


@dataclass(frozen=True)
class TypesReordered(Finding):
    kind = "types-reordered"
    about = "the event types both send first appear in another order"
    was: tuple[str, ...]
    now: tuple[str, ...]

    def message(self) -> str:
        return f"event types reordered: {', '.join(self.was)} -> {', '.join(self.now)}"


@dataclass(frozen=True)
class TypeRepeated(Finding):
    kind = "type-repeated"
    about = "an event type sent once on one side is sent more than once on the other"
    type: str
    was: int
    now: int

    def message(self) -> str:
        return f"event type {self.type}: sent {_times(self.was)}, now {_times(self.now)}"


@dataclass(frozen=True)
class FieldAdded(Finding):
    kind = "field-added"
    about = "a data field only B's events of a type have"
    type: str
    path: str
    types: str
    example: str  # the concrete path in event `seq` of B
    seq: int

    def message(self) -> str:
        return (f"{self.type}: field {self.path} ({self.types}) added, e.g. {self.example} "
                f"in event {self.seq}")


@dataclass(frozen=True)
class FieldRemoved(Finding):
    kind = "field-removed"
    about = "a data field only A's events of a type have"
    type: str
    path: str
    types: str
    example: str  # in event `seq` of A
    seq: int

    def message(self) -> str:
        return (f"{self.type}: field {self.path} ({self.types}) removed, e.g. {self.example} "
                f"in event {self.seq} of A")


@dataclass(frozen=True)
class FieldRenamed(Finding):
    kind = "field-renamed"
    about = "a data field gone from A's place and one of the same type new beside it in B"
    type: str
    path: str
    now_path: str
    types: str
    example: str  # the new concrete path in event `seq` of B
    seq: int

    def message(self) -> str:
        return (f"{self.type}: field {self.path} renamed to {self.now_path} ({self.types}), "
                f"e.g. {self.example} in event {self.seq}")


@dataclass(frozen=True)
class FieldTypeChanged(Finding):
    kind = "field-type"
    about = "a data field holds another JSON type (null is compatible with any)"
    type: str
    path: str
    was: str
    now: str
    example: str  # in event `seq` of B
    seq: int

    def message(self) -> str:
        return (f"{self.type}: field {self.path} was {self.was}, now {self.now}, e.g. "
                f"{self.example} in event {self.seq}")


@dataclass(frozen=True)
class EndingChanged(Finding):
    kind = "ending"
    about = "the response ended another way (clean, closed, reset, client-gone...)"
    was: str
    now: str

    def message(self) -> str:
        return f"ending {self.was} -> {self.now}"


@dataclass(frozen=True)
class TimingDrift(Finding):
    kind = "timing"
    about = "a timing figure moved beyond its threshold (ratio and floor both exceeded)"
    metric: str
    was_ms: float
    now_ms: float
    threshold: str

    def message(self) -> str:
        return (f"{METRICS[self.metric][0]} {self.was_ms:.1f} ms -> {self.now_ms:.1f} ms "
                f"(x{_ratio(self.was_ms, self.now_ms):.2f}; threshold {self.threshold})")


FINDINGS: tuple[type[Finding], ...] = (
    OnlyInA, OnlyInB, StatusChanged, HeaderChanged, TypeAdded, TypeRemoved, TypesReordered,
    TypeRepeated, FieldAdded, FieldRemoved, FieldRenamed, FieldTypeChanged, EndingChanged,
    TimingDrift,
)
KINDS: dict[str, type[Finding]] = {cls.kind: cls for cls in FINDINGS}


def _none(value: object, absent: str) -> str:
    return absent if value is None else str(value)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _ratio(a: float, b: float) -> float:
    low, high = sorted((a, b))
    return high / low if low > 0 else math.inf


# -- thresholds -------------------------------------------------------------------------------

METRICS: dict[str, tuple[str, Callable[[Stats], float | None]]] = {
    "ttfb": ("time to first byte", lambda s: s.ttfb_ms),
    "gap-median": ("median gap", lambda s: s.gap_median_ms),
    "gap-p95": ("p95 gap", lambda s: s.gap_p95_ms),
    "duration": ("total duration", lambda s: s.duration_ms),
}


@dataclass(frozen=True)
class Threshold:
    """Drift is a change by more than `ratio` times AND by more than `floor_ms`."""

    ratio: float
    floor_ms: float

    def exceeded(self, was: float, now: float) -> bool:
        return abs(now - was) > self.floor_ms and _ratio(was, now) > self.ratio

    def __str__(self) -> str:
        return f"x{self.ratio:g} and {self.floor_ms:g} ms"


DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "ttfb": Threshold(1.5, 100), "gap-median": Threshold(1.5, 20),
    "gap-p95": Threshold(2.0, 100), "duration": Threshold(1.5, 250),
}
THRESHOLD_RULE = (f"METRIC=RATIO[:DURATION] with METRIC one of {', '.join(METRICS)} "
                  "(e.g. ttfb=1.5:100ms)")


def parse_thresholds(specs: Iterable[str]) -> dict[str, Threshold]:
    """The default thresholds with `METRIC=RATIO[:DURATION]` overrides."""
    chosen = dict(DEFAULT_THRESHOLDS)
    for spec in specs:
        name, eq, value = spec.partition("=")
        name = name.strip()
        if not eq or name not in METRICS:
            raise ConfigError(f"bad --threshold {spec!r}: {THRESHOLD_RULE}")
        ratio_text, colon, floor_text = value.partition(":")
        try:
            ratio = float(ratio_text)
        except ValueError:
            ratio = math.nan
        if not (math.isfinite(ratio) and ratio >= 1):
            raise ConfigError(f"bad --threshold {spec!r}: the ratio is a number >= 1 "
                              f"({THRESHOLD_RULE})")
        floor = (parse_duration(floor_text, f"--threshold {name}") * 1000 if colon
                 else chosen[name].floor_ms)
        chosen[name] = Threshold(ratio, floor)
    return chosen


# -- pairing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    a: Recording | None
    b: Recording | None


def pair_by_id(a: Sequence[Recording], b: Sequence[Recording]) -> list[Pair]:
    ours = {r.interaction.id: r for r in a}
    theirs = {r.interaction.id: r for r in b}
    return [Pair(ours.get(n), theirs.get(n)) for n in sorted(ours.keys() | theirs.keys())]


def incoming(recorded: Interaction) -> IncomingRequest:
    """A recorded request as the replay server would receive it."""
    request = recorded.request
    scheme, host, path, query = split_url(request.url)
    return IncomingRequest(request.method, path + (f"?{query}" if query else ""),
                           request.headers, request.body, scheme, host)


def pair_by_match(a: Sequence[Recording], b: Sequence[Recording],
                  config: MatchConfig) -> list[Pair]:
    """Each of B's requests answered by A's recordings as replay would answer it, every
    recording used once (so repeats pair in recorded order); the rest stand alone."""
    ours = {r.interaction.id: r for r in a}
    matcher = Matcher([r.interaction for r in a],
                      replace(config, when_exhausted=WhenExhausted.ERROR))
    pairs: list[Pair] = []
    for theirs in b:
        found = matcher.match(incoming(theirs.interaction))
        pairs.append(Pair(ours[found.id] if isinstance(found, Interaction) else None, theirs))
    used = {p.a.interaction.id for p in pairs if p.a is not None}
    pairs += [Pair(r, None) for r in a if r.interaction.id not in used]
    return sorted(pairs, key=lambda p: (p.a.interaction.id if p.a else math.inf,
                                        p.b.interaction.id if p.b else math.inf))


# -- comparing --------------------------------------------------------------------------------

# Response headers that differ between any two responses: never compared by value.
VOLATILE_HEADERS = frozenset({
    "date", "age", "expires", "last-modified", "etag", "content-length", "set-cookie",
    "x-request-id", "request-id", "cf-ray", "server-timing", "openai-processing-ms",
    "x-envoy-upstream-service-time", "via", "alt-svc", "report-to", "nel",
})
VOLATILE_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "x-amz-", "x-amzn-")


@dataclass(frozen=True)
class Options:
    pair_by: str = "match"  # or "id"
    match: MatchConfig = field(default_factory=MatchConfig)
    thresholds: dict[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    ignore_headers: frozenset[str] = frozenset()  # lower-case names


@dataclass(frozen=True)
class PairReport:
    pair: Pair
    findings: list[Finding]

    @property
    def request(self) -> str:
        chosen = self.pair.b or self.pair.a
        assert chosen is not None
        return f"{chosen.interaction.request.method} {chosen.interaction.request.url}"


PAIRINGS: dict[str, Callable[[Sequence[Recording], Sequence[Recording], Options], list[Pair]]] = {
    "match": lambda a, b, o: pair_by_match(a, b, o.match),
    "id": lambda a, b, o: pair_by_id(a, b),
}


def diff(a: Sequence[Recording], b: Sequence[Recording], options: Options) -> list[PairReport]:
    return [PairReport(pair, compare(pair, options))
            for pair in PAIRINGS[options.pair_by](a, b, options)]


def compare(pair: Pair, options: Options) -> list[Finding]:
    a, b = pair.a, pair.b
    if a is None or b is None:
        alone = a or b
        assert alone is not None
        i = alone.interaction
        label = f"{i.request.method} {i.request.url}"
        return [OnlyInA(i.id, None, label) if b is None else OnlyInB(None, i.id, label)]
    ids = (a.interaction.id, b.interaction.id)
    return [*_status(ids, a, b), *_headers(ids, a, b, options.ignore_headers),
            *_types(ids, a, b), *_shapes(ids, a, b), *_ending(ids, a, b),
            *_timing(ids, stats(a), stats(b), options.thresholds)]


Ids = tuple[int, int]


def _status(ids: Ids, a: Recording, b: Recording) -> list[Finding]:
    was, now = (r.interaction.response.status if r.interaction.response else None
                for r in (a, b))
    return [] if was == now else [StatusChanged(*ids, was, now)]


def _volatile(name: str) -> bool:
    return name in VOLATILE_HEADERS or name.startswith(VOLATILE_PREFIXES)


def _header_map(r: Recording) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for name, value in r.interaction.response.headers if r.interaction.response else ():
        found.setdefault(name.lower(), []).append(value)
    return {name: ", ".join(values) for name, values in found.items()}


def _headers(ids: Ids, a: Recording, b: Recording, ignored: frozenset[str]) -> list[Finding]:
    was, now = _header_map(a), _header_map(b)
    out: list[Finding] = []
    for name in sorted((was.keys() | now.keys()) - ignored):
        old, new = was.get(name), now.get(name)
        if old == new or (old is not None and new is not None and _volatile(name)):
            continue
        out.append(HeaderChanged(*ids, name, old, new))
    return out


def _type_counts(r: Recording) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in r.events:
        if event.kind == "event":
            counts[type_of(event)] = counts.get(type_of(event), 0) + 1
    return counts  # in order of first appearance


def _types(ids: Ids, a: Recording, b: Recording) -> list[Finding]:
    was, now = _type_counts(a), _type_counts(b)
    out: list[Finding] = [TypeAdded(*ids, t, n) for t, n in now.items() if t not in was]
    out += [TypeRemoved(*ids, t, n) for t, n in was.items() if t not in now]
    order_was = tuple(t for t in was if t in now)
    order_now = tuple(t for t in now if t in was)
    if order_was != order_now:
        out.append(TypesReordered(*ids, order_was, order_now))
    out += [TypeRepeated(*ids, t, n, now[t]) for t, n in was.items()
            if t in now and (n == 1) != (now[t] == 1)]
    return out


def _under(path: str, roots: set[str]) -> bool:
    """Whether a strict ancestor of `path` is in `roots`."""
    while path != shaping.ROOT:
        path = shaping.parent(path)
        if path in roots:
            return True
    return False


def _shapes(ids: Ids, a: Recording, b: Recording) -> list[Finding]:
    was, now = shaping.shapes(a.events), shaping.shapes(b.events)
    out: list[Finding] = []
    for kind in [t for t in now if t in was]:
        old, new = was[kind].fields, now[kind].fields
        changed = {}
        for path in old.keys() & new.keys():
            before = old[path].types - {"null"}
            after = new[path].types - {"null"}
            if before and after and before != after:
                changed[path] = (before, after)
        removed = [p for p in old if p not in new]
        added = [p for p in new if p not in old]
        moved = set(removed) | set(added) | set(changed)
        removed = [p for p in removed if not _under(p, moved)]
        added = [p for p in added if not _under(p, moved)]
        renamed = _renames(removed, added, old, new)
        for path, (before, after) in sorted(changed.items()):
            if not _under(path, moved):
                out.append(FieldTypeChanged(*ids, kind, path, shaping.describe(before),
                                            shaping.describe(after), new[path].example,
                                            new[path].seq))
        for path, to in renamed.items():
            out.append(FieldRenamed(*ids, kind, path, to, shaping.describe(new[to].types),
                                    new[to].example, new[to].seq))
        out += [FieldRemoved(*ids, kind, p, shaping.describe(old[p].types), old[p].example,
                             old[p].seq) for p in removed if p not in renamed]
        taken = set(renamed.values())
        out += [FieldAdded(*ids, kind, p, shaping.describe(new[p].types), new[p].example,
                           new[p].seq) for p in added if p not in taken]
    return out


def _renames(removed: list[str], added: list[str], old: dict[str, shaping.Field],
             new: dict[str, shaping.Field]) -> dict[str, str]:
    """Removed path -> added path, where that pairing is the only one with the same parent
    and the same JSON types on both sides."""

    def alike(r: str, n: str) -> bool:
        return shaping.parent(r) == shaping.parent(n) and old[r].types == new[n].types

    found = {}
    for r in removed:
        candidates = [n for n in added if alike(r, n)]
        if len(candidates) == 1 and sum(alike(o, candidates[0]) for o in removed) == 1:
            found[r] = candidates[0]
    return found


def _ending(ids: Ids, a: Recording, b: Recording) -> list[Finding]:
    was, now = a.interaction.outcome.value, b.interaction.outcome.value
    return [] if was == now else [EndingChanged(*ids, was, now)]


def _timing(ids: Ids, was: Stats, now: Stats,
            thresholds: dict[str, Threshold]) -> list[Finding]:
    out: list[Finding] = []
    for metric, (_, measure) in METRICS.items():
        old, new = measure(was), measure(now)
        threshold = thresholds[metric]
        if old is not None and new is not None and threshold.exceeded(old, new):
            out.append(TimingDrift(*ids, metric, round(old, 3), round(new, 3),
                                   str(threshold)))
    return out

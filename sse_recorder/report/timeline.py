"""What a recorded interaction looks like in time: pure measurements, no I/O.

One `Recording` (an interaction with its chunk offsets and sizes and its events) gives the
figures the report draws, the diff compares and `show` sketches: time to first byte, gaps
between events (between chunks for a body that is not SSE), their histogram on fixed bins,
long gaps, rates over time, counts per event type. Every time here is in milliseconds from
the request, as `show` prints them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sse_recorder.model import Interaction, RecordedEvent

# Event types that only say "still here": drawn in a lane of their own, like comments.
HEARTBEAT_TYPES = frozenset({"ping", "heartbeat", "keep-alive", "keepalive"})

# Gap histogram bin edges (ms), one scale for every report so that two reports compare
# at a glance; the last bin is open.
GAP_EDGES_MS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
                5000.0, 10000.0, 30000.0, 60000.0, math.inf)

# A gap is long when it is at least this long and this many times the median gap.
LONG_GAP_MS = 500.0
LONG_GAP_FACTOR = 5.0

SPARK = "▁▂▃▄▅▆▇█"


class Lane(StrEnum):
    """Where an SSE item is drawn on the timeline."""

    EVENT = "event"
    HEARTBEAT = "heartbeat"
    COMMENT = "comment"


def lane_of(event: RecordedEvent) -> Lane:
    if event.kind == "comment":
        return Lane.COMMENT
    return Lane.HEARTBEAT if type_of(event) in HEARTBEAT_TYPES else Lane.EVENT


def type_of(event: RecordedEvent) -> str:
    """An event's type as the client sees it (`message` when unnamed)."""
    return event.type or "message"


@dataclass(frozen=True, slots=True)
class Recording:
    """An interaction with everything the report draws: chunk offsets and sizes (not the
    bytes: a 100,000-event recording stays small in memory) and the events."""

    interaction: Interaction
    chunk_offsets_ns: tuple[int, ...]
    chunk_sizes: tuple[int, ...]
    events: tuple[RecordedEvent, ...]


@dataclass(frozen=True, slots=True)
class Bin:
    lo_ms: float
    hi_ms: float  # math.inf for the open last bin
    count: int


@dataclass(frozen=True, slots=True)
class Rate:
    start_ms: float
    end_ms: float
    events_per_s: float
    bytes_per_s: float


@dataclass(frozen=True, slots=True)
class Stats:
    """The figures of one recording (None: not measurable, e.g. no response head)."""

    ttfb_ms: float | None  # the response head
    first_event_ms: float | None
    duration_ms: float
    gaps_of: str  # "events" or "chunks": what the gaps are between
    gaps_ms: tuple[float, ...]
    gap_median_ms: float | None
    gap_p95_ms: float | None
    gap_max_ms: float | None
    long_gaps: tuple[tuple[float, float], ...]  # (start, end) of each long gap
    counts: dict[str, int]  # event type -> events, in order of first appearance
    heartbeats: int
    comments: int
    body_size: int


def _ms(ns: int) -> float:
    return ns / 1e6


def duration_ms(rec: Recording) -> float:
    """The end of the response, else its last chunk, else its head (0: nothing at all)."""
    i = rec.interaction
    ends = [i.end_offset_ns, rec.chunk_offsets_ns[-1] if rec.chunk_offsets_ns else None,
            i.head_offset_ns]
    return _ms(max((e for e in ends if e is not None), default=0))


def gap_points(rec: Recording) -> tuple[str, list[float]]:
    """What the gaps are measured between, and its times: events (comments and heartbeats
    excluded) for an event stream, chunks otherwise."""
    if rec.interaction.is_sse:
        return "events", [_ms(e.offset_ns) for e in rec.events if lane_of(e) is Lane.EVENT]
    return "chunks", [_ms(o) for o in rec.chunk_offsets_ns]


def gaps(points: Sequence[float]) -> list[float]:
    return [b - a for a, b in zip(points, points[1:], strict=False)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def histogram(values: Sequence[float], edges: Sequence[float] = GAP_EDGES_MS) -> list[Bin]:
    """Counts per bin [lo, hi), from the first non-empty bin to the last (none: empty)."""
    counts = [0] * (len(edges) - 1)
    for value in values:
        low, high = 0, len(edges) - 2
        while low < high:  # the last bin whose lower edge is <= value
            mid = (low + high + 1) // 2
            if edges[mid] <= value:
                low = mid
            else:
                high = mid - 1
        counts[low] += 1
    used = [n for n, c in enumerate(counts) if c]
    if not used:
        return []
    return [Bin(edges[n], edges[n + 1], counts[n]) for n in range(used[0], used[-1] + 1)]


def long_gaps(points: Sequence[float], median: float | None) -> list[tuple[float, float]]:
    limit = max(LONG_GAP_MS, LONG_GAP_FACTOR * (median or 0.0))
    return [(a, b) for a, b in zip(points, points[1:], strict=False) if b - a >= limit]


def stats(rec: Recording) -> Stats:
    i = rec.interaction
    of, points = gap_points(rec)
    between = gaps(points)
    median = percentile(between, 50)
    counts: Counter[str] = Counter()
    lanes: Counter[Lane] = Counter()
    for event in rec.events:
        lane = lane_of(event)
        lanes[lane] += 1
        if lane is not Lane.COMMENT:
            counts[type_of(event)] += 1
    first = next((_ms(e.offset_ns) for e in rec.events if e.kind == "event"), None)
    return Stats(
        ttfb_ms=None if i.head_offset_ns is None else _ms(i.head_offset_ns),
        first_event_ms=first, duration_ms=duration_ms(rec), gaps_of=of,
        gaps_ms=tuple(between), gap_median_ms=median, gap_p95_ms=percentile(between, 95),
        gap_max_ms=max(between, default=None), long_gaps=tuple(long_gaps(points, median)),
        counts=dict(counts), heartbeats=lanes[Lane.HEARTBEAT], comments=lanes[Lane.COMMENT],
        body_size=sum(rec.chunk_sizes),
    )


def rates(rec: Recording, bins: int) -> list[Rate]:
    """Events and bytes per second over `bins` equal slices of the response (head to end)."""
    start = _ms(rec.interaction.head_offset_ns or 0)
    end = duration_ms(rec)
    if end <= start or bins < 1:
        return []
    width = (end - start) / bins
    events, sizes = [0] * bins, [0] * bins

    def slot(ms: float) -> int:
        return min(bins - 1, max(0, int((ms - start) / width)))

    for e in rec.events:
        if e.kind == "event":
            events[slot(_ms(e.offset_ns))] += 1
    for offset, size in zip(rec.chunk_offsets_ns, rec.chunk_sizes, strict=True):
        sizes[slot(_ms(offset))] += size
    per_s = 1000 / width
    return [Rate(start + n * width, start + (n + 1) * width, events[n] * per_s,
                 sizes[n] * per_s) for n in range(bins)]


def density(times_ms: Sequence[float], end_ms: float, columns: int) -> list[int]:
    """How many of `times_ms` fall in each of `columns` equal slices of 0..end_ms."""
    counts = [0] * columns
    if end_ms <= 0:
        if times_ms:
            counts[0] = len(times_ms)
        return counts
    for t in times_ms:
        counts[min(columns - 1, max(0, int(t / end_ms * columns)))] += 1
    return counts


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled to the largest; a blank for zero."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else SPARK[min(len(SPARK) - 1, int(v / top * len(SPARK)))]
                   for v in values)

"""When each recorded piece goes out on replay: pure arithmetic, no I/O.

Piece i is due at `start + offset_i / speed` on an absolute schedule, so timing errors never
accumulate. `max_gap` clamps each long pause (after the speed-up) and shifts everything
after it earlier by what was cut. `instant` makes everything due at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sse_recorder.errors import ConfigError
from sse_recorder.units import parse_duration


@dataclass(frozen=True)
class Timing:
    speed: float = 1.0
    instant: bool = False
    max_gap: float | None = None  # seconds

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ConfigError(f"speed must be positive, got {self.speed}")
        if self.max_gap is not None and not self.max_gap >= 0:  # NaN too
            raise ConfigError(f"max gap must be >= 0 seconds, got {self.max_gap}")

    @classmethod
    def parse(cls, speed: str, max_gap: float | str | None = None) -> Timing:
        """Timing from user text (CLI, ini, markers, addon options): one parser, one set of
        messages. `speed` is "instant" (any case) or a positive factor; `max_gap` is a duration
        (`250ms`, `2s`; a bare number is milliseconds, as everywhere: see `sse_recorder.units`).
        """
        gap = None if max_gap is None else parse_duration(max_gap, "max gap")
        text = str(speed).strip().lower()
        if text == "instant":
            return cls(instant=True, max_gap=gap)
        return cls(speed=_number(text, "speed", "a factor such as 1 or 10, or 'instant'"),
                   max_gap=gap)


def _number(value: float | str, what: str, hint: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad {what} {value!r}: use {hint}") from None


class Schedule:
    """Turns recorded offsets (ns, non-decreasing) into due times in seconds from start."""

    def __init__(self, timing: Timing, origin_ns: int = 0) -> None:
        self.timing = timing
        self._origin_ns = origin_ns
        self._previous: float | None = None  # unclamped due time of the previous piece
        self._cut = 0.0  # seconds removed by max_gap so far

    def due(self, offset_ns: int) -> float:
        if self.timing.instant:
            return 0.0
        unclamped = max(offset_ns - self._origin_ns, 0) / 1e9 / self.timing.speed
        max_gap = self.timing.max_gap
        if max_gap is not None:
            gap = unclamped - (self._previous if self._previous is not None else 0.0)
            if gap > max_gap:
                self._cut += gap - max_gap
        self._previous = unclamped
        return unclamped - self._cut

"""How the CLI writes durations, sizes and times: one way in every command's output."""

from __future__ import annotations

from datetime import datetime

_SIZES = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def seconds(value: float) -> str:
    """A duration a reader takes in at a glance: `850 us`, `12.3 ms`, `1.23 s`."""
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def size(count: int) -> str:
    """A byte count: `512 B`, `2.1 kB`, `3.4 MB` (decimal units)."""
    for factor, unit in _SIZES:
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} B"


def count(number: int, noun: str) -> str:
    """`1 chunk`, `3 chunks`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def local_time(epoch: float) -> str:
    """ISO 8601 with the local offset, to the millisecond: 2026-12-05T05:12:33.123+01:00."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")

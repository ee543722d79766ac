"""Durations and sizes as people write them, one rule for every option that takes one.

A duration carries a unit (`250ms`, `2s`, `1m`) or is a bare number of milliseconds, as in
Toxiproxy: nobody should wait 500 s for what they meant as a 500 ms latency. A size is bytes,
or `K`, `M`, `G` (powers of 1024). Both come back as plain numbers (seconds, bytes).
"""

from __future__ import annotations

import math
import re

from sse_recorder.errors import ConfigError

DURATION_RULE = "durations carry a unit (250ms, 2s, 1m) or are milliseconds (500 = 500ms)"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "": 0.001}  # unit -> seconds
_UNIT_SPELLINGS = {  # what else people write -> the unit they meant
    "msec": "ms", "msecs": "ms", "millis": "ms", "millisecond": "ms", "milliseconds": "ms",
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "m", "mins": "m", "minute": "m", "minutes": "m",
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?(?:/s)?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(text: str | float, name: str) -> float:
    """Seconds from `250ms`, `2s`, `1m`, or a bare number of milliseconds (`500`, or a
    TOML number): Toxiproxy's unit, so nobody waits 500 s for a 500 ms latency."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not math.isfinite(text) or text < 0:
            raise ConfigError(f"{name}: bad duration {text!r}: {DURATION_RULE}")
        return text / 1000
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _DURATION_UNITS:
        spelled = match.group(2).lower() if match else ""
        meant = _UNIT_SPELLINGS.get(spelled, spelled if spelled in _DURATION_UNITS else "")
        hint = f" (did you mean {match.group(1)}{meant}?)" if match and meant else ""
        raise ConfigError(f"{name}: bad duration {text!r}{hint}: {DURATION_RULE}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str | float, name: str) -> int:
    """Bytes from `512`, `10K`, `1M` (powers of 1024), or a TOML number of bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not math.isfinite(text) or text < 0:
            raise ConfigError(f"{name}: bad size {text!r} (use e.g. 512, 10K, 1M)")
        return int(text)
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(f"{name}: bad size {text!r} (use e.g. 512, 10K, 1M)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])

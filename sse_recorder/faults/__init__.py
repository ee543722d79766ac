"""Fault injection on replay: the spec language, the fault types and the pure stream stages.

spec.py reads `--fault` specs and TOML plans into typed faults (registry.py: one class per
type); run.py applies one connection's faults, through the stages of stages.py.
"""

from sse_recorder.demo.payloads import HTTP_BODIES, SHAPES
from sse_recorder.faults.run import (
    NO_FAULTS,
    Ending,
    FaultRun,
    HttpError,
    Piece,
    split_at_events,
    split_at_frames,
)
from sse_recorder.faults.spec import (
    Fault,
    FaultPlan,
    describe_types,
    parse_spec,
)
from sse_recorder.units import parse_duration, parse_size

__all__ = [
    "HTTP_BODIES", "NO_FAULTS", "SHAPES", "Ending", "Fault", "FaultPlan", "FaultRun",
    "HttpError", "Piece", "describe_types", "parse_duration", "parse_size", "parse_spec",
    "split_at_events", "split_at_frames",
]

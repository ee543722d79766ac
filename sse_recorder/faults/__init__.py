"""Fault injection on replay: the spec language, the fault types and the pure stream stages."""

from sse_recorder.faults.run import (
    SHAPES,
    Ending,
    Fault,
    FaultPlan,
    FaultRun,
    HttpError,
    Piece,
    describe_types,
    parse_duration,
    parse_size,
    parse_spec,
    split_at_events,
)

__all__ = [
    "SHAPES", "Ending", "Fault", "FaultPlan", "FaultRun", "HttpError", "Piece",
    "describe_types", "parse_duration", "parse_size", "parse_spec", "split_at_events",
]

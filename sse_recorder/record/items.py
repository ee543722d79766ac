"""What the proxy side (`record.session`) and the writer (`record.writer`) say to each other.

Kept apart from the writer so that the proxy's process imports none of the store: the
writer's module brings SQLAlchemy, Alembic and aiosqlite, which a proxy that only stamps and
queues has no use for (measured: importing the recording addon took 0.59 s and left the
process at 104 MB RSS with them, 0.25 s and 74 MB without).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sse_recorder.model import Outcome

# Item kinds. An item is a tuple whose first element is its kind:
# (BEGIN, token, started_at, RecordedRequest), (HEAD, token, offset_ns, ResponseHead, is_sse),
# (RUN, token, [offset_ns, ...], [bytes, ...]): consecutive chunks of one response, as two
# columns, so that a flood's thousands of chunks per frame cross the pipe and are measured,
# cut and packed by C loops (marshal, accumulate, join) instead of a Python step per chunk;
# (END, token, offset_ns, Outcome, error, check_truncation), (ACK, frame),
# (FLUSH, flush_token), (STOP,).
BEGIN, HEAD, RUN, END, ACK, FLUSH, STOP = range(7)
Item = tuple


@dataclass(frozen=True, slots=True)
class Recorded:
    """One interaction as committed to the cassette: what `sse-recorder record` prints a
    line for."""

    id: int
    method: str
    url: str  # as stored (redacted)
    status: int | None  # None: no response head
    events: int
    chunks: int
    body_size: int
    duration_ns: int | None  # end offset
    outcome: Outcome
    error: str | None  # e.g. mitmproxy's upstream error text (certificate, connection refused)


@dataclass(slots=True)
class Commit:
    """What one committed batch tells the proxy side."""

    acked: int | None  # the last ACK frame passed: everything queued before it is stored
    flushed: list[int] = field(default_factory=list)  # FLUSH tokens passed
    chunks: int = 0  # chunk rows written
    recorded: list[Recorded] = field(default_factory=list)  # interactions ended

"""One connection's faults: what the replay server asks before and during a response.

Rules:
- the server calls `refuse()`, `no_head()`, `http_error()` and `head_delay()` before the
  head, then `transform(pieces)` on the recorded body, cut at events first when
  `needs_events()` says so (`split_at_events`);
- `transform` is pure: it turns timed pieces into timed pieces and at most one `Ending`;
  pieces cut at events are joined back into their recorded chunk where no fault acted
  between them (`stages.rejoin`), so a fault changes no other write;
- `log` gets one entry per fault that fired, for `--fault-log`;
- `slow_close` acts last, on the close that ends the body: a fault's (drop, timeout), the
  recorded one (`ends`: a recorded FIN or RST, or a close-delimited body's close), or, for
  a body its framing ends, the close the server makes after it (`late_close`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sse_recorder.faults.registry import Http, Latency, NoHead, Params, Refuse, SlowClose, Stage
from sse_recorder.faults.stages import (
    FRAMED,
    PIPELINE,
    Ending,
    Log,
    Piece,
    close_late,
    fired,
    of,
    rejoin,
)
from sse_recorder.framing.registry import Dialect
from sse_recorder.model import Outcome
from sse_recorder.sse import Comment, Event, Item, SSEParser

if TYPE_CHECKING:  # spec.py builds FaultRun
    from sse_recorder.faults.spec import Fault

__all__ = ["NO_FAULTS", "Ending", "FaultRun", "HttpError", "Piece", "split_at_events",
           "split_at_frames"]


@dataclass(frozen=True, slots=True)
class HttpError:
    """An error response sent instead of the recorded one."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class FaultRun:
    """The faults chosen for one connection, applied to its stream; `log` says what fired."""

    chosen: list[tuple[Fault, random.Random]]
    # How the recorded body ends on this connection when a close ends it (CLOSED: a recorded
    # FIN or a close-delimited body; RESET: a recorded RST); None: its framing ends it.
    ends: Outcome | None = None
    # The framing of a stream that is not SSE (NDJSON, AWS event stream...): corrupt, inject
    # and rechunk:mode=adversarial then act on its frames; the body is cut by `split_at_frames`.
    dialect: Dialect | None = None
    log: Log = field(default_factory=list)

    # -- before any body -------------------------------------------------------------------

    def refuse(self) -> bool:
        """Reset the connection before any response."""
        return self._first(Refuse)

    def no_head(self) -> bool:
        """Accept the request and never answer."""
        return self._first(NoHead)

    def http_error(self) -> HttpError | None:
        """The first http fault's response, instead of the recorded one."""
        armed = of(self.chosen, Http)
        if not armed:
            return None
        fault, http, _ = armed[0]
        fired(self.log, fault, 0.0, status=http.status)
        return HttpError(http.status, http.reason, http.headers, http.body)

    def head_delay(self) -> float:
        """Seconds to hold the head back: the sum of every latency's head=."""
        delay = 0.0
        for fault, latency, _ in of(self.chosen, Latency):
            if latency.head:
                delay += latency.head
                fired(self.log, fault, 0.0, head_delay_ms=round(latency.head * 1000, 3))
        return delay

    def late_close(self) -> float | None:
        """Seconds to hold the connection after a response its framing ends, then close it
        (the sum of every slow_close's delay); None: no slow_close, the connection may
        persist. The server asks after the response ended complete."""
        armed = of(self.chosen, SlowClose)
        if not armed:
            return None
        delay = sum(params.delay for _, params, _ in armed)
        for fault, params, _ in armed:
            fired(self.log, fault, 0.0, delay_ms=round(params.delay * 1000, 3), close="framed")
        return delay

    def closes_late(self) -> bool:
        """Whether a slow_close is in play (the response then says Connection: close)."""
        return bool(of(self.chosen, SlowClose))

    def needs_events(self) -> bool:
        return any(fault.params.needs_events() for fault, _ in self.chosen)

    def _first(self, kind: type[Params]) -> bool:
        """Whether a fault of this type is in play; the first one fires."""
        armed = of(self.chosen, kind)
        if armed:
            fired(self.log, armed[0][0], 0.0)
        return bool(armed)

    def played_until(self, due: float) -> None:
        """The response was played up to `due` (its client left, or it ended): entries of
        faults planned later are dropped from the log (they never fired)."""
        last = round(due * 1000, 3)
        self.log[:] = [entry for entry in self.log if entry["at_ms"] <= last]

    # -- the body --------------------------------------------------------------------------

    def transform(self, pieces: Iterable[Piece]) -> Iterator[Piece | Ending]:
        """The body through every stage that has a fault, in `PIPELINE` order; the pieces of
        a recorded chunk that no fault parted are one write again (`rejoin`) before the
        throttle."""
        stream: Iterable[Piece | Ending] = pieces
        for stage, apply in PIPELINE:
            if stage is Stage.THROTTLE:  # the rate and the deadline see the writes as they go
                stream = rejoin(stream)
            faults = [(f, rng) for f, rng in self.chosen if f.params.acts_at() is stage]
            if faults:
                framed = FRAMED.get(stage) if self.dialect is not None else None
                stream = (framed(stream, faults, self.log, self.dialect) if framed is not None
                          else apply(stream, faults, self.log))
        slow = [(f, rng) for f, rng in self.chosen if f.params.acts_at() is Stage.CLOSE]
        if slow:
            stream = close_late(stream, slow, self.log, self.ends)
        yield from stream


# The run of a response no fault applies to, shared: with nothing chosen nothing fires, so
# its log stays empty and nothing else in it changes (the server skips drawing it).
NO_FAULTS = FaultRun([])


def split_at_frames(chunks: Iterable[tuple[float, bytes]], dialect: Dialect) -> Iterator[Piece]:
    """Cut timed chunks at every frame end of a stream that is not SSE; `events` then counts
    frames (error frames too), so at_event=K / after_event=K name frame K."""
    parser = dialect.parser()
    position = frames = 0
    for chunk, (due, data) in enumerate(chunks):
        start = position
        position += len(data)
        cursor = 0
        for frame in parser.feed(data):
            frames += 1
            cut = frame.end - start
            if cut > cursor:
                yield Piece(due, data[cursor:cut], frames, True, chunk)
                cursor = cut
        if cursor < len(data):
            yield Piece(due, data[cursor:], frames, parser.open_start >= position, chunk)


def split_at_events(chunks: Iterable[tuple[float, bytes]]) -> Iterator[Piece]:
    """Cut timed chunks at every event and comment boundary (a CRLF stays whole); each piece
    names the chunk it came from (`Piece.chunk`: its index)."""
    parser = SSEParser()
    position = 0
    events = 0
    for chunk, (due, data) in enumerate(chunks):
        start = position
        position += len(data)
        cursor = 0
        items = parser.feed(data)
        for index, item in enumerate(items):
            if isinstance(item, Comment) and _inside_block(item, items[index + 1 :], parser):
                continue  # a comment line inside an event: cutting there would split it
            cut = item.end - start
            if data[cut : cut + 1] == b"\n" and data[cut - 1 : cut] == b"\r":
                cut += 1  # the LF of the CRLF that ended the block
            if isinstance(item, Event):
                events += 1
            if cut > cursor:
                yield Piece(due, data[cursor:cut], events, True, chunk)
                cursor = cut
        if cursor < len(data):
            yield Piece(due, data[cursor:], events, parser.at_event_boundary, chunk)


def _inside_block(comment: Comment, later: Sequence[Item], parser: SSEParser) -> bool:
    """Whether a comment came between the field lines of an event (its block began before
    the comment): the next event says so, or, when none ended yet, the block still open."""
    following = next((item for item in later if isinstance(item, Event)), None)
    if following is not None:
        return following.start < comment.start
    return parser.earliest_open_position < comment.start

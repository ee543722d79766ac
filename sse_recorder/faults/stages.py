"""The pure body stages: each turns a stream of timed pieces into another.

Rules:
- `PIPELINE` runs in a fixed order: content (inject, corrupt, retry), cuts (drop, stall,
  timeout), timing (pause, latency, heartbeat), rechunk, throttle, and the `drop:after=`
  deadline, so a deadline counts the time the others add; `rejoin` runs before throttle
  (see `FaultRun.transform`); `close_late` (slow_close) comes after all of them, as it
  needs to know how the recorded body ends (`FaultRun.ends`);
- a stage gets only the faults of its `Stage`, reads their typed parameters and appends one
  log entry per firing; it performs no I/O;
- an `Ending` is the last thing a stage yields; per=event faults roll their own generator
  once per event, in stream order, so the same seed gives the same stream;
- a piece knows the recorded chunk it came from (`Piece.chunk`): a stage that passes a
  piece on, shifted or cut short, keeps it; what a fault makes or re-cuts (an injected
  event, a heartbeat, rechunk's and throttle's writes) has none. `rejoin` then sends the
  pieces of one chunk that are still back to back and due together as one write again, so
  cutting at events changes no write where no fault acted;
- `at=T` (pause, stall, timeout) acts at T, before the first piece due at T or later, as
  `drop:after=T` does: whatever is due from T on comes after the fault, or never.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sse_recorder.demo.payloads import SEED_EVENTS
from sse_recorder.faults.registry import (
    Corrupt,
    Drop,
    Heartbeat,
    Inject,
    Latency,
    Params,
    Pause,
    Rechunk,
    Retry,
    SlowClose,
    Stage,
    Stall,
    Throttle,
    Timeout,
)
from sse_recorder.framing.registry import Dialect
from sse_recorder.model import Outcome
from sse_recorder.sse import encode_event

if TYPE_CHECKING:  # spec.py builds FaultRun, which runs these stages
    from sse_recorder.faults.spec import Fault


@dataclass(slots=True)
class Piece:
    """A run of response bytes due at `due` seconds; `events` counts events completed by the
    end of this piece, `boundary` says whether it ends between events; `chunk` is the index
    of the recorded chunk it is (part of), None for a write of its own (see `rejoin`)."""

    due: float
    data: bytes
    events: int = 0
    boundary: bool = True
    chunk: int | None = None


@dataclass(frozen=True, slots=True)
class Ending:
    """Stop the body here instead of the recorded ending."""

    outcome: Outcome  # CLOSED (FIN), RESET (RST) or STALLED (held open, nothing more sent)
    due: float


Action = Piece | Ending
Chosen = tuple["Fault", random.Random]  # a fault in play on this connection, with its dice
Log = list[dict[str, Any]]
P = TypeVar("P", bound=Params)


def of(chosen: Iterable[Chosen], kind: type[P]) -> list[tuple[Fault, P, random.Random]]:
    """The chosen faults of one type, with their parameters typed."""
    return [(fault, fault.params, rng) for fault, rng in chosen
            if isinstance(fault.params, kind)]


def fired(log: Log, fault: Fault, due: float, **details: Any) -> None:
    """One log entry: which fault fired, when (ms into the body) and how."""
    log.append({"fault": fault.spec or fault.type, "type": fault.type,
                "at_ms": round(due * 1000, 3), **details})


def _roll(fault: Fault, rng: random.Random) -> bool:
    """A per=event fault's draw for one event."""
    return rng.random() < fault.probability


def _fires(fault: Fault, rng: random.Random, events: int, after_event: int | None) -> bool:
    """Whether a fault fires at the event boundary after `events` events: a draw per event
    (per=event), else after its event. A fault with at= fires before a piece (`_reached`)."""
    if fault.per_event:
        return _roll(fault, rng)
    return after_event is not None and events == after_event


# Times this close are the same time: recorded offsets are whole nanoseconds, and `700ms`
# reads as 0.7000000000000001 s, which a chunk recorded at 700 ms must not slip under.
SAME_TIME = 1e-9


def _reached(fault: Fault, at: float | None, due: float) -> bool:
    """Whether the time of an at= fault has come by a piece due at `due`: it then acts at
    `at`, before that piece (a piece due exactly at T included, as for drop:after=T)."""
    return at is not None and not fault.per_event and due >= at - SAME_TIME


# -- content: inject, corrupt, retry ---------------------------------------------------------


def content(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log,
            dialect: Dialect | None = None) -> Iterator[Action]:
    """`retry:` first, injected events after their event, corruption of whole events."""
    injects, corrupts = of(chosen, Inject), of(chosen, Corrupt)
    started = False
    held: list[Piece] = []  # the pieces of the block being received
    events_before = 0  # events completed before the held block
    for piece in stream:
        if isinstance(piece, Ending):
            yield from held
            yield piece
            return
        if not started:
            started = True
            for fault, retry, _ in of(chosen, Retry):
                fired(log, fault, piece.due, value=retry.value)
                yield Piece(piece.due, f"retry: {retry.value}\n\n".encode(), 0, True)
            yield from _inject(injects, log, piece.due, 0)
        held.append(piece)
        if not piece.boundary:
            continue
        block, held = held, []
        is_event = piece.events > events_before
        events_before = piece.events
        if is_event:
            yield from _corrupt(corrupts, log, block, piece.events, dialect)
            yield from _inject(injects, log, piece.due, piece.events)
        else:
            yield from block
    yield from held


def _inject(injects: list[tuple[Fault, Inject, random.Random]], log: Log, due: float,
            completed: int) -> Iterator[Piece]:
    """The events injected after `completed` events; after_event= fires once per connection."""
    for fault, inject, rng in injects:
        if fault.per_event:
            fire = _roll(fault, rng)
        else:
            fire = inject.after_event == completed and not any(
                entry["fault"] == fault.spec for entry in log)
        if fire:
            fired(log, fault, due, event=completed)
            yield Piece(due, inject.event, completed, True)


def _corrupt(corrupts: list[tuple[Fault, Corrupt, random.Random]], log: Log,
             pieces: list[Piece], completed: int, dialect: Dialect | None = None
             ) -> Iterator[Piece]:
    """The event in `pieces`, corrupted by the first fault that fires on it: one piece, due
    with its last one and part of that one's chunk (a duplicate is a write of its own)."""
    for fault, corrupt, rng in corrupts:
        if not (_roll(fault, rng) if fault.per_event else corrupt.at_event == completed):
            continue
        due, mode, chunk = pieces[-1].due, corrupt.mode, pieces[-1].chunk
        fired(log, fault, due, event=completed, mode=mode)
        data = b"".join(p.data for p in pieces)
        if mode == "omit":
            return
        if mode == "duplicate":
            yield from pieces
            yield Piece(due, data, completed, True)
            return
        if dialect is not None:  # a frame of another stream: its own corruptions
            changed = dialect.corrupt(data, mode)
            if changed is None:
                log[-1]["applied"] = False  # e.g. crc on a text frame
            yield Piece(due, data if changed is None else changed, completed, True, chunk)
            return
        marker = data.find(b"data:")
        if marker >= 0:
            if mode == "field":
                data = data[:marker] + b"data " + data[marker + 5:]
            elif mode == "utf8":
                data = data[: marker + 5] + b"\xff\xfe" + data[marker + 5:]
            else:  # json: a stray character before the value
                skip = 6 if data[marker + 5: marker + 6] == b" " else 5
                data = data[: marker + skip] + b"!" + data[marker + skip:]
        yield Piece(due, data, completed, True, chunk)
        return
    yield from pieces


# -- cuts: drop, stall -----------------------------------------------------------------------


def cuts(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log) -> Iterator[Action]:
    """End the body after N bytes, inside event N, after event N, or stall after event N or
    at a time (a timeout: and close `duration` later). A stall or timeout at T acts before
    the first piece due at T or later, even when the event it belongs to is half sent (a
    recorded chunk that ended inside an event), as `drop:after=T` does."""
    drops, stalls, timeouts = of(chosen, Drop), of(chosen, Stall), of(chosen, Timeout)
    timed: list[tuple[float, Fault, Stall | Timeout]] = sorted(
        [(stall.at, fault, stall) for fault, stall, _ in stalls if stall.at is not None]
        + [(timeout.at, fault, timeout) for fault, timeout, _ in timeouts
           if timeout.at is not None], key=lambda armed: armed[0])  # at=T, earliest first
    sent = 0
    completed = 0  # events sent so far
    started = False
    for piece in stream:
        if isinstance(piece, Ending):
            yield piece
            return
        if not started:
            started = True
            for fault, timeout, _ in timeouts:  # after_event=0: before the first byte
                if timeout.after_event == 0 and not fault.per_event:
                    yield _time_out(fault, timeout, log, piece.due, 0)
                    return
        if timed and _reached(timed[0][1], timed[0][0], piece.due):  # the earliest T
            at, fault, params = timed[0]
            if isinstance(params, Timeout):
                yield _time_out(fault, params, log, at, completed)
            else:
                fired(log, fault, at, event=completed)
                yield Ending(Outcome.STALLED, at)
            return
        for fault, drop, _ in drops:
            if drop.after_bytes is not None and sent + len(piece.data) >= drop.after_bytes:
                cut = piece.data[: drop.after_bytes - sent]
                if cut:
                    yield Piece(piece.due, cut, piece.events, False, piece.chunk)
                fired(log, fault, piece.due, bytes=drop.after_bytes, how=drop.how)
                yield Ending(drop.ending, piece.due)
                return
            if piece.boundary and drop.mid_event is not None and piece.events == drop.mid_event:
                half = piece.data[: len(piece.data) // 2]
                if half:
                    yield Piece(piece.due, half, piece.events - 1, False, piece.chunk)
                fired(log, fault, piece.due, event=piece.events, how=drop.how)
                yield Ending(drop.ending, piece.due)
                return
        yield piece
        sent += len(piece.data)
        completed = piece.events
        if not piece.boundary:
            continue
        for fault, drop, rng in drops:
            if _fires(fault, rng, piece.events, drop.after_event):
                fired(log, fault, piece.due, event=piece.events, how=drop.how)
                yield Ending(drop.ending, piece.due)
                return
        for fault, stall, rng in stalls:
            if _fires(fault, rng, piece.events, stall.after_event):
                fired(log, fault, piece.due, event=piece.events)
                yield Ending(Outcome.STALLED, piece.due)
                return
        for fault, timeout, rng in timeouts:
            if _fires(fault, rng, piece.events, timeout.after_event):
                yield _time_out(fault, timeout, log, piece.due, piece.events)
                return
    if not started:  # an empty body: the timeout still closes it
        for fault, timeout, _ in timeouts:
            if timeout.after_event == 0 and not fault.per_event:
                yield _time_out(fault, timeout, log, 0.0, 0)
                return


def _time_out(fault: Fault, timeout: Timeout, log: Log, due: float, events: int) -> Ending:
    """Nothing more after `due`, and the close `timeout.duration` later."""
    fired(log, fault, due, event=events, how=timeout.how,
          close_ms=round((due + timeout.duration) * 1000, 3))
    return Ending(timeout.ending, due + timeout.duration)


# -- timing: pause, latency, heartbeat -------------------------------------------------------


def timing(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log) -> Iterator[Action]:
    """Pauses shift everything after them; latency delays each recorded chunk (its pieces
    alike); heartbeats fill gaps between events. Order is kept: nothing is due before what
    came before it. A signalled pause sends `stream-pause` as it starts and `stream-resume`
    as it ends (heartbeats due during the pause come between them). A pause at T starts at
    T, before the first piece due at T or later; a signalled one whose T falls inside an
    event (a recorded chunk ended inside it) starts once that event is out, as its
    `stream-pause` event cannot go inside another."""
    pauses = of(chosen, Pause)
    latencies = [(fault, latency, rng) for fault, latency, rng in of(chosen, Latency)
                 if latency.chunk is not None]
    beats = of(chosen, Heartbeat)
    if not (pauses or latencies or beats):
        yield from stream
        return
    shift = 0.0
    last_due = 0.0
    sent = 0  # body bytes passed on: a signalled pause's position
    paused: set[int] = set()
    next_tick = [beat.every for _, beat, _ in beats]
    resumes: list[Piece] = []  # stream-resume events, due when their pause ends
    at_boundary = True
    completed = 0  # events passed on so far
    drawn: tuple[int | None, float] = (None, 0.0)  # a recorded chunk and its latency
    latency_logged = False
    timed = sorted(((index, armed) for index, armed in enumerate(pauses)
                    if armed[1].at is not None), key=lambda item: item[1][1].at or 0.0)

    def fillers(until: float, events: int) -> list[Piece]:
        """The heartbeats due before `until` and the pending resumes, in time order; one
        that came due while an event was half sent goes right after it, not before."""
        due: list[Piece] = []
        for index, (fault, beat, _) in enumerate(beats):
            while next_tick[index] < until:
                fired(log, fault, next_tick[index], style=beat.style)
                due.append(Piece(next_tick[index], beat.beat(next_tick[index]), events, True))
                next_tick[index] += beat.every
        due += resumes
        resumes.clear()
        return [Piece(max(filler.due, last_due), filler.data, filler.events, True)
                for filler in sorted(due, key=lambda filler: filler.due)]

    def begin(fault: Fault, pause: Pause, start: float, events: int) -> list[Piece]:
        """A pause from `start` on: later pieces shifted, its log entry, its signal."""
        nonlocal shift
        shift += pause.duration
        fired(log, fault, start, event=events, duration_ms=round(pause.duration * 1000, 3),
              **({"signal": True} if pause.signal else {}))
        if not pause.signal:
            return []
        resumes.append(Piece(start + pause.duration, _announce(
            "stream-resume", position=sent), events, True))
        return [Piece(start, _announce("stream-pause", reason=pause.reason, position=sent),
                      events, True)]

    for piece in stream:
        if isinstance(piece, Ending):
            yield from fillers(0.0, 0)  # the resumes still due
            yield Ending(piece.outcome, max(piece.due + shift, last_due))
            return
        if latencies and (piece.chunk is None or piece.chunk != drawn[0]):
            extra = 0.0
            for fault, latency, rng in latencies:
                delay = _draw(latency, rng)
                extra += delay
                if not latency_logged:  # the first chunk it delays: logged once, as throttle
                    fired(log, fault, piece.due + shift, first_delay_ms=round(delay * 1000, 3))
            drawn, latency_logged = (piece.chunk, extra), True
        due = max(piece.due + shift + drawn[1], last_due)
        for index, (fault, pause, _) in timed:  # at=T: before the first piece due from T
            if index in paused or not _reached(fault, pause.at, due):
                continue
            if pause.signal and not at_boundary:
                continue  # inside an event: once it is out
            paused.add(index)
            start = max(pause.at or 0.0, last_due)
            if pause.signal:
                for filler in fillers(start, completed):  # the heartbeats before it
                    yield filler
                    last_due = max(last_due, filler.due)
                start = max(start, last_due)
            yield from begin(fault, pause, start, completed)
            last_due = max(last_due, start)
            due += pause.duration
        if at_boundary:
            for filler in fillers(due, piece.events):
                yield filler
                last_due = max(last_due, filler.due)
            due = max(due, last_due)
        yield Piece(due, piece.data, piece.events, piece.boundary, piece.chunk)
        sent += len(piece.data)
        last_due = due
        at_boundary = piece.boundary
        completed = piece.events
        if not piece.boundary:
            continue
        for index, (fault, pause, rng) in enumerate(pauses):
            if index in paused and not fault.per_event:
                continue
            if _fires(fault, rng, piece.events, pause.after_event):
                paused.add(index)
                yield from begin(fault, pause, due, piece.events)
    yield from fillers(0.0, 0)


def _announce(name: str, **fields: Any) -> bytes:
    """The seed's `name` event, its sample data updated with `fields`."""
    return encode_event(json.dumps({**SEED_EVENTS[name], **fields}), event=name)


def _draw(latency: Latency, rng: random.Random) -> float:
    """One piece's delay: `chunk` seconds spread by `jitter` as `dist` says, never < 0."""
    mean, spread = latency.chunk or 0.0, latency.jitter
    if latency.dist == "uniform":
        value = rng.uniform(mean - spread, mean + spread)
    elif latency.dist == "normal":
        value = rng.gauss(mean, spread)
    elif latency.dist == "lognormal" and mean > 0:
        value = rng.lognormvariate(math.log(mean), spread / mean)
    else:
        value = mean
    return max(value, 0.0)


# -- rechunk, throttle, deadline -------------------------------------------------------------


def rechunk(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log,
            dialect: Dialect | None = None) -> Iterator[Action]:
    """Re-cut the bytes into other writes (the first rechunk fault only); events unchanged.
    With delay=, Toxiproxy's slicer: each write waits `delay` after the one before it (the
    wait follows every write, so it also holds back the next recorded chunk and the close),
    and a write is never due before its recorded time."""
    fault, params, rng = of(chosen, Rechunk)[0]
    fired(log, fault, 0.0, mode=params.mode,
          **({"delay_ms": round(params.delay * 1000, 3)} if params.delay else {}))
    writes = _recut(stream, params, rng, dialect)
    if not params.delay:
        yield from writes
        return
    ready = -math.inf  # when the next write may go
    for action in writes:
        due = max(action.due, ready)
        if isinstance(action, Ending):
            yield Ending(action.outcome, due)
            return
        yield Piece(due, action.data, action.events, action.boundary)
        ready = due + params.delay


def _recut(stream: Iterable[Action], params: Rechunk, rng: random.Random,
           dialect: Dialect | None) -> Iterator[Action]:
    held: list[Piece] = []
    for piece in stream:
        if isinstance(piece, Ending):
            if held:
                yield _merge(held)
            yield piece
            return
        if params.mode in ("event", "coalesce"):
            held.append(piece)
            if params.mode == "event" and piece.boundary:
                yield _merge(held)
                held = []
            continue
        adversarial = _adversarial_cuts if dialect is None else dialect.adversarial_cuts
        cut_at = (adversarial(piece.data) if params.mode == "adversarial"
                  else _size_cuts(len(piece.data), lambda: _piece_size(params, rng)))
        bounds = [0, *cut_at, len(piece.data)]
        for index, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            last = index == len(bounds) - 2
            yield Piece(piece.due, piece.data[a:b], piece.events,
                        piece.boundary if last else False)
    if held:
        yield _merge(held)


def _piece_size(params: Rechunk, rng: random.Random) -> int:
    if params.mode == "byte":
        return 1
    if params.mode == "bytes":
        return params.size
    return rng.randint(params.low, params.high)


def _size_cuts(length: int, next_size: Callable[[], int]) -> list[int]:
    points, total = [], next_size()
    while total < length:
        points.append(total)
        total += next_size()
    return points


def _merge(pieces: Sequence[Piece]) -> Piece:
    return Piece(pieces[-1].due, b"".join(p.data for p in pieces), pieces[-1].events,
                 pieces[-1].boundary)


def _adversarial_cuts(data: bytes) -> list[int]:
    """Cut points that break naive parsers: CR|LF, inside a UTF-8 character, inside a
    field name, and between an event and its blank line."""
    points: set[int] = set()
    line_start = 0
    for i, byte in enumerate(data):
        if byte == 0x0D and data[i + 1 : i + 2] == b"\n":
            points.add(i + 1)
        elif byte >= 0xC0:  # the lead byte of a multi-byte character
            points.add(i + 1)
        if i == line_start and byte not in (0x0A, 0x0D, 0x3A) and i + 2 < len(data):
            points.add(i + 1)  # inside the field name
        if byte in (0x0A, 0x0D):
            if data[i + 1 : i + 2] in (b"\n", b"\r") and not (
                byte == 0x0D and data[i + 1 : i + 2] == b"\n"
            ):
                points.add(i + 1)  # the event's last line | its blank line
            line_start = i + 1
    return sorted(c for c in points if 0 < c < len(data))


def rejoin(stream: Iterable[Action]) -> Iterator[Action]:
    """The pieces of one recorded chunk that are still back to back and due together, as
    one write again: the body was cut at events for the faults to find their places, and a
    chunk no fault acted inside goes out as recorded. A fault that acted inside one (an
    event injected, a pause begun, the body cut) leaves it split there."""
    held: list[Piece] = []
    for action in stream:
        if (held and isinstance(action, Piece) and action.chunk is not None
                and action.chunk == held[-1].chunk and action.due == held[-1].due):
            held.append(action)
            continue
        if held:
            yield _joined(held)
            held = []
        if isinstance(action, Piece):
            held.append(action)
        else:
            yield action
    if held:
        yield _joined(held)


def _joined(pieces: Sequence[Piece]) -> Piece:
    if len(pieces) == 1:
        return pieces[0]
    last = pieces[-1]
    return Piece(last.due, b"".join(p.data for p in pieces), last.events, last.boundary,
                 last.chunk)


def throttle(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log) -> Iterator[Action]:
    """At most `rate` bytes/s (the first throttle fault only), in writes of at most 20 ms
    worth; a recorded gap longer than the transfer time is kept."""
    fault, params, _ = of(chosen, Throttle)[0]
    rate = float(params.rate)
    burst = max(1, int(rate / 50))
    clock = 0.0
    fired(log, fault, 0.0, rate=rate, **({"signal": True} if params.signal else {}))
    for piece in _announced(stream, params):
        if isinstance(piece, Ending):
            yield Ending(piece.outcome, max(piece.due, clock))
            return
        clock = max(clock, piece.due)
        data = piece.data
        for start in range(0, len(data), burst):
            part = data[start : start + burst]
            last = start + burst >= len(data)
            yield Piece(clock, part, piece.events, piece.boundary if last else False)
            clock += len(part) / rate


def _announced(stream: Iterable[Action], params: Throttle) -> Iterator[Action]:
    """A signalled throttle's `stream-throttle` event (its rate in bytes per second) before
    the first piece, at the same rate as the rest."""
    announce = params.signal
    for action in stream:
        if announce and isinstance(action, Piece):
            announce = False
            yield Piece(action.due, _announce("stream-throttle", rate=params.rate,
                                              reason=params.reason), 0, True)
        yield action


def deadline(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log) -> Iterator[Action]:
    """`drop:after=T`: whatever is due at T or later is cut off (the earliest T wins)."""
    fault, drop, _ = min(of(chosen, Drop), key=lambda armed: armed[1].after or 0.0)
    limit = drop.after or 0.0
    for action in stream:
        if action.due >= limit - SAME_TIME:
            fired(log, fault, limit, how=drop.how)
            yield Ending(drop.ending, limit)
            return
        yield action


StageFn = Callable[[Iterable[Action], Sequence[Chosen], Log], Iterator[Action]]
PIPELINE: tuple[tuple[Stage, StageFn], ...] = (
    (Stage.CONTENT, content),
    (Stage.CUTS, cuts),
    (Stage.TIMING, timing),
    (Stage.RECHUNK, rechunk),
    (Stage.THROTTLE, throttle),
    (Stage.DEADLINE, deadline),
)
# The stages whose work depends on the stream's framing when it is not SSE (`FaultRun.dialect`).
FramedFn = Callable[[Iterable[Action], Sequence[Chosen], Log, Dialect | None], Iterator[Action]]
FRAMED: dict[Stage, FramedFn] = {Stage.CONTENT: content, Stage.RECHUNK: rechunk}


def close_late(stream: Iterable[Action], chosen: Sequence[Chosen], log: Log,
               ends: Outcome | None) -> Iterator[Action]:
    """slow_close, after every other stage: the close that ends the body comes the sum of
    the delays late. That is a fault's ending (drop, timeout, a deadline) or, when the body
    ends complete, the recorded close `ends` (a FIN, an RST, a close-delimited body's end),
    counted from the last byte. A stall never closes; a body its framing ends is closed
    by the server (`FaultRun.late_close`)."""
    armed = of(chosen, SlowClose)
    delay = sum(params.delay for _, params, _ in armed)
    last = 0.0
    for action in stream:
        if isinstance(action, Ending):
            if action.outcome is Outcome.STALLED:
                yield action
                return
            yield _closed_late(armed, log, action.outcome, max(action.due, last), delay)
            return
        last = action.due
        yield action
    if ends is not None:
        yield _closed_late(armed, log, ends, last, delay)


def _closed_late(armed: list[tuple[Fault, SlowClose, random.Random]], log: Log,
                 outcome: Outcome, due: float, delay: float) -> Ending:
    for fault, params, _ in armed:
        fired(log, fault, due, delay_ms=round(params.delay * 1000, 3), close=outcome.value)
    return Ending(outcome, due + delay)

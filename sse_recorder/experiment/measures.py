"""What a run shows about the client, and the verdict: pure functions over plain values.

Inputs are what the tap saw (`Exchange`: times, Last-Event-ID, events delivered), what the
replay server recorded (`Served`: matched interaction, faults fired) and the recorded events
of each interaction. Rules:
- a request after the first is a reconnection; its delay counts from the end of the
  previous exchange (its last byte, the reset, or the client leaving it);
- the wait it owes is the previous response's `Retry-After`, else, after an event stream,
  the last `retry:` the client was sent (what EventSource waits);
- a reconnection owes the last id it was sent as `Last-Event-ID`; without one it restarts.
  The server cannot see what the client read: a resume from any id the previous response
  delivered is correct (an `error` event read before the rest, bytes lost to a reset), and
  what came after that id is counted as in flight (unread), not as served twice;
- events are accounted per interaction by position: a response resumed after id X covers the
  recorded events after X; delivered events are matched to them in order (an event whose id
  matches but whose data was corrupted still counts), injected events are extras;
- a disrupted exchange (not ended complete, or not 2xx) starts a recovery that ends with the
  next event delivered on a later exchange (or that exchange's clean end).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sse_recorder.experiment.observe import Exchange
from sse_recorder.experiment.plan import Hypothesis
from sse_recorder.replay.records import Served
from sse_recorder.sse import Event

LOOKAHEAD = 3  # how far ahead a delivered event may land (an omitted event is skipped)


@dataclass(frozen=True)
class ClientResult:
    exit_status: int | None  # None: killed at the timeout
    duration: float
    output: str  # its tail
    timed_out: bool = False


@dataclass
class Step:
    """One request of a run, joined with its served record."""

    started: float
    ended: float | None
    ending: str
    method: str
    target: str
    status: int
    interaction: int | None
    faults: list[str]
    last_event_id: str | None
    events: int  # events delivered in this response
    first_event: int | None  # recorded index of the first event it delivered
    delay: float | None = None  # since the previous step ended (reconnections)
    owed_wait: float | None = None  # Retry-After or retry: the client was told
    owed_because: str = ""
    owed_id: str | None = None  # the Last-Event-ID it should have sent

    @property
    def disrupted(self) -> bool:
        return self.ending != "complete" or not 200 <= self.status < 300


@dataclass
class Measures:
    requests: int = 0
    reconnections: int = 0
    delays: list[float] = field(default_factory=list)
    resumed_with_id: int = 0  # reconnections that sent the right Last-Event-ID
    restarted: int = 0  # reconnections that owed an id and sent none
    wrong_id: int = 0
    retry_after_owed: int = 0
    retry_owed: int = 0
    recorded_events: int = 0
    missed: list[str] = field(default_factory=list)  # ids (or #positions) never served
    duplicated: int = 0
    extra_events: int = 0  # delivered but not recorded (injected, corrupted beyond matching)
    in_flight: int = 0  # sent as the client left, after the id it resumed from: unread
    recoveries: list[float] = field(default_factory=list)
    unrecovered: int = 0
    faults_fired: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def join(exchanges: Sequence[Exchange], served: Sequence[Served]) -> list[tuple[Exchange,
                                                                                  Served | None]]:
    """Each exchange with its served record: in order, the first unused one for the same
    request (a request the server never answered has none)."""
    pending = sorted(served, key=lambda record: record.number)
    used: set[int] = set()
    pairs: list[tuple[Exchange, Served | None]] = []
    for exchange in sorted(exchanges, key=lambda each: each.started):
        match = next((index for index, record in enumerate(pending) if index not in used
                      and record.method == exchange.method
                      and record.target == exchange.target), None)
        if match is not None:
            used.add(match)
        pairs.append((exchange, pending[match] if match is not None else None))
    return pairs


def _key(event: Event) -> tuple[str, str, str | None]:
    return event.type, event.data, event.id


def _start_index(recorded: Sequence[Event], last_id: str | None) -> int:
    """Where a response resumed after `last_id` starts (0: from the beginning)."""
    if last_id is None:
        return 0
    for index, event in enumerate(recorded):
        if event.id == last_id:
            return index + 1
    return 0


def _account(delivered: Sequence[Event], recorded: Sequence[Event], start: int
             ) -> tuple[list[int], int]:
    """The recorded positions one response delivered, in order, and how many extras."""
    position, found_at, extras = start, [], 0
    for event in delivered:
        found = next((index for index in range(position, min(position + LOOKAHEAD,
                                                               len(recorded)))
                      if _key(recorded[index]) == _key(event)), None)
        if found is None and position < len(recorded) and event.id is not None \
                and recorded[position].id == event.id:
            found = position  # the recorded event, corrupted on the way
        if found is None:
            extras += 1
            continue
        found_at.append(found)
        position = found + 1
    return found_at, extras


def measure(exchanges: Sequence[Exchange], served: Sequence[Served],
            recorded: dict[int, list[Event]]) -> Measures:
    """The run's measures from what the tap and the server saw."""
    out = Measures()
    counts = {interaction: [0] * len(events) for interaction, events in recorded.items()}
    last_ids: dict[str, str] = {}  # target -> the last id the client was sent
    retry_ms: int | None = None
    previous: Step | None = None
    previous_exchange: Exchange | None = None
    pending_recovery: float | None = None
    left_itself = False
    previous_positions: list[int] = []
    for exchange, record in join(exchanges, served):
        interaction = record.interaction_id if record is not None else None
        events = recorded.get(interaction, []) if interaction is not None else []
        positions: list[int] = []
        extras = len(exchange.events)
        if interaction in counts and exchange.events:
            start = _start_index(events, exchange.last_event_id)
            positions, extras = _account(exchange.events, events, start)
            if _resumed_from_previous(exchange, events, previous_positions):
                # Sent after the point the client resumed from: unread (still in flight,
                # or left behind when it gave up on the response), so not served twice.
                unread = [p for p in previous_positions if p >= start]
                for position in unread:
                    counts[interaction][position] -= 1
                out.in_flight += len(unread)
            for position in positions:
                counts[interaction][position] += 1
        first = positions[0] if positions else None
        out.extra_events += extras
        fired = [entry.get("type", "?") for entry in record.faults] if record else []
        out.faults_fired += fired
        step = Step(exchange.started, exchange.ended, exchange.ending, exchange.method,
                    exchange.target, exchange.status, interaction, fired,
                    exchange.last_event_id, len(exchange.events), first)
        if previous is not None and previous_exchange is not None:
            _reconnection(step, previous, previous_exchange, retry_ms,
                          last_ids.get(exchange.target), out)
        if pending_recovery is not None and (exchange.event_times or not step.disrupted):
            done = exchange.event_times[0] if exchange.event_times else exchange.ended
            if done is not None:
                out.recoveries.append(max(0.0, done - pending_recovery))
                pending_recovery = None
        if step.disrupted and exchange.ended is not None and pending_recovery is None:
            pending_recovery = exchange.ended
            left_itself = step.ending == "client-left" and 200 <= step.status < 300
        ids = [event.id for event in exchange.events if event.id is not None]
        if ids:
            last_ids[exchange.target] = ids[-1]
        if exchange.sse and exchange.retry_ms is not None:
            retry_ms = exchange.retry_ms
        out.steps.append(step)
        previous, previous_exchange, previous_positions = step, exchange, positions
    # A client that left a response and never came back chose to: not a failed recovery.
    out.unrecovered = int(pending_recovery is not None and not left_itself)
    out.requests = len(out.steps)
    out.reconnections = max(0, out.requests - 1)
    out.recorded_events = sum(len(events) for events in recorded.values())
    for interaction, per_event in counts.items():
        for index, count in enumerate(per_event):
            if count == 0:
                event_id = recorded[interaction][index].id
                out.missed.append(event_id if event_id is not None else f"#{index + 1}")
            out.duplicated += max(0, count - 1)
    return out


def _resumed_from_previous(exchange: Exchange, events: Sequence[Event],
                           previous_positions: Sequence[int]) -> bool:
    """Whether the request resumes from an event the previous response delivered: a
    correct resume, whatever came after that id the client had not read (in flight)."""
    if exchange.last_event_id is None:
        return False
    return exchange.last_event_id in {events[p].id for p in previous_positions}


def _reconnection(step: Step, previous: Step, before: Exchange, retry_ms: int | None,
                  owed_id: str | None, out: Measures) -> None:
    """Delay, owed wait and Last-Event-ID of a request that follows another."""
    if previous.ended is not None:
        step.delay = max(0.0, step.started - previous.ended)
        out.delays.append(step.delay)
    if before.retry_after is not None:
        step.owed_wait, step.owed_because = before.retry_after, (
            f"a {before.status} with Retry-After: {before.retry_after:g}")
        out.retry_after_owed += 1
    elif before.sse and retry_ms is not None:
        step.owed_wait, step.owed_because = retry_ms / 1000, f"retry: {retry_ms}"
        out.retry_owed += 1
    resumed = step.last_event_id in {event.id for event in before.events}
    step.owed_id = step.last_event_id if resumed else owed_id
    if owed_id is not None:
        if step.last_event_id == step.owed_id:
            out.resumed_with_id += 1
        elif step.last_event_id is None:
            out.restarted += 1
        else:
            out.wrong_id += 1


def _listed(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def judge(measures: Measures, client: ClientResult, hypothesis: Hypothesis) -> list[str]:
    """The ways the run deviated from the hypothesis, in words (none: it held)."""
    reasons: list[str] = []
    h = hypothesis
    if client.timed_out:
        reasons.append(f"hung: killed at the timeout after {client.duration:.1f}s")
    elif h.exit_status is not None and client.exit_status != h.exit_status:
        reasons.append(f"exited {client.exit_status} (expected {h.exit_status})")
    reasons += [f"output lacks {text!r}" for text in h.output_contains
                if text not in client.output]
    reasons += [f"output does not match /{pattern}/" for pattern in h.output_matches
                if not re.search(pattern, client.output)]
    if h.within is not None and not client.timed_out and client.duration > h.within:
        reasons.append(f"took {client.duration:.2f}s (limit {h.within:g}s)")
    if h.all_events and measures.missed:
        reasons.append(f"{len(measures.missed)} of {measures.recorded_events} recorded events "
                       f"never served (ids {_listed(measures.missed)})")
    if h.no_duplicates and measures.duplicated:
        reasons.append(f"{measures.duplicated} events served twice")
    for number, step in enumerate(measures.steps[1:], 1):
        reasons += _step_reasons(number, step, h)
    if measures.unrecovered:
        reasons.append("never recovered from the last disruption")
    return reasons


def _step_reasons(number: int, step: Step, h: Hypothesis) -> list[str]:
    out = []
    what = f"reconnection {number}"
    if h.last_event_id and step.owed_id is not None and step.last_event_id != step.owed_id:
        if step.last_event_id is None:
            out.append(f"{what} sent no Last-Event-ID (owed {step.owed_id}): restarted "
                       "from the beginning")
        else:
            out.append(f"{what} sent Last-Event-ID {step.last_event_id} (owed "
                       f"{step.owed_id})")
    if step.delay is None:
        return out
    if step.owed_wait is not None and step.delay + h.tolerance < step.owed_wait:
        honoured = h.retry_after if step.owed_because.startswith("a ") else h.retry_field
        if honoured:
            out.append(f"{what} came {step.delay * 1000:.0f} ms after {step.owed_because}")
    if h.reconnect_min is not None and step.delay + h.tolerance < h.reconnect_min:
        out.append(f"{what} came after {step.delay * 1000:.0f} ms (min "
                   f"{h.reconnect_min * 1000:g} ms)")
    if h.reconnect_max is not None and step.delay - h.tolerance > h.reconnect_max:
        out.append(f"{what} came after {step.delay * 1000:.0f} ms (max "
                   f"{h.reconnect_max * 1000:g} ms)")
    return out

"""The server-side measures and the verdict, on exchanges built by hand.

The property puts the cut on both sides of every event boundary (k = 0 .. n events before
the reset) and the reconnection on both sides of each owed wait."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.experiment.measures import ClientResult, judge, measure
from sse_recorder.experiment.observe import Exchange
from sse_recorder.experiment.plan import Hypothesis
from sse_recorder.model import Outcome
from sse_recorder.replay.records import Served
from sse_recorder.sse import Event

OK = ClientResult(0, 1.0, "done")


def recorded(n: int) -> list[Event]:
    return [Event("tick", f"{i}", str(i)) for i in range(1, n + 1)]


def exchange(number: int, started: float, events: list[Event], *, last_id: str | None = None,
             ended: float | None = None, ending: str = "complete", status: int = 200,
             retry_after: float | None = None) -> Exchange:
    return Exchange(number, started, "GET", "/s", last_id, status, retry_after, True,
                    list(events), [started + 0.001 * i for i in range(len(events))], None,
                    ended if ended is not None else started + 0.1, ending)


def served(number: int, faults: tuple[dict[str, object], ...] = ()) -> Served:
    return Served("GET", "/s", 1, 200, Outcome.CLEAN, number=number, faults=faults)


@given(n=st.integers(1, 12), data=st.data(), resume=st.booleans(),
       delay=st.floats(0.0, 2.0))
def test_a_reset_then_a_reconnection(n: int, data: st.DataObject, resume: bool,
                                     delay: float) -> None:
    k = data.draw(st.integers(0, n))  # events delivered before the reset
    events = recorded(n)
    owed = str(k) if k else None
    sent_id = owed if resume else None
    start = k if sent_id else 0
    first = exchange(1, 0.0, events[:k], ended=0.5, ending="reset")
    second = exchange(2, 0.5 + delay, events[start:], last_id=sent_id)
    m = measure([first, second], [served(0, ({"type": "drop"},)), served(1)], {1: events})
    assert m.requests == 2 and m.reconnections == 1
    assert m.delays == [0.5 + delay - 0.5]
    assert m.missed == []
    restarted = owed is not None and not resume
    assert m.duplicated == (k if restarted else 0)
    assert m.restarted == int(restarted) and m.resumed_with_id == int(owed is not None
                                                                      and resume)
    reasons = judge(m, OK, Hypothesis(reconnect_max=1.0, tolerance=0.05))
    assert any("restarted" in r for r in reasons) == restarted
    assert any("max 1000 ms" in r for r in reasons) == (delay > 1.05)
    # recovered at the first event served again, or (nothing left) the clean end
    expected = delay if events[start:] else delay + 0.1
    assert len(m.recoveries) == 1 and abs(m.recoveries[0] - expected) < 1e-9


@given(wait=st.floats(0.0, 3.0))
def test_retry_after_is_owed_and_judged_with_the_tolerance(wait: float) -> None:
    first = exchange(1, 0.0, [], status=429, retry_after=2.0, ended=0.01)
    second = exchange(2, 0.01 + wait, recorded(3))
    m = measure([first, second], [served(0), served(1)], {1: recorded(3)})
    assert m.retry_after_owed == 1
    flagged = any("Retry-After: 2" in r for r in judge(m, OK, Hypothesis(tolerance=0.05)))
    assert flagged == (wait + 0.05 < 2.0)


def test_events_unread_as_the_client_left_are_not_duplicates() -> None:
    events = recorded(6)
    first = exchange(1, 0.0, events[:5], ended=0.2, ending="client-left")  # read 3, left
    second = exchange(2, 0.5, events[3:], last_id="3")
    m = measure([first, second], [served(0), served(1)], {1: events})
    assert m.duplicated == 0 and m.in_flight == 2 and m.resumed_with_id == 1
    assert judge(m, OK, Hypothesis()) == []


def test_a_missing_event_and_a_bad_exit_are_reasons() -> None:
    events = recorded(4)
    only = exchange(1, 0.0, [events[0], events[1], events[3]])  # event 3 omitted
    m = measure([only], [served(0)], {1: events})
    assert m.missed == ["3"]
    reasons = judge(m, ClientResult(1, 3.0, "boom"), Hypothesis(within=2.0,
                                                                output_contains=("done",)))
    assert reasons == ["exited 1 (expected 0)", "output lacks 'done'",
                       "took 3.00s (limit 2s)", "1 of 4 recorded events never served (ids 3)"]


def test_injected_events_are_extras() -> None:
    events = recorded(3)
    injected = Event("error", '{"code": "x"}')
    only = exchange(1, 0.0, [events[0], injected, events[1], events[2]])
    m = measure([only], [served(0)], {1: events})
    assert m.extra_events == 1 and m.missed == [] and m.duplicated == 0

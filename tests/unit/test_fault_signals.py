"""Unit tests for the Toxiproxy-style fault types (timeout, slow_close, the slicer's delay),
the signalled faults (pause and throttle announcing themselves, the seed's heartbeat shapes,
inject shapes for every seed event family) and the fault plan's ids.

Why: the stages read these parameters as typed values, the spec language must refuse what
would be ignored in one line, and each new behaviour is a pure transform of timed pieces
whose bytes and times are known exactly here; the slicer's delay is checked by property
across chunk boundaries (the interesting place: a slice's wait can push the next recorded
chunk back, or not).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.demo.payloads import SEED_EVENTS, SHAPES
from sse_recorder.demo.upstream import deploy_writes, heartbeat_writes, patterns_writes
from sse_recorder.errors import ConfigError
from sse_recorder.faults import Ending, FaultPlan, FaultRun, Piece, parse_spec, split_at_events
from sse_recorder.faults.registry import (
    HEARTBEATS,
    REGISTRY,
    Heartbeat,
    Kind,
    Pause,
    Rechunk,
    SlowClose,
    Stage,
    Throttle,
    Timeout,
)
from sse_recorder.faults.spec import parse_table
from sse_recorder.model import Outcome
from sse_recorder.sse import Event, encode_event, parse

HYPOTHESIS = settings(max_examples=300, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow])
Action = Piece | Ending


def tick(i: int) -> bytes:
    return encode_event(json.dumps({"i": i}), id=str(i))


def ticks(n: int = 5, gap: float = 0.1) -> list[tuple[float, bytes]]:
    return [(round(i * gap, 6), tick(i)) for i in range(n)]


def run_of(*specs: str, ends: Outcome | None = None) -> FaultRun:
    return FaultPlan.load(specs).for_connection(0, "GET", "example.com", "/s", False, ends)


def apply(run: FaultRun, chunks: Iterable[tuple[float, bytes]]) -> list[Action]:
    chunks = list(chunks)
    pieces: Iterable[Piece] = (
        split_at_events(chunks) if run.needs_events() else (Piece(d, b) for d, b in chunks))
    return list(run.transform(pieces))


def transformed(*specs: str, chunks: Iterable[tuple[float, bytes]] | None = None,
                ends: Outcome | None = None) -> tuple[list[Action], FaultRun]:
    run = run_of(*specs, ends=ends)
    return apply(run, ticks() if chunks is None else chunks), run


def pieces(actions: Sequence[Action]) -> list[Piece]:
    return [a for a in actions if isinstance(a, Piece)]


def body(actions: Sequence[Action]) -> bytes:
    return b"".join(p.data for p in pieces(actions))


def ending(actions: Sequence[Action]) -> Ending | None:
    endings = [a for a in actions if isinstance(a, Ending)]
    assert len(endings) <= 1 and (not endings or actions[-1] is endings[0])
    return endings[0] if endings else None


def named(data: bytes) -> list[tuple[str, object]]:
    """(event type, data as JSON) of every event."""
    return [(item.type, json.loads(item.data)) for item in parse(data)
            if isinstance(item, Event)]


STREAM = b"".join(data for _, data in ticks())


# -- the registry: typed parameters, one-line refusals ---------------------------------------


def test_new_types_are_registered_with_their_stage_and_typed_params() -> None:
    assert REGISTRY["timeout"] is Timeout and REGISTRY["slow_close"] is SlowClose
    timeout = parse_spec("timeout:after_event=3,duration=2s").params
    assert timeout == Timeout(2.0, 3, None, "fin") and timeout.ending is Outcome.CLOSED
    assert parse_spec("timeout:duration=500").params == Timeout(0.5, 0)  # bare: ms, from 0
    assert parse_spec("timeout:at=1s,duration=1s,how=rst").params == Timeout(1.0, None, 1.0,
                                                                              "rst")
    assert parse_spec("timeout:per=event,p=0.5,duration=1s").params == Timeout(1.0, None)
    assert parse_spec("slow_close:delay=250ms").params == SlowClose(0.25)
    assert parse_spec("rechunk:mode=byte,delay=5ms").params == Rechunk("byte", 1, 1, 64, 0.005)
    assert parse_spec("rechunk:size=4,delay=0.5ms").params.delay == pytest.approx(0.0005)
    assert parse_spec("pause:after_event=1,duration=1s,signal=true").params == Pause(
        1.0, 1, None, True, "buffer_full")
    assert parse_spec("pause:after_event=1,duration=1s,signal=yes,reason=buffering").params \
        == Pause(1.0, 1, None, True, "buffering")
    assert parse_spec("throttle:rate=2K,signal=on").params == Throttle(2048, True,
                                                                      "network_congestion")
    assert parse_spec("throttle:rate=2K,signal=0").params == Throttle(2048)
    for style in ("heartbeat", "keep-alive", "connection-status"):
        assert parse_spec(f"heartbeat:every=1s,style={style}").params == Heartbeat(1.0, style)
    stages = {name: REGISTRY[name].stage for name in ("timeout", "slow_close")}
    assert stages == {"timeout": Stage.CUTS, "slow_close": Stage.CLOSE}
    assert parse_spec("timeout:duration=1s").params.needs_events()
    assert not parse_spec("slow_close:delay=1s").params.needs_events()
    assert Pause.keys["signal"] is Kind.FLAG


@pytest.mark.parametrize(("spec", "message"), [
    ("timeout:after_event=1", "timeout needs duration= > 0"),
    ("timeout:duration=0", "timeout needs duration= > 0"),
    ("timeout:duration=1s,after_event=1,at=1s", "timeout takes after_event= or at=, not both"),
    ("timeout:duration=1s,how=close", "how must be fin or rst, not 'close'"),
    ("timeout:duration=1s,per=event,after_event=1", "would ignore after_event="),
    ("slow_close", "slow_close needs delay= > 0"),
    ("slow_close:delay=0", "slow_close needs delay= > 0"),
    ("slow_close:delay=fast", "slow_close.delay: bad duration 'fast'"),
    ("slow_close:delay=1s,per=event", "slow_close has no per=event form"),
    ("rechunk:mode=coalesce,delay=1ms", "rechunk mode=coalesce makes one write"),
    ("rechunk:mode=byte,delay=1x", "rechunk.delay: bad duration '1x'"),
    ("pause:after_event=1,duration=1s,signal=maybe", "signal must be true or false, not 'maybe'"),
    ("pause:after_event=1,duration=1s,reason=x", "reason= is the stream-pause event's: give "
                                                 "signal=true too"),
    ("throttle:rate=1K,reason=x", "reason= is the stream-throttle event's"),
    ("heartbeat:every=1s,style=keepalive", "(did you mean keep-alive?)"),
    ("inject:shape=token_refresh", "(did you mean token-refresh?)"),
])
def test_bad_params_are_one_line_naming_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    text = str(info.value)
    assert text.startswith(spec + ": ") and message in text and "\n" not in text


def test_a_fault_table_is_the_same_fault_as_its_spec() -> None:
    table = parse_table({"type": "pause", "after_event": 2, "duration": 300, "signal": True})
    spec = parse_spec("pause:after_event=2,duration=300,signal=true")
    assert table == spec and table.spec == "pause:after_event=2,duration=300,signal=true"
    with pytest.raises(ConfigError, match="needs a type"):
        parse_table({"after_event": 2})
    with pytest.raises(ConfigError, match=r"^pause:after_event=x: after_event must be a whole"):
        parse_table({"type": "pause", "after_event": "x"})


# -- inject shapes and heartbeat shapes: the seed's families ---------------------------------


SEED_FAMILIES = ("stream-start", "stream-end", "status", "state-change", "progress",
                 "step-progress", "system-info", "performance-metrics", "debug",
                 "token-refresh")


def _keys(value: object) -> object:
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    return type(value).__name__


def test_every_seed_family_is_an_inject_shape_shaped_like_the_demo_upstream() -> None:
    upstream = {}
    for writes in (patterns_writes(), deploy_writes(), heartbeat_writes()):
        for event in (i for i in parse(b"".join(writes)) if isinstance(i, Event)):
            upstream.setdefault(event.type, json.loads(event.data))
    for family in SEED_FAMILIES:
        name, data = SHAPES[family]
        assert name == family and data is SEED_EVENTS[family]
        fault = parse_spec(f"inject:after_event=1,shape={family}")
        assert named(fault.params.event) == [(family, data)]  # type: ignore[attr-defined]
    # Where the demo upstream plays the same family, the keys agree (values may differ).
    for family in ("stream-start", "stream-end", "state-change", "progress", "step-progress",
                   "status", "keep-alive", "connection-status", "stream-pause",
                   "stream-resume", "stream-throttle", "token-refresh"):
        assert set(SEED_EVENTS[family]) == set(upstream[family]), family
    assert _keys(SEED_EVENTS["stream-start"]) == _keys(upstream["stream-start"])


def test_heartbeat_styles_in_the_seed_shapes() -> None:
    actions, run = transformed("heartbeat:every=40ms,style=keep-alive")
    beats = [p for p in pieces(actions) if b"keep-alive" in p.data]
    assert [round(p.due, 3) for p in beats][:9] == [0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28,
                                                    0.32, 0.36]
    assert all(p.due < 0.4 for p in beats)  # only in the gaps before the last event
    first = named(beats[0].data)[0]
    assert first == ("keep-alive", {"connectionId": "abc123", "duration": 0.04,
                                    "nextPing": 0.04})
    whole = named(HEARTBEATS["keep-alive"](60.0, 30.0))[0]
    assert whole == ("keep-alive", {"connectionId": "abc123", "duration": 60, "nextPing": 30})
    status = named(HEARTBEATS["connection-status"](1.0, 1.0))
    assert status == [("connection-status", SEED_EVENTS["connection-status"])]
    assert named(HEARTBEATS["heartbeat"](1.0, 1.0)) == [("heartbeat", SEED_EVENTS["heartbeat"])]
    assert [e for e in named(body(actions)) if e[0] != "keep-alive"] == [
        ("message", {"i": i}) for i in range(5)]
    assert {entry["style"] for entry in run.log if entry["type"] == "heartbeat"} == {
        "keep-alive"}


# -- signalled pause and throttle ------------------------------------------------------------


def test_a_signalled_pause_announces_itself_around_the_silence() -> None:
    actions, run = transformed("pause:after_event=2,duration=1s,signal=true")
    got = [(round(p.due, 6), named(p.data)) for p in pieces(actions)]
    position = len(tick(0) + tick(1))
    assert got == [
        (0.0, [("message", {"i": 0})]), (0.1, [("message", {"i": 1})]),
        (0.1, [("stream-pause", {"reason": "buffer_full", "position": position})]),
        (1.1, [("stream-resume", {"position": position, "buffered": True})]),
        (1.2, [("message", {"i": 2})]), (1.3, [("message", {"i": 3})]),
        (1.4, [("message", {"i": 4})]),
    ]
    assert run.log[0]["signal"] is True and run.log[0]["duration_ms"] == 1000


def test_heartbeats_during_a_signalled_pause_come_between_pause_and_resume() -> None:
    actions, _ = transformed("pause:after_event=1,duration=250ms,signal=true,reason=quota",
                             "heartbeat:every=100ms", chunks=ticks(2, 0.05))
    kinds = []
    for piece in pieces(actions):
        items = parse(piece.data)
        kinds.append((round(piece.due, 6), items[0].type if isinstance(items[0], Event)
                      else "comment"))
    assert kinds == [(0.0, "message"), (0.0, "stream-pause"), (0.1, "comment"),
                     (0.2, "comment"), (0.25, "stream-resume"), (0.3, "message")]
    assert named(pieces(actions)[1].data)[0][1] == {"reason": "quota",
                                                    "position": len(tick(0))}


def test_a_pause_after_the_last_event_still_resumes_before_the_end() -> None:
    actions, _ = transformed("pause:after_event=5,duration=1s,signal=true")
    assert [n for n, _ in named(body(actions))][-2:] == ["stream-pause", "stream-resume"]
    closed, _ = transformed("pause:after_event=2,duration=1s,signal=true",
                            "drop:after_event=2,how=rst")
    assert [n for n, _ in named(body(closed))] == [
        "message", "message", "stream-pause", "stream-resume"]  # the reset after the pause
    assert ending(closed) == Ending(Outcome.RESET, pytest.approx(1.1))


def test_an_unsignalled_pause_sends_nothing_extra() -> None:
    actions, run = transformed("pause:after_event=2,duration=1s")
    assert body(actions) == STREAM and "signal" not in run.log[0]


def test_a_signalled_throttle_announces_its_rate_first_at_that_rate() -> None:
    actions, run = transformed("throttle:rate=1K,signal=true,reason=tier",
                               chunks=[(0.0, data) for _, data in ticks()])
    data = body(actions)
    assert named(data)[0] == ("stream-throttle", {"rate": 1024, "reason": "tier"})
    assert data.endswith(STREAM)
    last = pieces(actions)[-1]
    assert last.due + len(last.data) / 1024 == pytest.approx(len(data) / 1024)
    assert run.log[0]["signal"] is True


# -- timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("how", "outcome"), [("fin", Outcome.CLOSED), ("rst", Outcome.RESET)])
def test_timeout_stalls_after_event_k_then_closes(how: str, outcome: Outcome) -> None:
    actions, run = transformed(f"timeout:after_event=2,duration=750ms,how={how}")
    assert body(actions) == tick(0) + tick(1)
    assert ending(actions) == Ending(outcome, pytest.approx(0.85))
    assert run.log == [{"fault": f"timeout:after_event=2,duration=750ms,how={how}",
                        "type": "timeout", "at_ms": 100.0, "event": 2, "how": how,
                        "close_ms": 850.0}]


def test_timeout_with_no_position_lets_no_byte_through() -> None:
    late = [(0.2 + d, data) for d, data in ticks()]
    actions, _ = transformed("timeout:duration=1s", chunks=[(0.0, b"retry: 10\n\n"), *late])
    assert body(actions) == b"" and ending(actions) == Ending(Outcome.CLOSED, 1.0)
    empty, _ = transformed("timeout:duration=1s", chunks=[])
    assert empty == [Ending(Outcome.CLOSED, 1.0)]


def test_timeout_at_a_time_and_after_a_pause() -> None:
    actions, _ = transformed("timeout:at=250ms,duration=1s")
    assert body(actions) == tick(0) + tick(1) + tick(2)  # due before 250 ms; 0.3 is not
    assert ending(actions) == Ending(Outcome.CLOSED, pytest.approx(1.25))
    shifted, _ = transformed("timeout:after_event=3,duration=1s",
                             "pause:after_event=1,duration=2s")
    assert ending(shifted) == Ending(Outcome.CLOSED, pytest.approx(3.2))


# -- slow_close ------------------------------------------------------------------------------


def test_slow_close_delays_a_fault_close_and_the_recorded_close() -> None:
    dropped, run = transformed("drop:after_event=2,how=rst", "slow_close:delay=2s")
    assert body(dropped) == tick(0) + tick(1)
    assert ending(dropped) == Ending(Outcome.RESET, pytest.approx(2.1))
    assert run.log[-1] == {"fault": "slow_close:delay=2s", "type": "slow_close",
                           "at_ms": 100.0, "delay_ms": 2000.0, "close": "reset"}
    timed_out, _ = transformed("timeout:after_event=1,duration=1s", "slow_close:delay=1s",
                               "slow_close:delay=500ms")
    assert ending(timed_out) == Ending(Outcome.CLOSED, pytest.approx(2.5))
    recorded_fin, _ = transformed("slow_close:delay=1s", ends=Outcome.CLOSED)
    assert body(recorded_fin) == STREAM
    assert ending(recorded_fin) == Ending(Outcome.CLOSED, pytest.approx(1.4))


def test_slow_close_leaves_a_stall_and_a_framed_body_to_the_server() -> None:
    stalled, _ = transformed("stall:after_event=1", "slow_close:delay=1s")
    assert ending(stalled) == Ending(Outcome.STALLED, 0.0)
    framed, run = transformed("slow_close:delay=1s")
    assert body(framed) == STREAM and ending(framed) is None and run.log == []
    assert run.closes_late() and run.late_close() == 1.0
    assert run.log == [{"fault": "slow_close:delay=1s", "type": "slow_close", "at_ms": 0.0,
                        "delay_ms": 1000.0, "close": "framed"}]
    assert run_of("drop:after_event=1").late_close() is None
    assert not run_of("drop:after_event=1").closes_late()


# -- the slicer's delay ----------------------------------------------------------------------


def test_slices_of_one_chunk_are_delay_apart_and_a_long_gap_absorbs_them() -> None:
    chunks = [(0.0, b"abcdef"), (1.0, b"ghij")]
    actions, run = transformed("rechunk:mode=bytes,size=2,delay=100ms", chunks=chunks)
    assert [(round(p.due, 6), p.data) for p in pieces(actions)] == [
        (0.0, b"ab"), (0.1, b"cd"), (0.2, b"ef"), (1.0, b"gh"), (1.1, b"ij")]
    assert run.log[0]["delay_ms"] == 100.0
    packed, _ = transformed("rechunk:mode=bytes,size=2,delay=100ms",
                            chunks=[(0.0, b"abcdef"), (0.05, b"gh")])
    assert [round(p.due, 6) for p in pieces(packed)] == [0.0, 0.1, 0.2, 0.3]  # pushed back
    closing, _ = transformed("rechunk:mode=byte,delay=10ms", "drop:after_bytes=3")
    assert ending(closing) == Ending(Outcome.CLOSED, pytest.approx(0.03))


@st.composite
def timed_chunks(draw: st.DrawFn) -> list[tuple[float, bytes]]:
    """SSE bytes cut anywhere into chunks at non-decreasing times (gaps from 0 to 50 ms)."""
    events = draw(st.lists(st.tuples(st.text(min_size=0, max_size=12),
                                     st.sampled_from([None, "a", "ü"])), min_size=1,
                           max_size=6))
    data = b"".join(encode_event(text, event=name) for text, name in events)
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=8)))
    bounds = [0, *cuts, len(data)]
    gaps = draw(st.lists(st.integers(0, 50), min_size=len(bounds) - 1,
                         max_size=len(bounds) - 1))
    chunks, due = [], 0.0
    for (a, b), gap in zip(zip(bounds, bounds[1:], strict=False), gaps, strict=True):
        due += gap / 1000
        chunks.append((round(due, 6), data[a:b]))
    return chunks


@HYPOTHESIS
@given(chunks=timed_chunks(), delay_ms=st.integers(1, 30),
       mode=st.sampled_from(["bytes,size=3", "byte", "random,min=1,max=7", "adversarial",
                             "event"]))
def test_slice_delay_across_chunk_boundaries(chunks: list[tuple[float, bytes]],
                                             delay_ms: int, mode: str) -> None:
    """Bytes unchanged; every write at least `delay` after the one before, whether both
    came from one recorded chunk or from two; none before its recorded time; and no write
    later than it must be (it goes at its recorded time or `delay` after the write before)."""
    delay = delay_ms / 1000
    plain, _ = transformed(f"rechunk:mode={mode}", chunks=chunks)
    sliced, _ = transformed(f"rechunk:mode={mode},delay={delay_ms}ms", chunks=chunks)
    assert body(sliced) == body(plain) == b"".join(data for _, data in chunks)
    before, after = pieces(plain), pieces(sliced)
    assert [p.data for p in after] == [p.data for p in before]  # the same cuts, re-timed
    assert [(p.events, p.boundary) for p in after] == [(p.events, p.boundary) for p in before]
    for index, (was, now) in enumerate(zip(before, after, strict=True)):
        assert now.due >= was.due - 1e-9
        if index:
            gap = now.due - after[index - 1].due
            assert gap >= delay - 1e-9
            assert now.due == pytest.approx(max(was.due, after[index - 1].due + delay))
    assert ending(sliced) is None


# -- the plan's ids: what the control API adds and removes by --------------------------------


def test_fault_ids_keep_every_other_faults_dice() -> None:
    """Adding or removing a fault leaves the others' draws as they were: a fault's dice
    depend on the seed, the response number and its own id, not on its place in the plan."""
    specs = ["drop:per=event,p=0.3", "corrupt:per=event,p=0.3,mode=omit",
             "inject:per=event,p=0.3,shape=status"]
    plan = FaultPlan.load(specs, seed=5)
    assert plan.ids == (1, 2, 3)
    without = plan.removing(2)
    assert without.ids == (1, 3) and [f.spec for f in without.faults] == [specs[0], specs[2]]
    grown = without.adding(parse_spec("stall:per=event,p=0.1"), 4)
    assert grown.ids == (1, 3, 4) and plan.removing(9) == plan

    def draws(p: FaultPlan, number: int) -> dict[str, float]:
        run = p.for_connection(number, "GET", "h", "/", False)
        return {fault.spec: rng.random() for fault, rng in run.chosen}

    for number in range(5):
        before, after = draws(plan, number), draws(grown, number)
        assert after[specs[0]] == before[specs[0]] and after[specs[2]] == before[specs[2]]
    with pytest.raises(ValueError):
        FaultPlan(plan.faults, 0, (1, 1, 2))

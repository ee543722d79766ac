"""The drift diff of two recordings: pairing, findings, thresholds (pure, no I/O)."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.errors import ConfigError
from sse_recorder.model import Interaction, Outcome, RecordedEvent, RecordedRequest, ResponseHead
from sse_recorder.replay.matching import MatchConfig
from sse_recorder.report.diff import (
    DEFAULT_THRESHOLDS,
    FINDINGS,
    KINDS,
    Finding,
    Options,
    Pair,
    Threshold,
    compare,
    diff,
    pair_by_id,
    pair_by_match,
    parse_thresholds,
)
from sse_recorder.report.timeline import Recording

MS = 1_000_000


def stream(iid: int, items: list[tuple[str, dict[str, object] | str]], *, head_ms: float = 10,
           gap_ms: float = 20, url: str = "http://up.test/v1/stream", method: str = "GET",
           body: bytes = b"", status: int = 200, outcome: Outcome = Outcome.CLEAN,
           headers: tuple[tuple[str, str], ...] = (("content-type", "text/event-stream"),),
           ) -> Recording:
    events = tuple(
        RecordedEvent(n, "event", kind, data if isinstance(data, str) else json.dumps(data),
                      None, None, int((head_ms + n * gap_ms) * MS), n, n)
        for n, (kind, data) in enumerate(items))
    end = int((head_ms + len(items) * gap_ms) * MS)
    interaction = Interaction(
        iid, 0.0, RecordedRequest(method, url, (), body), ResponseHead(status, "", headers),
        int(head_ms * MS), True, outcome is Outcome.CLEAN, outcome, end, None, len(events),
        10 * len(events), len(events))
    return Recording(interaction, tuple(e.offset_ns for e in events),
                     tuple(10 for _ in events), events)


BEFORE = [("status", {"state": "started"})] + [
    ("delta", {"index": n, "text": "w"}) for n in range(10)] + [("done", {"reason": "stop"})]
AFTER = [("delta", {"index": n, "content": "w"}) for n in range(10)] + [
    ("usage", {"tokens": 10}), ("done", {"reason": "stop"})]


def kinds(found: list[Finding]) -> list[str]:
    return sorted(f.kind for f in found)


def test_the_four_drifts_are_four_findings() -> None:
    a = stream(1, BEFORE, head_ms=150, gap_ms=40)
    b = stream(1, AFTER, head_ms=300, gap_ms=40)
    found = compare(Pair(a, b), Options())
    assert kinds(found) == ["field-renamed", "timing", "type-added", "type-removed"]
    by_kind = {f.kind: f.record() for f in found}
    assert by_kind["field-renamed"]["path"] == "$.text"
    assert by_kind["field-renamed"]["now_path"] == "$.content"
    assert by_kind["field-renamed"]["example"] == "$.content"
    assert by_kind["type-added"]["type"] == "usage" and by_kind["type-removed"]["type"] == "status"
    assert by_kind["timing"]["metric"] == "ttfb"
    assert (by_kind["timing"]["was_ms"], by_kind["timing"]["now_ms"]) == (150, 300)


def test_a_recording_against_itself_has_no_findings() -> None:
    a = stream(1, BEFORE)
    assert compare(Pair(a, a), Options()) == []


def test_fields_under_a_removed_field_are_not_listed_again() -> None:
    a = stream(1, [("x", {"keep": 1, "gone": {"deep": {"deeper": 1}}, "same": [1]})])
    b = stream(1, [("x", {"keep": 1, "same": ["s"], "new": True, "other": "t"})])
    found = compare(Pair(a, b), Options())
    records = [(f.kind, f.record()["path"]) for f in found]
    assert records == [("field-type", "$.same[]"), ("field-removed", "$.gone"),
                       ("field-added", "$.new"), ("field-added", "$.other")]


def test_null_is_compatible_with_any_type() -> None:
    a = stream(1, [("x", {"v": None}), ("x", {"v": "s"})])
    b = stream(1, [("x", {"v": "t"}), ("x", {"v": "u"})])
    assert compare(Pair(a, b), Options()) == []


def test_order_and_repetition_of_event_types() -> None:
    a = stream(1, [("start", {}), ("delta", {}), ("delta", {}), ("stop", {})])
    b = stream(1, [("delta", {}), ("start", {}), ("start", {}), ("stop", {})])
    found = [f.message() for f in compare(Pair(a, b), Options())]
    assert found == ["event types reordered: start, delta, stop -> delta, start, stop",
                     "event type start: sent once, now 2 times",
                     "event type delta: sent 2 times, now once"]
    longer = stream(1, [("start", {})] + [("delta", {})] * 9 + [("stop", {})])
    assert compare(Pair(a, longer), Options()) == []  # more deltas is no drift


def test_status_headers_and_ending() -> None:
    a = stream(1, [("x", {})], headers=(("content-type", "text/event-stream"),
                                        ("date", "Mon"), ("x-ratelimit-remaining", "9"),
                                        ("x-version", "1")))
    b = stream(1, [("x", {})], status=500, outcome=Outcome.RESET,
               headers=(("content-type", "text/event-stream"), ("date", "Tue"),
                        ("x-ratelimit-remaining", "8"), ("x-version", "2"), ("x-new", "y")))
    found = [f.message() for f in compare(Pair(a, b), Options())]
    assert found == ["status 200 -> 500", "header x-new: (absent) -> y",
                     "header x-version: 1 -> 2", "ending clean -> reset"]
    ignoring = Options(ignore_headers=frozenset({"x-version", "x-new"}))
    assert [f.kind for f in compare(Pair(a, b), ignoring)] == ["status", "ending"]


@given(st.floats(1, 5000), st.floats(1, 5000), st.floats(1, 4), st.floats(0, 500))
def test_timing_drifts_only_past_both_the_ratio_and_the_floor(
        was: float, now: float, ratio: float, floor: float) -> None:
    threshold = Threshold(ratio, floor)
    assert threshold.exceeded(was, now) == (
        abs(now - was) > floor and max(was, now) / min(was, now) > ratio)


@pytest.mark.parametrize(("now_ms", "drift"), [(149.0, False), (300.0, True), (151.0, False)])
def test_the_default_ttfb_threshold_on_both_sides(now_ms: float, drift: bool) -> None:
    a = stream(1, [("x", {})] * 3, head_ms=100)
    b = stream(1, [("x", {})] * 3, head_ms=now_ms)
    found = [f for f in compare(Pair(a, b), Options()) if f.kind == "timing"]
    assert bool(found) == drift


def test_thresholds_parse_and_refuse_in_one_line() -> None:
    chosen = parse_thresholds(["ttfb=3", "gap-p95=1.2:2s"])
    assert chosen["ttfb"] == Threshold(3, DEFAULT_THRESHOLDS["ttfb"].floor_ms)
    assert chosen["gap-p95"] == Threshold(1.2, 2000)
    for bad in ("ttfb", "speed=2", "ttfb=0.5", "ttfb=x", "ttfb=2:soon"):
        with pytest.raises(ConfigError) as caught:
            parse_thresholds([bad])
        assert "\n" not in str(caught.value) and "--threshold" in str(caught.value)


def test_pairing_by_match_serves_repeats_in_order_and_leaves_the_rest_alone() -> None:
    a = [stream(1, [], url="http://up.test/a"), stream(2, [], url="http://up.test/a"),
         stream(3, [], url="http://up.test/gone")]
    b = [stream(7, [], url="http://other.test/a"), stream(8, [], url="http://other.test/a"),
         stream(9, [], url="http://other.test/a"), stream(10, [], url="http://up.test/new")]
    pairs = [(p.a.interaction.id if p.a else None, p.b.interaction.id if p.b else None)
             for p in pair_by_match(a, b, MatchConfig())]
    assert pairs == [(1, 7), (2, 8), (3, None), (None, 9), (None, 10)]
    by_id = [(p.a and p.a.interaction.id, p.b and p.b.interaction.id)
             for p in pair_by_id(a, b[:1])]
    assert by_id == [(1, None), (2, None), (3, None), (None, 7)]


def test_pairing_honours_the_matching_rules_body_and_redaction() -> None:
    a = [stream(1, [], method="POST", body=b'{"model": "m", "key": "[REDACTED]"}')]
    b = [stream(5, [], method="POST", body=b'{"key": "[REDACTED]", "model": "m"}')]
    assert pair_by_match(a, b, MatchConfig())[0] == Pair(a[0], b[0])
    c = [stream(6, [], method="POST", body=b'{"model": "other"}')]
    assert [p.a is None for p in pair_by_match(a, c, MatchConfig())] == [False, True]
    loose = MatchConfig.parse(ignore_json=["model"])
    assert len(diff(a, c, Options(match=loose))) in (1, 2)  # key missing: still a miss
    assert diff(a, a, Options(match=loose))[0].findings == []


def test_every_kind_is_a_dataclass_with_its_own_name_and_a_description() -> None:
    assert len(KINDS) == len(FINDINGS)
    shared = {f.name for f in fields(Finding)}
    for kind, cls in KINDS.items():
        assert cls.about and kind == cls.kind
        own = [f.name for f in fields(cls) if f.name not in shared]
        assert own, kind


recorded_items = st.lists(st.tuples(
    st.sampled_from(["a", "b", "ping", "message"]),
    st.dictionaries(st.sampled_from(["x", "y", "z"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=3),
                              st.lists(st.integers(), max_size=2)), max_size=3)),
    max_size=12)


@given(recorded_items)
def test_any_recording_against_itself_or_a_slower_copy_within_thresholds_is_clean(
        items: list[tuple[str, dict[str, object]]]) -> None:
    a = stream(1, items)
    same_but_jittered = stream(1, items, head_ms=12, gap_ms=23)
    assert compare(Pair(a, a), Options()) == []
    assert compare(Pair(a, same_but_jittered), Options()) == []


def test_only_one_side() -> None:
    a = stream(1, [])
    found = compare(Pair(a, None), Options()) + compare(Pair(None, replace(a)), Options())
    assert [f.message() for f in found] == ["only in A: #1 GET http://up.test/v1/stream",
                                            "only in B: #1 GET http://up.test/v1/stream"]

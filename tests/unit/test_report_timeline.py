"""The report's measurements and the JSON shapes of event data: pure, no I/O."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.model import Interaction, Outcome, RecordedEvent, RecordedRequest, ResponseHead
from sse_recorder.report.shapes import ROOT, TEXT, parent, shapes
from sse_recorder.report.timeline import (
    GAP_EDGES_MS,
    Recording,
    density,
    gap_points,
    histogram,
    percentile,
    rates,
    sparkline,
    stats,
)

MS = 1_000_000


def event(seq: int, at_ms: float, data: str = "{}", kind: str = "event",
          type: str | None = "message") -> RecordedEvent:
    return RecordedEvent(seq, kind, None if kind == "comment" else type,  # type: ignore[arg-type]
                         data, None, None, int(at_ms * MS), seq, seq)


def recording(events: list[RecordedEvent], *, sse: bool = True, head_ms: float = 5,
              end_ms: float | None = None, outcome: Outcome = Outcome.CLEAN,
              iid: int = 1, url: str = "http://up.test/s") -> Recording:
    offsets = tuple(e.offset_ns for e in events)
    interaction = Interaction(
        iid, 0.0, RecordedRequest("GET", url, ()),
        ResponseHead(200, "OK", (("content-type", "text/event-stream"),)),
        int(head_ms * MS), sse, True, outcome,
        None if end_ms is None else int(end_ms * MS), None, len(events), 10 * len(events),
        sum(e.kind == "event" for e in events))
    return Recording(interaction, offsets, tuple(10 for _ in events), tuple(events))


# Values on both sides of every bin edge, and far past the last one.
edge_values = st.sampled_from(GAP_EDGES_MS[:-1]).flatmap(
    lambda edge: st.sampled_from([edge, math.nextafter(edge, -math.inf) if edge else 0.0,
                                  math.nextafter(edge, math.inf), edge + 0.5]))


@given(st.lists(edge_values | st.floats(0, 1e6), max_size=60))
def test_every_gap_lands_in_the_one_bin_that_holds_it(values: list[float]) -> None:
    bins = histogram(values)
    assert sum(b.count for b in bins) == len(values)
    for b in bins:
        assert b.count == sum(b.lo_ms <= v < b.hi_ms for v in values)
    if bins:  # trimmed to the used range, contiguous
        assert bins[0].count and bins[-1].count
        assert all(x.hi_ms == y.lo_ms for x, y in zip(bins, bins[1:], strict=False))


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0.1, 100))
def test_percentile_is_a_nearest_rank(values: list[float], q: float) -> None:
    found = percentile(values, q)
    assert found in values
    assert sum(v <= found for v in values) >= q / 100 * len(values)  # type: ignore[operator]
    assert sum(v < found for v in values) < q / 100 * len(values)  # type: ignore[operator]


def test_gaps_are_between_events_not_comments_or_heartbeats() -> None:
    rec = recording([event(0, 10), event(1, 15, kind="comment"), event(2, 30, type="ping"),
                     event(3, 40), event(4, 100, type="delta")])
    assert gap_points(rec) == ("events", [10.0, 40.0, 100.0])
    figures = stats(rec)
    assert figures.gaps_ms == (30.0, 60.0)
    assert figures.counts == {"message": 2, "ping": 1, "delta": 1}
    assert (figures.heartbeats, figures.comments) == (1, 1)
    assert figures.ttfb_ms == 5.0 and figures.first_event_ms == 10.0


def test_a_body_that_is_not_sse_has_gaps_between_chunks() -> None:
    rec = recording([], sse=False)
    rec = Recording(rec.interaction, (2 * MS, 7 * MS, 9 * MS), (1, 1, 1), ())
    assert gap_points(rec) == ("chunks", [2.0, 7.0, 9.0])
    assert stats(rec).gaps_ms == (5.0, 2.0)


def test_long_gaps_need_both_the_floor_and_the_median_factor() -> None:
    steady = [event(n, 100 * n) for n in range(10)]  # 100 ms gaps: none long
    assert stats(recording(steady)).long_gaps == ()
    paused = steady + [event(10, 900 + 600), event(11, 1600)]  # one 600 ms pause
    assert stats(recording(paused)).long_gaps == ((900.0, 1500.0),)
    fast = [event(n, 100 * n) for n in range(10)] + [event(10, 900 + 499)]  # under 500 ms
    assert stats(recording(fast)).long_gaps == ()


def test_the_duration_is_the_end_else_the_last_chunk() -> None:
    assert stats(recording([event(0, 10)], end_ms=50)).duration_ms == 50
    assert stats(recording([event(0, 10)])).duration_ms == 10


def test_rates_count_every_event_and_byte_once() -> None:
    rec = recording([event(n, 5 + n * 7.3) for n in range(40)], end_ms=300)
    slices = rates(rec, 8)
    width_s = (slices[0].end_ms - slices[0].start_ms) / 1000
    assert round(sum(r.events_per_s * width_s for r in slices)) == 40
    assert round(sum(r.bytes_per_s * width_s for r in slices)) == 400


@given(st.lists(st.floats(0, 1000), max_size=100), st.integers(1, 80))
def test_density_keeps_every_point_including_the_end(times: list[float], columns: int) -> None:
    assert sum(density(times, 1000, columns)) == len(times)


def test_sparkline_scales_to_the_largest() -> None:
    assert sparkline([0, 1, 8]) == " ▂█"
    assert sparkline([0, 0]) == "  "


def test_shapes_merge_array_elements_and_keep_a_concrete_example() -> None:
    found = shapes([
        event(0, 1, '{"choices":[{"delta":{"content":"hi"}}],"n":1}', type="chunk"),
        event(1, 2, '{"choices":[{"delta":{"content":null}}],"n":"x"}', type="chunk"),
        event(2, 3, "[DONE]", type="chunk"),
        event(3, 4, "ignored", kind="comment"),
    ])
    fields = found["chunk"].fields
    assert fields["$.choices[].delta.content"].types == {"string", "null"}
    assert fields["$.choices[].delta.content"].example == "$.choices[0].delta.content"
    assert fields["$.n"].types == {"number", "string"}
    assert fields[ROOT].types == {"object", TEXT}
    assert found["chunk"].events == 3 and list(found) == ["chunk"]


def test_deep_json_does_not_exhaust_the_stack() -> None:
    deep = "[" * 900 + "]" * 900  # as deep as json parses; the walk is iterative
    found = shapes([event(0, 1, deep), event(1, 2, "[" * 9000 + "]" * 9000)])
    assert len(found["message"].fields) == 900
    assert found["message"].fields[ROOT].types == {"array", TEXT}  # too deep for json: text


def test_parent_paths() -> None:
    assert parent("$.a.b") == "$.a" and parent("$.a[]") == "$.a" and parent("$.a") == ROOT

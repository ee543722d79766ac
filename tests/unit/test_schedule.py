"""The replay schedule: recorded offsets in, due times (seconds from the start) out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.errors import ConfigError
from sse_recorder.model import Chunk, Interaction, Outcome, RecordedRequest, ResponseHead
from sse_recorder.replay.schedule import Schedule, Timing
from sse_recorder.replay.sources import ending_due, timed
from sse_recorder.wire.responses import chunk

MS = 1_000_000  # ns


def dues(timing: Timing, offsets_ms: Sequence[float], origin_ms: float = 0) -> list[float]:
    schedule = Schedule(timing, int(origin_ms * MS))
    return [round(schedule.due(int(o * MS)) * 1000, 6) for o in offsets_ms]


def test_absolute_schedule_is_the_recorded_offsets() -> None:
    offsets = [0, 3, 20, 40, 40, 1000, 61_000]
    assert dues(Timing(), offsets) == offsets  # from the start, never accumulated sleeps


def test_due_times_do_not_depend_on_what_came_before() -> None:
    first = Schedule(Timing())
    for offset in range(0, 50 * 20, 20):
        first.due(offset * MS)
    assert first.due(5000 * MS) == Schedule(Timing()).due(5000 * MS) == 5.0


@pytest.mark.parametrize(("speed", "expected"), [(10, [0, 2, 4, 100]), (0.5, [0, 40, 80, 2000]),
                                                 (2.5, [0, 8, 16, 400])])
def test_speed_divides_every_offset(speed: float, expected: list[float]) -> None:
    assert dues(Timing(speed=speed), [0, 20, 40, 1000]) == pytest.approx(expected)


def test_instant_makes_everything_due_at_once() -> None:
    assert dues(Timing(instant=True), [0, 20, 5000, 60_000]) == [0, 0, 0, 0]
    assert dues(Timing(instant=True, speed=0.1, max_gap=1), [7, 9_000]) == [0, 0]
    assert dues(Timing(instant=True), [10_000], origin_ms=2) == [0]


def test_max_gap_clamps_a_long_pause_and_shifts_what_follows() -> None:
    # 10 ms, then a 5 s pause, then 10 ms steps: the pause becomes 100 ms, the steps stay.
    offsets = [0, 10, 5010, 5020, 5030]
    assert dues(Timing(max_gap=0.1), offsets) == pytest.approx([0, 10, 110, 120, 130])


def test_max_gap_cuts_accumulate_and_short_gaps_stay() -> None:
    offsets = [0, 50, 3050, 3100, 9100, 9150]
    assert dues(Timing(max_gap=0.2), offsets) == pytest.approx([0, 50, 250, 300, 500, 550])
    assert dues(Timing(max_gap=10), offsets) == offsets  # nothing longer than 10 s


def test_max_gap_clamps_the_wait_before_the_first_piece() -> None:
    # A 1.5 s time to first byte is a gap from the start too.
    assert dues(Timing(max_gap=0.1), [1500, 1510, 1520]) == pytest.approx([100, 110, 120])


def test_max_gap_applies_after_the_speed_up() -> None:
    assert dues(Timing(speed=10, max_gap=0.1), [0, 500, 2500, 2520]) == pytest.approx(
        [0, 50, 150, 152]
    )


def test_max_gap_zero_removes_every_pause() -> None:
    assert dues(Timing(max_gap=0), [0, 20, 40, 5000]) == [0, 0, 0, 0]


def test_origin_counts_from_the_resume_point() -> None:
    assert dues(Timing(), [3000, 3030, 3090], origin_ms=3000) == pytest.approx([0, 30, 90])
    assert dues(Timing(speed=10), [3000, 3030, 3090], origin_ms=3000) == pytest.approx(
        [0, 3, 9]
    )
    # Anything at or before the origin is due at once.
    assert dues(Timing(), [1000, 2999, 3010], origin_ms=3000) == pytest.approx([0, 0, 10])
    assert dues(Timing(max_gap=0.05), [3000, 3030, 4030], origin_ms=3000) == pytest.approx(
        [0, 30, 80]
    )


@pytest.mark.parametrize("speed", [0, -1, -0.5, math.nan])
def test_bad_speed_is_a_config_error(speed: float) -> None:
    with pytest.raises(ConfigError, match="speed"):
        Timing(speed=speed)


@pytest.mark.parametrize("max_gap", [-0.001, -5, math.nan])
def test_bad_max_gap_is_a_config_error(max_gap: float) -> None:
    with pytest.raises(ConfigError, match="max gap"):
        Timing(max_gap=max_gap)


def test_defaults() -> None:
    timing = Timing()
    assert (timing.speed, timing.instant, timing.max_gap) == (1.0, False, None)


offsets_ns = st.lists(st.integers(0, 10**12), min_size=1, max_size=60).map(sorted)


@given(
    offsets=offsets_ns,
    speed=st.floats(0.01, 1000),
    max_gap=st.none() | st.floats(0, 100),
)
def test_schedule_properties(offsets: list[int], speed: float, max_gap: float | None) -> None:
    schedule = Schedule(Timing(speed=speed, max_gap=max_gap))
    got = [schedule.due(o) for o in offsets]
    unclamped = [o / 1e9 / speed for o in offsets]
    tolerance = 1e-6 * (1 + max(unclamped))
    assert all(b >= a - tolerance for a, b in zip(got, got[1:], strict=False))  # never earlier
    assert all(0 - tolerance <= g <= u + tolerance for g, u in zip(got, unclamped, strict=True))
    previous_got, previous_raw = 0.0, 0.0
    for g, u in zip(got, unclamped, strict=True):
        gap, raw_gap = g - previous_got, u - previous_raw
        if max_gap is None:
            assert g == pytest.approx(u, abs=tolerance)
        else:  # each gap is the recorded one, or max_gap when that was longer
            assert gap == pytest.approx(min(raw_gap, max_gap), abs=tolerance)
        previous_got, previous_raw = g, u


# -- Timing.parse: the one parser for user-given speed and max gap text ---------------------


@pytest.mark.parametrize(("speed", "max_gap", "expected"), [
    ("instant", None, Timing(instant=True)),
    (" Instant ", "500ms", Timing(instant=True, max_gap=0.5)),
    ("INSTANT", 2000, Timing(instant=True, max_gap=2.0)),  # a bare number is milliseconds
    ("1", None, Timing()),
    ("10", None, Timing(speed=10.0)),
    (" 0.25 ", 100, Timing(speed=0.25, max_gap=0.1)),
    ("2.5", "0", Timing(speed=2.5, max_gap=0.0)),
    ("1e3", " 3s ", Timing(speed=1000.0, max_gap=3.0)),
    ("1", "1m", Timing(max_gap=60.0)),
])
def test_parse_accepts_instant_or_a_positive_factor(
    speed: str, max_gap: float | str | None, expected: Timing
) -> None:
    assert Timing.parse(speed, max_gap) == expected


@pytest.mark.parametrize(("speed", "max_gap", "message"), [
    ("fast", None, "bad speed 'fast': use a factor such as 1 or 10, or 'instant'"),
    ("", None, "bad speed '': use a factor such as 1 or 10, or 'instant'"),
    ("0", None, "speed must be positive, got 0.0"),
    ("-2", None, "speed must be positive, got -2.0"),
    ("nan", None, "speed must be positive, got nan"),
    ("1", "soon", "max gap: bad duration 'soon': durations carry a unit (250ms, 2s, 1m) or"
                  " are milliseconds (500 = 500ms)"),
    ("1", "2 sec", "max gap: bad duration '2 sec' (did you mean 2s?): durations carry a unit"
                   " (250ms, 2s, 1m) or are milliseconds (500 = 500ms)"),
    ("instant", "-1", "max gap: bad duration '-1': durations carry a unit (250ms, 2s, 1m) or"
                      " are milliseconds (500 = 500ms)"),
    ("1", -0.5, "max gap: bad duration -0.5: durations carry a unit (250ms, 2s, 1m) or are"
                " milliseconds (500 = 500ms)"),
])
def test_parse_rejects_bad_text_with_a_one_line_config_error(
    speed: str, max_gap: float | str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Timing.parse(speed, max_gap)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


@given(st.floats(0.001, 1e6))
def test_parse_round_trips_any_positive_factor(speed: float) -> None:
    assert Timing.parse(repr(speed)) == Timing(speed=speed)


# -- paced writes: made whole once (a cached body) or page by page (a large one) ------------

chunk_lists = st.lists(
    st.tuples(st.integers(0, 5_000), st.binary(max_size=3)), max_size=40
).map(lambda gaps: _chunks(gaps))


def _chunks(gaps: list[tuple[int, bytes]]) -> list[Chunk]:
    """Chunks with non-decreasing offsets (gaps in ms), some of them empty."""
    offset, out = 0, []
    for i, (gap, data) in enumerate(gaps):
        offset += gap * MS
        out.append(Chunk(i, offset, data))
    return out


@given(chunks=chunk_lists, cuts=st.lists(st.integers(0, 40), max_size=5),
       max_gap=st.none() | st.floats(0, 3), head_ms=st.integers(0, 4_000))
def test_paced_writes_are_the_same_whole_or_cut_into_pages(
    chunks: list[Chunk], cuts: list[int], max_gap: float | None, head_ms: int
) -> None:
    """A max_gap cut that spans a page boundary is carried across it, and an empty chunk
    on either side of one neither sends nor moves the schedule."""
    timing = Timing(max_gap=max_gap)
    whole = Schedule(timing)
    whole.due(head_ms * MS)
    expected = timed(chunks, whole, chunk)
    paged = Schedule(timing)
    paged.due(head_ms * MS)
    bounds = [0, *sorted(set(cuts)), len(chunks)]
    got = [p for a, b in zip(bounds, bounds[1:], strict=False) for p in
           timed(chunks[a:b], paged, chunk)]
    assert got == expected
    assert [data for _, data in got] == [chunk(c.data) for c in chunks if c.data]


def test_a_recorded_reset_is_due_after_the_last_chunk_on_the_same_clamped_schedule() -> None:
    interaction = Interaction(
        1, 0.0, RecordedRequest("GET", "http://h/x", ()), ResponseHead(200, "OK", ()),
        head_offset_ns=0, is_sse=True, complete=False, outcome=Outcome.RESET,
        end_offset_ns=10_000 * MS, error=None)
    schedule = Schedule(Timing(max_gap=1.0))
    schedule.due(0)
    timed([Chunk(0, 0, b"a"), Chunk(1, 5_000 * MS, b"b")], schedule, None)
    assert ending_due(interaction, schedule) == pytest.approx(2.0)  # both 5 s gaps cut to 1
    clean = dataclasses.replace(interaction, outcome=Outcome.CLEAN)
    assert ending_due(clean, schedule) is None

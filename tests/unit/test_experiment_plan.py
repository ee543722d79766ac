"""Experiment plans: the starter plan stays valid, bad plans fail in one line, runs are a
pure function of the plan."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sse_recorder.errors import ConfigError
from sse_recorder.experiment.plan import BASELINE, derive_seed, load_plan
from sse_recorder.experiment.starter import starter_plan

STARTER_PATTERNS = ("stall", "reset", "429", "error", "retry-hint", "backoff", "overload",
                    "heartbeat", "throttle", "adversarial", "corrupt")


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "c.sqlite").write_bytes(b"")
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_the_starter_plan_loads_and_covers_the_failure_patterns(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, starter_plan("c.sqlite", ("{python}", "client.py"))))
    assert plan.client.command == (sys.executable, "client.py")
    text = " ".join(f"{s.name} {' '.join(s.faults)}" for s in plan.scenarios)
    assert [p for p in STARTER_PATTERNS if p not in text] == []
    assert plan.hypothesis.last_event_id and plan.hypothesis.retry_after


def test_the_example_plan_is_the_starter_plan() -> None:
    example = Path(__file__).parents[2] / "examples" / "experiment" / "plan.toml"
    assert example.read_text() == starter_plan("ci-logs.sqlite", ("{python}", "resilient.py"))


MINIMAL = 'cassette = "c.sqlite"\n[client]\ncommand = ["{python}"]\n'
BAD = [
    ("repeat = 2\n" + MINIMAL, "unknown key 'repeat' (did you mean repeats?)"),
    (MINIMAL + "[hypothesis]\nall_event = true\n", "did you mean all_events?"),
    (MINIMAL + '[hypothesis]\nwithin = "2 parsecs"\n', "hypothesis.within"),
    (MINIMAL + '[[scenario]]\nname = "a"\nfaults = ["stall:after_event=x"]\n',
     "scenario a: stall:after_event=x"),
    (MINIMAL + '[[scenario]]\nname = "a"\nfaults = ["bogus"]\n', "unknown fault type"),
    (MINIMAL + '[[scenario]]\nname = "a"\n[[scenario]]\nname = "a"\n', "defined twice"),
    (MINIMAL + '[[scenario]]\nname = "baseline"\n', "not 'baseline'"),
    (MINIMAL + '[[scenario]]\nfaults = []\n', "scenario #1 needs a name"),
    (MINIMAL.replace("c.sqlite", "nope.sqlite"), "does not exist"),
    (MINIMAL.replace("{python}", "no-such-program-xyz"), "client command not found"),
    ("repeats = 0\n" + MINIMAL, "repeats must be > 0"),
    ("cassette = [", "not valid TOML"),
    ('cassette = "c.sqlite"\n', "missing 'client'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_plan_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plan(write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_runs_are_scenario_by_variant_by_repeat_with_derived_seeds(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "repeats = 2\nseed = 5\n" + MINIMAL + (
        '[[scenario]]\nname = "a"\nfaults = ["stall:after_event=1"]\nspeeds = [1, 4]\n'
        'seeds = [7, 8]\n[[scenario]]\nname = "b"\n')))
    runs = plan.runs()
    assert len(runs) == 2 * 2 * 2 + 2
    assert runs[0].id == "a[speed=1,seed=7]#1" and runs[-1].id == "b#2"
    assert runs[0].seed == derive_seed(7, "a", 1) != runs[1].seed
    assert {run.speed for run in runs if run.scenario.name == "a"} == {1.0, 4.0}
    assert [run.id for run in plan.runs(("b",))] == ["b#1", "b#2"]
    assert plan.run_by_id("b#2") == runs[-1]
    assert plan.baseline().scenario.name == BASELINE
    assert load_plan(plan.path).runs() == runs  # the same plan, the same runs and seeds
    with pytest.raises(ConfigError, match="did you mean b#2"):
        plan.run_by_id("b#22")


def test_scenario_hypothesis_overrides_the_plans(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MINIMAL.replace("[client]", (
        '[hypothesis]\nreconnect_delay = { min = "100ms", max = "2s" }\n[client]')) + (
        '[[scenario]]\nname = "a"\nhypothesis = { all_events = false }\n')))
    (scenario,) = plan.scenarios
    assert not scenario.hypothesis.all_events
    assert scenario.hypothesis.reconnect_min == 0.1 and scenario.hypothesis.reconnect_max == 2

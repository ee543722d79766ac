"""A plan's scenarios as parametrized tests of one test function (the pytest plugin's part).

    @pytest.mark.sse_experiment("plans/resilience.toml")   # relative to the test file
    def test_client_copes(sse_scenario):
        assert sse_scenario.held, sse_scenario.explain()

Each scenario (and the baseline, first) becomes one test id; the `sse_scenario` fixture runs
that scenario's runs (every variant and repeat) the way `sse-recorder experiment` does, in a
thread of its own so sync and async tests alike can use it. A bad plan fails collection
with its one-line message. Heavy imports wait until a plan is read, so the plugin stays
cheap for sessions that never use it.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sse_recorder.experiment.plan import Plan
    from sse_recorder.experiment.runner import RunResult

MARKER = ("sse_experiment(plan): run the plan's scenarios as parametrized tests of this "
          "function through the sse_scenario fixture (sse-recorder experiment)")


@dataclass
class ScenarioOutcome:
    """What the `sse_scenario` fixture gives a test: the scenario's runs and verdict."""

    name: str
    results: list[RunResult]

    @property
    def held(self) -> bool:
        return all(result.held for result in self.results)

    def explain(self) -> str:
        return "; ".join(f"{result.run.id}: {', '.join(result.reasons)}"
                         for result in self.results if not result.held)


def _plan_of(node: Any) -> Plan | None:
    marker = node.get_closest_marker("sse_experiment")
    if marker is None:
        return None
    from sse_recorder.errors import SSERecorderError
    from sse_recorder.experiment.plan import load_plan

    if not marker.args:
        raise pytest.UsageError("sse_experiment needs the plan's path")
    path = Path(node.path).parent / str(marker.args[0])
    try:
        return load_plan(path)
    except SSERecorderError as exc:
        raise pytest.UsageError(f"sse_experiment: {exc}") from None


def generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sse_scenario" not in metafunc.fixturenames:
        return
    plan = _plan_of(metafunc.definition)
    if plan is None:
        return
    from sse_recorder.experiment.plan import BASELINE

    names = [BASELINE, *(scenario.name for scenario in plan.scenarios)]
    metafunc.parametrize("sse_scenario", names, indirect=True, ids=names)


def _run_scenario(plan: Plan, name: str) -> list[RunResult]:
    import asyncio

    from sse_recorder.experiment.plan import BASELINE
    from sse_recorder.experiment.runner import prepare, run_one

    async def go() -> list[RunResult]:
        recorded = await prepare(plan)
        runs = [plan.baseline()] if name == BASELINE else plan.runs((name,))
        return [await run_one(plan, run, recorded) for run in runs]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop may run in this thread
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture
def sse_scenario(request: pytest.FixtureRequest) -> ScenarioOutcome:
    """The outcome of one scenario of the test's `sse_experiment` plan."""
    plan = _plan_of(request.node)
    if plan is None or not hasattr(request, "param"):
        raise pytest.UsageError("sse_scenario needs @pytest.mark.sse_experiment(PLAN)")
    from sse_recorder.errors import SSERecorderError

    try:
        return ScenarioOutcome(request.param, _run_scenario(plan, request.param))
    except SSERecorderError as exc:
        pytest.fail(str(exc), pytrace=False)

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

from sse_recorder.testing.outcomes import fail

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


class PlanError(Exception):
    """The test's plan cannot be used: the message says why, in one line."""


def _plan_of(node: Any) -> Plan | None:
    """The test's `sse_experiment` plan, None without the marker; PlanError when the plan
    cannot be read."""
    marker = node.get_closest_marker("sse_experiment")
    if marker is None:
        return None
    from sse_recorder.errors import SSERecorderError
    from sse_recorder.experiment.plan import load_plan

    if not marker.args:
        raise PlanError("sse_experiment needs the plan's path")
    path = Path(node.path).parent / str(marker.args[0])
    try:
        return load_plan(path)
    except SSERecorderError as exc:
        raise PlanError(f"sse_experiment: {exc}") from None


BAD_PLAN = "bad-plan"  # the one id of a test whose plan cannot be read: it fails, alone


def generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per scenario (and the baseline). A plan that cannot be read makes one
    failing test that says why, in one line: raised here, it stopped the whole collection
    with a traceback through pytest's internals."""
    if "sse_scenario" not in metafunc.fixturenames:
        return
    try:
        plan = _plan_of(metafunc.definition)
    except PlanError:
        metafunc.parametrize("sse_scenario", [BAD_PLAN], indirect=True, ids=[BAD_PLAN])
        return
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
    try:
        plan = _plan_of(request.node)
    except PlanError as exc:
        fail(str(exc))
    if plan is None or not hasattr(request, "param"):
        fail("sse_scenario needs @pytest.mark.sse_experiment(PLAN) on the test")
    from sse_recorder.errors import SSERecorderError

    try:
        return ScenarioOutcome(request.param, _run_scenario(plan, request.param))
    except SSERecorderError as exc:
        fail(str(exc))

"""Running an experiment: the baseline, then every run, each with its own replay server.

Rules:
- each run gets its own `ReplayServer` (the class `sse-recorder replay` serves with, built
  from the same options: the run's speed, its faults and its seed) on 127.0.0.1:0, and its
  own tap in front of it (observe.py); the client is told the tap's URL, so responses are
  numbered from 0 for every run and the same seed meets the same faults;
- the client is a child process in a session of its own: at the timeout the whole session
  is killed, and the run is counted as hung;
- after the client exits, the runner waits (bounded) until every request the tap saw has
  its served record, so no record is lost to the shutdown;
- the baseline runs first; a baseline that deviates stops the experiment with that verdict;
- everything the plan checks that could fail at start (the cassette opens, the client
  program exists) fails before the first run, as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sse_recorder.errors import ConfigError
from sse_recorder.experiment.measures import ClientResult, Measures, judge, measure
from sse_recorder.experiment.observe import Tap
from sse_recorder.experiment.plan import BASELINE, Plan, Run
from sse_recorder.faults import FaultPlan, FaultRun
from sse_recorder.model import header_value
from sse_recorder.replay.records import Served
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import ReplayOptions, ReplayServer
from sse_recorder.sse import Event, SSEParser

if TYPE_CHECKING:
    from sse_recorder.mitm.inprocess import InProcessProxy

OUTPUT_KEPT = 4000  # characters of the client's output kept per run
SETTLE = 2.0  # seconds to wait for the last served records after the client exits
ENV_BASE_URL = "SSE_RECORDER_BASE_URL"
ENV_PROXY_URL = "SSE_RECORDER_PROXY_URL"
ENV_CA_PATH = "SSE_RECORDER_CA_PATH"
CA_FILE = "mitmproxy-ca-cert.pem"
PROXY_TIMEOUT_S = 30.0


@dataclass
class RunResult:
    run: Run
    client: ClientResult
    measures: Measures
    served: list[Served]
    reasons: list[str]
    started: float  # wall clock

    @property
    def held(self) -> bool:
        return not self.reasons

    def fault_log(self) -> list[dict[str, Any]]:
        """The served records without their wall-clock times: equal for equal runs."""
        return [{k: v for k, v in record.record().items() if k != "time"}
                for record in self.served]

    def record(self) -> dict[str, Any]:
        """The run's journal line."""
        run = self.run
        return {
            "kind": "run", "id": run.id, "scenario": run.scenario.name,
            "variant": run.variant, "repeat": run.repeat, "seed": run.seed,
            "speed": run.speed, "faults": list(run.scenario.faults), "held": self.held,
            "reasons": self.reasons, "started": round(self.started, 3),
            "client": {"exit_status": self.client.exit_status,
                       "duration": round(self.client.duration, 4),
                       "timed_out": self.client.timed_out,
                       "output_tail": self.client.output[-1000:]},
            "measures": self.measures.as_dict(),
            "served": [record.record() for record in self.served],
        }


@dataclass
class Experiment:
    plan: Plan
    baseline: RunResult | None = None
    results: list[RunResult] = field(default_factory=list)
    stopped: str = ""  # why the runs did not go on (the baseline deviated)

    @property
    def held(self) -> bool:
        return not self.stopped and self.baseline is not None and self.baseline.held and all(
            result.held for result in self.results)

    def cells(self) -> dict[tuple[str, str], list[RunResult]]:
        """Results by (scenario, variant), in plan order."""
        out: dict[tuple[str, str], list[RunResult]] = {}
        for result in sorted(self.results, key=lambda r: (
                self._order(r.run.scenario.name), r.run.variant, r.run.repeat)):
            out.setdefault(result.run.cell, []).append(result)
        return out

    def _order(self, name: str) -> int:
        names = [scenario.name for scenario in self.plan.scenarios]
        return names.index(name) if name in names else -1


Recorded = dict[int, list[Event]]


@dataclass(frozen=True)
class FirstResponses(FaultPlan):
    """A fault plan that meets only the first `times` responses (a scenario's `times`):
    a fault that hit every reconnection too would test nothing but giving up."""

    times: int | None = None

    def for_connection(self, number: int, *args: Any, **kwargs: Any) -> FaultRun:
        if self.times is not None and number >= self.times:
            return FaultRun([])
        return super().for_connection(number, *args, **kwargs)


async def prepare(plan: Plan) -> Recorded:
    """Open the cassette once (a bad one fails here, before any run) and parse the recorded
    events of every event-stream interaction."""
    server = await ReplayServer.open(str(plan.cassette))
    try:
        recorded: Recorded = {}
        for interaction in server.matcher.interactions:
            head = interaction.response
            if head is None or "event-stream" not in (header_value(head.headers,
                                                                   "content-type") or ""):
                continue
            parser = SSEParser()
            events = []
            async for chunk in server.cassette.chunks(interaction.id):
                events += [item for item in parser.feed(chunk.data) if isinstance(item, Event)]
            recorded[interaction.id] = events
        return recorded
    finally:
        await server.close()


def client_env(plan: Plan, run: Run, base_url: str, proxy_url: str | None = None
               ) -> dict[str, str]:
    """The client's environment: ours, the plan's (`{base_url}` filled in), and the run's;
    in proxy mode also the proxy and the CA to trust, under our names and the usual ones."""
    env = dict(os.environ)
    env.update({name: value.replace("{base_url}", base_url) for name, value in plan.client.env})
    env.update({ENV_BASE_URL: base_url, "SSE_RECORDER_RUN_ID": run.id,
                "SSE_RECORDER_SCENARIO": run.scenario.name,
                "SSE_RECORDER_SEED": str(run.seed)})
    if proxy_url is not None:
        ca = str(plan.confdir / CA_FILE)
        env.update({ENV_PROXY_URL: proxy_url, ENV_CA_PATH: ca, "HTTP_PROXY": proxy_url,
                    "HTTPS_PROXY": proxy_url, "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca,
                    "NO_PROXY": ""})
    return env


async def _client(plan: Plan, run: Run, base_url: str, proxy_url: str | None) -> ClientResult:
    argv = [arg.replace("{base_url}", base_url) for arg in plan.client.command]
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=plan.client.cwd, env=client_env(plan, run, base_url, proxy_url),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise ConfigError(f"cannot start the client {argv[0]}: {exc.strerror}") from None
    output = bytearray()

    async def read() -> None:
        assert process.stdout is not None
        while data := await process.stdout.read(65536):
            output.extend(data)
            del output[:-OUTPUT_KEPT * 4]

    reading = asyncio.create_task(read())
    timed_out = False
    try:
        await asyncio.wait_for(process.wait(), plan.timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    duration = time.monotonic() - started
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reading, SETTLE)  # a grandchild may hold the pipe: bounded
    text = output.decode("utf-8", errors="replace")[-OUTPUT_KEPT:]
    return ClientResult(None if timed_out else process.returncode, duration, text, timed_out)


async def run_one(plan: Plan, run: Run, recorded: Recorded) -> RunResult:
    """One run: its replay server and tap, the client, the measures and the verdict."""
    served: list[Served] = []
    arrived = asyncio.Event()

    def on_served(record: Served) -> None:
        served.append(record)
        arrived.set()

    faults = FaultPlan.load(run.scenario.faults, None, run.seed)
    options = ReplayOptions(timing=Timing(speed=run.speed), faults=FirstResponses(
        **{each.name: getattr(faults, each.name) for each in dataclasses.fields(faults)},
        times=run.scenario.times))
    server = await ReplayServer.open(str(plan.cassette), options, on_served)
    wall = time.time()
    try:
        await server.start("127.0.0.1", 0)
        tap = await Tap(server.host, server.port).start()
        proxy = await _start_proxy(plan, tap) if plan.proxy else None
        try:
            client = await _client(plan, run, tap.base_url, proxy.url if proxy else None)
            await _settle(tap, served, arrived)
        finally:
            if proxy is not None:
                await asyncio.to_thread(proxy.stop)
            await tap.close()
    finally:
        await server.close()
    measures = measure(tap.exchanges, served, recorded)
    return RunResult(run, client, measures, served,
                     judge(measures, client, run.scenario.hypothesis), wall)


async def _start_proxy(plan: Plan, tap: Tap) -> InProcessProxy:
    """mitmproxy in front of the tap, rerouting every request to it (as `replay --proxy`
    does), so what the client asks of the proxy is measured like a base-URL client's."""
    from sse_recorder.mitm.inprocess import InProcessProxy

    plan.confdir.mkdir(parents=True, exist_ok=True)
    return await asyncio.to_thread(InProcessProxy, *tap.address, plan.confdir,
                                   PROXY_TIMEOUT_S, PROXY_TIMEOUT_S)


async def _settle(tap: Tap, served: list[Served], arrived: asyncio.Event) -> None:
    """Wait until the tap's connections ended and every request has its record (bounded)."""
    deadline = time.monotonic() + SETTLE
    await tap.wind_down(SETTLE)
    while len(served) < len(tap.exchanges) and (left := deadline - time.monotonic()) > 0:
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), left)


Progress = Callable[[RunResult, int, int], None]  # result, runs done, runs planned


async def run_experiment(plan: Plan, jobs: int = 1, only: Sequence[str] = (),
                         progress: Progress | None = None,
                         journal: Callable[[dict[str, Any]], None] | None = None,
                         recorded: Recorded | None = None) -> Experiment:
    """The baseline, then (if it held) every run of the plan, `jobs` at a time (`recorded`:
    what `prepare` read, when the caller already did)."""
    runs = plan.runs(tuple(only))
    if recorded is None:
        recorded = await prepare(plan)
    experiment = Experiment(plan)
    total = len(runs) + 1
    emit = journal or (lambda record: None)
    emit({"kind": "experiment", "plan": str(plan.path), "cassette": str(plan.cassette),
          "seed": plan.seed, "repeats": plan.repeats, "jobs": jobs, "runs": total,
          "started": round(time.time(), 3)})
    experiment.baseline = await run_one(plan, plan.baseline(), recorded)
    emit(experiment.baseline.record())
    if progress:
        progress(experiment.baseline, 1, total)
    if not experiment.baseline.held:
        experiment.stopped = (f"the {BASELINE} deviated without any fault: "
                              + "; ".join(experiment.baseline.reasons))
    else:
        gate = asyncio.Semaphore(jobs)

        async def one(run: Run) -> None:
            async with gate:
                result = await run_one(plan, run, recorded)
            experiment.results.append(result)
            emit(result.record())
            if progress:
                progress(result, len(experiment.results) + 1, total)

        await asyncio.gather(*(one(run) for run in runs))
    for (scenario, variant), results in experiment.cells().items():
        emit({"kind": "scenario", "scenario": scenario, "variant": variant,
              "held": all(r.held for r in results), "runs": len(results),
              "deviated": [r.run.id for r in results if not r.held]})
    emit({"kind": "verdict", "held": experiment.held, "stopped": experiment.stopped})
    return experiment

"""What `sse-recorder experiment` costs per run beyond the client's own time.

Why this shape: a run is a client process plus the runner's part (open the cassette, start
a replay server and a tap, relay, wait for the last record, measure, judge). The client
here makes one request through the tap and then sleeps, so it takes about 200 ms. The
baseline, measured in the same process and interleaved with the experiments, is that same
client started directly against one long-lived replay server: the runner's overhead per
run is an experiment's wall time per run minus the baseline's median. Runs per minute are
measured with --jobs 1 and --jobs 2 (on 2 cores the second should come close to double).

Usage: `python bench/experiment_bench.py [--quick] [--strict]` (--quick: 6 runs per
experiment instead of 20; --strict: exit 1 if the overhead target of 100 ms is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Summary, median, table  # noqa: E402

from sse_recorder.experiment.plan import load_plan  # noqa: E402
from sse_recorder.experiment.runner import run_experiment  # noqa: E402
from sse_recorder.replay.server import ReplayServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "examples" / "experiment" / "ci-logs.sqlite"
TARGET_MS = 100.0
CLIENT = textwrap.dedent('''\
    import http.client, os, time, urllib.parse
    started = time.monotonic()
    url = urllib.parse.urlsplit(os.environ["SSE_RECORDER_BASE_URL"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", "/ci/logs")
    assert conn.getresponse().status == 200
    conn.close()
    time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))
''')


def write_plan(directory: Path, runs: int) -> Path:
    shutil.copy(CASSETTE, directory / "ci.sqlite")
    (directory / "client.py").write_text(CLIENT)
    scenarios = "".join(f'[[scenario]]\nname = "s{i}"\n' for i in range(1, runs))
    plan = directory / "plan.toml"
    plan.write_text('cassette = "ci.sqlite"\ntimeout = "10s"\n[client]\n'
                    'command = ["{python}", "client.py"]\n[hypothesis]\nall_events = false\n'
                    + scenarios)
    return plan


async def direct_client(base_url: str, directory: Path) -> float:
    """The client alone: started and waited for, against a server already running."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "client.py", cwd=directory,
        env={**os.environ, "SSE_RECORDER_BASE_URL": base_url})
    if await process.wait() != 0:
        raise SystemExit("the benchmark client failed")
    return time.monotonic() - started


async def measure(directory: Path, runs: int) -> dict[str, float]:
    plan = load_plan(write_plan(directory, runs))
    server = await ReplayServer.open(str(directory / "ci.sqlite"))
    await server.start()
    direct: list[float] = []
    walls: dict[int, float] = {}
    try:
        for jobs in (1, 2):
            direct += [await direct_client(server.base_url, directory) for _ in range(3)]
            started = time.monotonic()
            experiment = await run_experiment(plan, jobs)
            walls[jobs] = time.monotonic() - started
            if not experiment.held:
                raise SystemExit("a benchmark run deviated: " + (experiment.stopped or "; ".join(
                    r for result in experiment.results for r in result.reasons)))
        direct += [await direct_client(server.base_url, directory) for _ in range(3)]
    finally:
        await server.close()
    client_s = median(direct)
    return {"client": client_s, "per_run_1": walls[1] / runs, "per_run_2": walls[2] / runs,
            "overhead_ms": (walls[1] / runs - client_s) * 1000,
            "rpm_1": 60 * runs / walls[1], "rpm_2": 60 * runs / walls[2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    runs = 6 if args.quick else 20  # the baseline counts as a run
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(measure(Path(tmp), runs))
    print(table(["measure", "value"], [
        ["client alone (median), ms", f"{figures['client'] * 1000:.0f}"],
        ["experiment wall per run, --jobs 1, ms", f"{figures['per_run_1'] * 1000:.0f}"],
        ["runner overhead per run, ms", f"{figures['overhead_ms']:.0f}"],
        ["runs per minute, --jobs 1", f"{figures['rpm_1']:.0f}"],
        ["runs per minute, --jobs 2", f"{figures['rpm_2']:.0f}"],
        ["--jobs 2 / --jobs 1", f"{figures['rpm_2'] / figures['rpm_1']:.2f}"],
        ["ideal runs per minute (client alone)", f"{60 / figures['client']:.0f}"],
    ]))
    summary = Summary()
    ok = figures["overhead_ms"] < TARGET_MS
    summary.add("runner overhead per run", f"{figures['overhead_ms']:.0f} ms (target < "
                f"{TARGET_MS:.0f} ms)", ok)
    summary.print()
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

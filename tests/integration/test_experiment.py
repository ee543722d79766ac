"""`sse-recorder experiment` against clients whose behaviour the test controls.

The cassette is the committed example recording (examples/experiment/ci-logs.sqlite: the
demo upstream's CI log, `retry: 1000` then 14 events with ids, recorded through the real
recorder). The controlled client is a standard-library script: after a broken stream it
waits exactly DELAY seconds, then reconnects with or without `Last-Event-ID`. Every run
has its own in-process replay server and tap on 127.0.0.1; the CLI runs as a real process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sse_recorder.experiment.plan import load_plan
from sse_recorder.experiment.report import html_report
from sse_recorder.experiment.runner import Experiment, prepare, run_experiment, run_one
from tests.helpers import SSE_RECORDER
from tests.integration.support import in_thread

pytestmark = pytest.mark.integration

# Runs go through `in_thread`: once the session `chromium` fixture is up, Playwright runs a
# loop in this thread.
EXAMPLES = Path(__file__).parents[2] / "examples" / "experiment"
TOLERANCE = 0.1  # seconds: a loaded 2-core box

CLIENT = textwrap.dedent('''\
    """Controlled client: MODE lei|no-lei, after a broken stream wait DELAY s, reconnect."""
    import http.client, os, sys, time, urllib.parse
    mode, delay = sys.argv[1], float(sys.argv[2])
    url = urllib.parse.urlsplit(os.environ["SSE_RECORDER_BASE_URL"])
    last = None
    for attempt in range(6):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        headers = {"Last-Event-ID": last} if last and mode == "lei" else {}
        try:
            conn.request("GET", "/ci/logs", headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                response.read()
            else:
                while line := response.readline():
                    if line.startswith(b"id:"):
                        last = line[3:].strip().decode()
                print("done", last)
                sys.exit(0)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(delay)
    sys.exit(1)
''')


def write_plan(directory: Path, scenarios: str, *, client: str = "lei 0.3",
               extra: str = "") -> Path:
    """A plan over a copy of the example cassette, with the controlled client."""
    shutil.copy(EXAMPLES / "ci-logs.sqlite", directory / "ci.sqlite")
    (directory / "client.py").write_text(CLIENT)
    plan = directory / "plan.toml"
    plan.write_text(textwrap.dedent(f'''\
        cassette = "ci.sqlite"
        seed = 11
        timeout = "6s"
        speed = 4.0
        {extra}
        [client]
        command = ["{{python}}", "client.py", {", ".join(f'"{w}"' for w in client.split())}]
        [hypothesis]
        retry_field = false
        tolerance = "{int(TOLERANCE * 1000)}ms"
        ''') + textwrap.dedent(scenarios))
    return plan


def experiment(plan: Path, jobs: int = 1) -> Experiment:
    return in_thread(run_experiment(load_plan(plan), jobs))


def test_reconnect_after_300_ms_is_measured_at_300_ms(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "reset"
        faults = ["drop:after_event=4,how=rst"]
        times = 1
        ''')
    result = experiment(plan)
    assert result.held, [r.reasons for r in result.results]
    run = result.results[0]
    assert run.measures.requests == 2
    (delay,) = run.measures.delays
    assert 0.3 - 0.01 <= delay <= 0.3 + TOLERANCE
    assert run.measures.resumed_with_id == 1 and run.measures.restarted == 0
    assert run.measures.steps[1].last_event_id == "4"
    assert run.measures.missed == [] and run.measures.duplicated == 0
    (recovery,) = run.measures.recoveries
    assert recovery >= delay
    assert [entry["type"] for entry in run.served[0].faults] == ["drop"]


def test_ignoring_retry_after_is_flagged(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "rate-limited"
        faults = ["http:status=429,retry_after=2"]
        times = 1
        ''', client="lei 0.1")
    result = experiment(plan)
    assert result.baseline is not None and result.baseline.held
    (run,) = result.results
    assert not run.held
    assert run.measures.retry_after_owed == 1
    assert any("after a 429 with Retry-After: 2" in reason for reason in run.reasons), run.reasons
    assert run.measures.delays[0] < 0.1 + TOLERANCE


def test_resuming_without_last_event_id_is_a_restart_with_duplicates(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "reset"
        faults = ["drop:after_event=5,how=rst"]
        times = 1
        ''', client="no-lei 0.05")
    (run,) = experiment(plan).results
    assert run.measures.restarted == 1
    assert run.measures.duplicated == 5  # events 1..5 served again
    assert run.measures.missed == []
    assert any("sent no Last-Event-ID (owed 5): restarted" in r for r in run.reasons)
    assert "5 events served twice" in run.reasons


def test_a_hanging_client_is_killed_at_the_timeout_and_counted(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "stall"
        faults = ["stall:after_event=3"]
        ''', extra='')
    text = plan.read_text().replace('timeout = "6s"', 'timeout = "1s"')
    plan.write_text(text)
    result = experiment(plan)
    (run,) = result.results
    assert run.client.timed_out and run.client.exit_status is None
    assert 1.0 <= run.client.duration < 1.0 + 1.0
    assert run.reasons[0].startswith("hung: killed at the timeout")
    assert not result.held


def _verdicts_and_logs(result: Experiment) -> list[tuple[str, bool, list[dict[str, Any]]]]:
    return sorted((r.run.id, r.held, r.fault_log()) for r in result.results)


def test_same_plan_and_seed_give_the_same_verdicts_and_fault_logs(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "flaky"
        faults = ["drop:per=event,p=0.2,how=rst"]
        times = 2
        [[scenario]]
        name = "restart"
        faults = ["drop:after_event=3"]
        times = 1
        hypothesis = { no_duplicates = true }
        ''', client="lei 0.02", extra="repeats = 2")
    first, second = experiment(plan, jobs=2), experiment(plan, jobs=1)
    assert _verdicts_and_logs(first) == _verdicts_and_logs(second)
    fired = [entry for r in first.results for record in r.served for entry in record.faults]
    assert fired, "the scenarios fired no fault"
    # --rerun reproduces one run exactly (a real CLI process)
    target = first.results[0]
    done = subprocess.run([SSE_RECORDER, "experiment", str(plan), "--rerun", target.run.id],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == (0 if target.held else 1), done.stderr
    log = json.loads(done.stdout.strip().splitlines()[-1])["fault_log"]
    assert log == target.fault_log()


def test_rerun_reproduces_a_failing_run(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "restart"
        faults = ["drop:after_event=3,how=rst"]
        times = 1
        ''', client="no-lei 0.02")
    loaded = load_plan(plan)
    run = loaded.run_by_id("restart#1")
    first = in_thread(_one(loaded, run))
    assert not first.held
    done = subprocess.run([SSE_RECORDER, "experiment", str(plan), "--rerun", "restart#1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "restart#1" in done.stdout and "restarted from the beginning" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1])["fault_log"] == first.fault_log()


async def _one(plan: Any, run: Any) -> Any:
    return await run_one(plan, run, await prepare(plan))


BAD_PLANS = {
    "unknown key": ("scenario", 'repeat = 2\n', "unknown key 'repeat' (did you mean repeats?)"),
    "bad fault spec": ("scenario", '[[scenario]]\nname = "x"\nfaults = ["drop:after_evnt=3"]\n',
                       "scenario x: drop:after_evnt=3: drop does not take after_evnt"),
    "missing cassette": ("cassette", "", "cassette"),
    "command not found": ("command", "", "client command not found: no-such-client-xyz"),
    # a traceback from shlex before (an audit found it)
    "unbalanced quote": ("quote", "", "No closing quotation"),
}


@pytest.mark.parametrize("case", BAD_PLANS)
def test_a_bad_plan_is_one_line_and_exit_2_before_any_run(tmp_path: Path, case: str) -> None:
    what, text, message = BAD_PLANS[case]
    plan = write_plan(tmp_path, "", extra=text if what == "scenario" else "")
    if what == "cassette":
        (tmp_path / "ci.sqlite").unlink()
    if what == "command":
        plan.write_text(plan.read_text().replace('"{python}", "client.py"',
                                                 '"no-such-client-xyz"'))
    if what == "quote":
        plan.write_text(re.sub(r"(?m)^command = .*$", "command = \"{python} 'unterminated\"",
                               plan.read_text()))
    done = subprocess.run([SSE_RECORDER, "experiment", str(plan)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sse-recorder: "), done.stderr
    assert message in lines[0]
    assert not (tmp_path / "plan-results").exists()  # no run started


def test_starter_plan_passes_the_resilient_client_and_fails_the_naive(tmp_path: Path) -> None:
    """The example plan (the starter plan, `--init`), two of its scenarios, both clients."""
    for name in ("plan.toml", "ci-logs.sqlite", "naive.py", "resilient.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    only = ["--only", "reset-mid-stream", "--only", "corrupt-json"]
    results = {}
    for client in ("resilient", "naive"):
        done = subprocess.run(
            [SSE_RECORDER, "experiment", "plan.toml", "--jobs", "2", "--client",
             f"{sys.executable} {client}.py", "--output", client, *only],
            cwd=tmp_path, capture_output=True, text=True, timeout=120)
        journal = [json.loads(line) for line in (tmp_path / client / "journal.jsonl")
                   .read_text().splitlines()]
        results[client] = (done, {r["scenario"]: r for r in journal if r["kind"] == "run"})
    done, runs = results["resilient"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/3] baseline#1: held" in done.stderr  # the progress line, one per run off a tty
    assert (tmp_path / "resilient" / "report.html").stat().st_size > 1000
    assert all(run["held"] for run in runs.values())
    done, runs = results["naive"]
    assert done.returncode == 1
    assert runs["baseline"]["held"]
    assert not runs["reset-mid-stream"]["held"] and not runs["corrupt-json"]["held"]
    assert any("never served" in r for r in runs["reset-mid-stream"]["reasons"])
    assert "reset-mid-stream" in done.stdout and "deviated" in done.stdout


def test_html_report_opens_in_chromium(tmp_path: Path, chromium: Any) -> None:
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "reset"
        faults = ["drop:after_event=4,how=rst"]
        times = 1
        speeds = [4, 8]
        [[scenario]]
        name = "restart-429"
        faults = ["http:status=429,retry_after=1"]
        times = 1
        ''', client="lei 0.05")
    result = in_thread(run_experiment(load_plan(plan), 2))
    report = tmp_path / "report.html"
    report.write_text(html_report(result))
    text = report.read_text()
    assert "<script" not in text and "src=" not in text
    page = chromium.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(report.as_uri())
    matrix = page.locator("#matrix")
    assert matrix.is_visible()
    assert matrix.locator("td.held").count() == 2  # reset at speed 4 and 8
    assert matrix.locator("td.deviated").count() == 1  # 429 ignored by a 50 ms client
    assert page.locator("svg").count() >= 4
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_openai_sdk_retry_after_compliance_is_measured(tmp_path: Path) -> None:
    """The official SDK (its own max_retries) against a 429 with Retry-After: 1."""
    for name in ("openai.toml", "openai_client.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    cassettes = tmp_path.parent / f"{tmp_path.name}-cassettes" / "test_vendor_streams"
    cassettes.mkdir(parents=True)
    shutil.copy(EXAMPLES.parent / "cassettes" / "test_vendor_streams" /
                "test_openai_chat_stream.sqlite", cassettes)
    plan = tmp_path / "openai.toml"
    plan.write_text(plan.read_text().replace("../cassettes/", f"../{tmp_path.name}-cassettes/"))
    loaded = load_plan(plan)
    result = in_thread(run_experiment(loaded, 1, ("rate-limited",)))
    (run,) = result.results
    assert run.held, run.reasons
    assert run.measures.retry_after_owed == 1 and run.measures.requests == 2
    assert run.measures.delays[0] >= 1.0 - TOLERANCE  # the SDK waited Retry-After
    assert "done: " in run.client.output


def test_init_writes_the_starter_plan_once(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sse_recorder.cli import main
    from sse_recorder.experiment.starter import starter_plan

    plan = tmp_path / "plan.toml"
    args = ["experiment", "--init", str(plan), "--init-cassette", "my.sqlite",
            "--client", "{python} my_client.py"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert plan.read_text() == starter_plan("my.sqlite", ("{python}", "my_client.py"))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "exists" in again.output


def test_a_run_matches_a_replay_process_with_the_same_faults_and_seed(tmp_path: Path) -> None:
    """The in-process server of a run answers as `sse-recorder replay` does: the same client
    against a real replay process with the run's faults, seed and speed leaves the same
    fault log."""
    from sse_recorder.replay.records import parse_records
    from sse_recorder.testing.processes import Process

    spec = "drop:per=event,p=0.3,how=rst,on_resume=none"
    plan = write_plan(tmp_path, f'''
        [[scenario]]
        name = "flaky"
        faults = ["{spec}"]
        ''', client="lei 0.02")
    loaded = load_plan(plan)
    run = loaded.run_by_id("flaky#1")
    in_process = in_thread(_one(loaded, run))
    log = tmp_path / "fault-log.jsonl"
    server = Process([SSE_RECORDER, "replay", str(tmp_path / "ci.sqlite"), "--fault", spec,
                      "--seed", str(run.seed), "--speed", "4", "--fault-log", str(log)],
                     tmp_path / "replay.txt")
    try:
        client = subprocess.run([sys.executable, "client.py", "lei", "0.02"], cwd=tmp_path,
                                env={**os.environ, "SSE_RECORDER_BASE_URL": server.url},
                                capture_output=True, text=True, timeout=30)
    finally:
        server.stop()
    assert client.returncode == 0, client.stdout + client.stderr
    by_process = [{k: v for k, v in record.record().items() if k != "time"}
                  for record in parse_records(log.read_text())]
    assert by_process == in_process.fault_log()
    assert any(record["faults"] for record in by_process)


PROXY_CLIENT = textwrap.dedent('''\
    """An unmodified-style client: the recorded host over HTTPS, through HTTPS_PROXY,
    trusting SSL_CERT_FILE (both set by the runner in proxy mode); resumes with
    Last-Event-ID after a broken stream."""
    import os, sys, time
    import httpx
    last = None
    for attempt in range(4):
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with httpx.Client(timeout=10) as client:  # trust_env: the proxy and the CA
                with client.stream("GET", "https://ci.example.test/ci/logs",
                                   headers=headers) as response:
                    for line in response.iter_lines():
                        if line.startswith("id:"):
                            last = line[3:].strip()
            print("done", last, os.environ["SSE_RECORDER_CA_PATH"])
            sys.exit(0)
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(1)
''')


def test_proxy_mode_gives_the_client_a_proxy_and_a_ca(tmp_path: Path) -> None:
    """`proxy = true`: the client asks for the recorded URL over HTTPS through mitmproxy,
    trusting its CA from the environment, and the runner measures it like any client."""
    plan = write_plan(tmp_path, '''
        [[scenario]]
        name = "reset"
        faults = ["drop:after_event=4,how=rst"]
        times = 1
        ''', extra=f'proxy = true\nconfdir = "{tmp_path / "mitmproxy"}"')
    (tmp_path / "client.py").write_text(PROXY_CLIENT)
    result = experiment(plan)
    assert result.baseline is not None and result.baseline.held, result.baseline.reasons
    (run,) = result.results
    assert run.held, run.reasons
    assert run.measures.requests == 2 and run.measures.resumed_with_id == 1
    assert run.measures.missed == [] and run.measures.duplicated == 0
    assert str(tmp_path / "mitmproxy" / "mitmproxy-ca-cert.pem") in run.client.output
    assert [entry["type"] for entry in run.served[0].faults] == ["drop"]

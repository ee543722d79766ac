"""`sse-recorder experiment`: run a client under a matrix of fault scenarios and judge it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import IO, Any

import click

from sse_recorder.cli.app import _fail, _run, main


@main.command()
@click.argument("plan", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--init", "init", is_flag=True,
              help="Write a starter plan to PLAN (one scenario per failure pattern) and stop.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Runs at a time (each has its own replay server).")
@click.option("--only", multiple=True, metavar="SCENARIO",
              help="Run only this scenario (repeatable); the baseline still runs first.")
@click.option("--rerun", metavar="RUN_ID",
              help="Run one run again exactly, from its seed (ids as the journal names them: "
                   "reset-mid-stream#1).")
@click.option("--client", "client_command", metavar="COMMAND",
              help="Run this client instead of the plan's [client] command (shell words).")
@click.option("--init-cassette", "init_cassette", metavar="PATH",
              help="With --init: the cassette the starter plan names.")
@click.option("--output", "output", type=click.Path(path_type=Path, file_okay=False),
              metavar="DIR",
              help="Where journal.jsonl and report.html go [default: PLAN's name + -results, "
                   "beside it].")
def experiment(plan: Path, init: bool, jobs: int, only: tuple[str, ...], rerun: str | None,
               client_command: str | None, init_cassette: str | None,
               output: Path | None) -> None:
    """Run the client of PLAN (TOML) under every scenario's faults and judge each run by the
    plan's hypothesis: the baseline without faults first, then scenario x variant x repeat.

    Prints a progress line, then a summary table; writes a JSON-lines journal and a
    self-contained HTML report. Exit status 0 only if every scenario held, 1 if any
    deviated, 2 for a bad plan.
    """
    if init:
        _init(plan, init_cassette, client_command)
        return
    from dataclasses import replace

    from sse_recorder.errors import ConfigError
    from sse_recorder.experiment.plan import load_plan

    try:
        loaded = load_plan(plan)
        if client_command is not None:
            from sse_recorder.experiment.plan import check_command, command_argv

            argv = command_argv(client_command, "--client")
            loaded = replace(loaded, client=replace(loaded.client, command=argv))
            check_command(loaded.client)
        if rerun is not None:
            loaded.run_by_id(rerun)
        loaded.runs(only)  # an unknown --only name fails here
    except ConfigError as exc:
        _fail(str(exc))
    if rerun is not None:
        sys.exit(_rerun(loaded, rerun))
    out = output or plan.with_name(plan.stem + "-results")
    sys.exit(_experiment(loaded, jobs, only, out))


def _init(plan: Path, cassette: str | None, client: str | None) -> None:
    from sse_recorder.experiment.starter import starter_plan

    if plan.exists():
        _fail(f"{plan} exists; --init writes a new plan only")
    text = starter_plan(cassette or "cassette.sqlite",
                        tuple(shlex.split(client)) if client else ("{python}", "client.py"))
    try:
        plan.write_text(text)
    except OSError as exc:
        _fail(f"cannot write {plan}: {exc.strerror}")
    click.echo(f"wrote {plan}: set its cassette and [client] command, then run "
               f"sse-recorder experiment {plan}")


class _Progress:
    """The live line: rewritten in place on a terminal, one line per run otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.held = self.deviated = 0

    def __call__(self, result: Any, done: int, total: int) -> None:
        self.held += result.held
        self.deviated += not result.held
        verdict = "held" if result.held else "deviated"
        line = (f"[{done}/{total}] {result.run.id}: {verdict}  "
                f"(so far {self.held} held, {self.deviated} deviated)")
        if self.live:
            self.stream.write("\r\x1b[2K" + line[:200])
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _experiment(plan: Any, jobs: int, only: tuple[str, ...], out: Path) -> int:
    from rich.console import Console

    from sse_recorder.experiment.report import html_report, summary_table
    from sse_recorder.experiment.runner import prepare, run_experiment

    recorded = _run(prepare(plan))  # a cassette that does not open fails before any output
    try:
        out.mkdir(parents=True, exist_ok=True)
        journal = (out / "journal.jsonl").open("w", encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror}")

    def write(record: dict[str, Any]) -> None:
        journal.write(json.dumps(record, ensure_ascii=False) + "\n")
        journal.flush()

    progress = _Progress(sys.stderr)
    with journal:
        experiment = _run(run_experiment(plan, jobs, only, progress, write, recorded))
    Console(width=max(100, Console().width)).print(summary_table(experiment))
    if experiment.stopped:
        click.echo(f"stopped: {experiment.stopped}")
    (out / "report.html").write_text(html_report(experiment), encoding="utf-8")
    click.echo(f"journal: {out / 'journal.jsonl'}\nreport: {out / 'report.html'}")
    return 0 if experiment.held else 1


def _rerun(plan: Any, run_id: str) -> int:
    from sse_recorder.experiment.runner import prepare, run_one

    run = plan.run_by_id(run_id)

    async def go() -> Any:
        return await run_one(plan, run, await prepare(plan))

    result = _run(go())
    click.echo(f"{run.id} (seed {run.seed}, speed {run.speed:g}, faults "
               f"{', '.join(run.scenario.faults) or 'none'}): "
               f"{'held' if result.held else 'deviated'}")
    for step in result.measures.steps:
        click.echo(f"  {step.started * 1000:7.0f} ms  {step.method} {step.target} -> "
                   f"{step.status or 'no head'}, {step.events} events, ended {step.ending}"
                   + (f", Last-Event-ID {step.last_event_id}" if step.last_event_id else "")
                   + (f", faults {', '.join(step.faults)}" if step.faults else ""))
    for reason in result.reasons:
        click.echo(f"  - {reason}")
    click.echo(json.dumps({"fault_log": result.fault_log()}))
    return 0 if result.held else 1

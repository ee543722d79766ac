"""An experiment's outputs: the summary table, and a self-contained HTML report.

The HTML report needs nothing at view time: inline CSS and SVG, no script, no fonts, no
links out. It holds the matrix of verdicts (scenario x variant), per scenario the recovery
times of its runs as a strip plot, and per run a timeline of its requests with fault markers.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence

from rich.table import Table

from sse_recorder.experiment.runner import Experiment, RunResult

VERDICT = {True: "held", False: "deviated"}
COLOUR = {True: "#2e7d32", False: "#c62828"}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _reasons(results: Sequence[RunResult]) -> list[str]:
    """The distinct reasons of a cell's runs, in order."""
    seen: list[str] = []
    for result in results:
        seen += [reason for reason in result.reasons if reason not in seen]
    return seen


def summary_table(experiment: Experiment) -> Table:
    table = Table(title=f"experiment {experiment.plan.path.name}: "
                        + ("every scenario held" if experiment.held else "deviations"))
    for column in ("scenario", "runs", "verdict", "reconnects", "recovery (median)",
                   "reasons"):
        table.add_column(column, overflow="fold")
    rows = [((experiment.baseline.run.scenario.name, ""), [experiment.baseline])
            ] if experiment.baseline else []
    for (scenario, variant), results in [*rows, *experiment.cells().items()]:
        held = all(result.held for result in results)
        recoveries = [t for result in results for t in result.measures.recoveries]
        table.add_row(
            scenario + (f" [{variant}]" if variant else ""),
            f"{sum(r.held for r in results)}/{len(results)} held",
            f"[{'green' if held else 'red'}]{VERDICT[held]}[/]",
            str(sum(r.measures.reconnections for r in results)),
            _ms(statistics.median(recoveries)) if recoveries else "-",
            "; ".join(_reasons(results)) or "-")
    return table


# -- HTML ------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
td.held{background:#e8f5e9}td.deviated{background:#ffebee}
.muted{color:#666}svg{display:block;margin:4px 0 12px}
details{margin:4px 0}summary{cursor:pointer}pre{white-space:pre-wrap;font-size:12px}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _matrix(experiment: Experiment) -> str:
    cells = experiment.cells()
    variants = sorted({variant for _, variant in cells}) or [""]
    scenarios = list(dict.fromkeys(scenario for scenario, _ in cells))
    head = "".join(f"<th>{_esc(v or 'runs')}</th>" for v in variants)
    rows = []
    for scenario in scenarios:
        tds = []
        for variant in variants:
            results = cells.get((scenario, variant))
            if not results:
                tds.append("<td></td>")
                continue
            held = all(r.held for r in results)
            title = "; ".join(_reasons(results))
            tds.append(f'<td class="{VERDICT[held]}" title="{_esc(title)}">{VERDICT[held]} '
                       f"({sum(r.held for r in results)}/{len(results)})</td>")
        rows.append(f"<tr><th>{_esc(scenario)}</th>{''.join(tds)}</tr>")
    return (f'<table id="matrix"><tr><th>scenario</th>{head}</tr>{"".join(rows)}</table>')


def _strip(values: Sequence[float], width: int = 420) -> str:
    """Recovery times as dots on an axis from 0 to the largest."""
    if not values:
        return '<span class="muted">no recovery measured</span>'
    top = max(max(values), 0.001)
    dots = "".join(f'<circle cx="{10 + (width - 20) * v / top:.1f}" cy="14" r="4" '
                   f'fill="#1565c0" fill-opacity="0.6"><title>{v * 1000:.0f} ms</title></circle>'
                   for v in values)
    return (f'<svg width="{width}" height="34" role="img" aria-label="recovery times">'
            f'<line x1="10" y1="24" x2="{width - 10}" y2="24" stroke="#999"/>{dots}'
            f'<text x="10" y="33" font-size="9">0</text>'
            f'<text x="{width - 60}" y="33" font-size="9">{top * 1000:.0f} ms</text></svg>')


def _timeline(result: RunResult, width: int = 640) -> str:
    """One bar per request (time runs left to right), a red mark where faults fired."""
    steps = result.measures.steps
    end = max([result.client.duration, *(s.ended or s.started for s in steps)], default=1.0)
    end = max(end, 0.001)
    scale = (width - 20) / end
    bars = []
    for row, step in enumerate(steps):
        y = 6 + row * 16
        x = 10 + step.started * scale
        w = max(2.0, ((step.ended or end) - step.started) * scale)
        colour = "#c62828" if step.disrupted else "#2e7d32"
        label = (f"{step.method} {step.target} -> {step.status or 'no head'}, "
                 f"{step.events} events, ended {step.ending}"
                 + (f", Last-Event-ID {step.last_event_id}" if step.last_event_id else "")
                 + (f", faults: {', '.join(step.faults)}" if step.faults else ""))
        bars.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="10" fill="{colour}" '
                    f'fill-opacity="0.7"><title>{_esc(label)}</title></rect>')
        if step.faults:
            bars.append(f'<path d="M{x:.1f} {y - 3} l4 -5 h-8 z" fill="#c62828">'
                        f"<title>{_esc(', '.join(step.faults))}</title></path>")
    axis = 12 + 16 * max(1, len(steps))
    bars.append(f'<line x1="10" y1="{axis - 4}" x2="{width - 10}" y2="{axis - 4}" '
                f'stroke="#999"/><text x="10" y="{axis + 8}" font-size="9">0 s</text>'
                f'<text x="{width - 50}" y="{axis + 8}" font-size="9">{end:.2f} s</text>')
    return (f'<svg width="{width}" height="{axis + 12}" role="img" aria-label="requests">'
            f'{"".join(bars)}</svg>')


def _run_details(result: RunResult) -> str:
    measures = result.measures
    facts = (f"seed {result.run.seed}, speed {result.run.speed:g}; exit "
             f"{'hung' if result.client.timed_out else result.client.exit_status} after "
             f"{result.client.duration:.2f}s; {measures.requests} requests; delays "
             f"{', '.join(_ms(d) for d in measures.delays) or '-'}; missed "
             f"{len(measures.missed)}, duplicated {measures.duplicated}")
    reasons = "".join(f"<li>{_esc(r)}</li>" for r in result.reasons)
    opened = "" if result.held else " open"  # a deviation shows its timeline at once
    return (f'<details{opened}><summary><b style="color:{COLOUR[result.held]}">'
            f"{VERDICT[result.held]}</b> {_esc(result.run.id)}</summary>"
            f'<p class="muted">{_esc(facts)}</p>{_timeline(result)}'
            + (f"<ul>{reasons}</ul>" if reasons else "")
            + f"<pre>{_esc(result.client.output[-600:])}</pre></details>")


def html_report(experiment: Experiment) -> str:
    plan = experiment.plan
    verdict = ("every scenario held" if experiment.held
               else experiment.stopped or "some scenarios deviated")
    parts = [f"<h1>Experiment {_esc(plan.path.name)}</h1>",
             f'<p>cassette {_esc(plan.cassette.name)}, client '
             f'<code>{_esc(" ".join(plan.client.command))}</code>, seed {plan.seed}, '
             f'{plan.repeats} repeat(s). <b style="color:{COLOUR[experiment.held]}">'
             f"{_esc(verdict)}</b></p>",
             "<h2>Verdicts</h2>", _matrix(experiment)]
    if experiment.baseline is not None:
        parts += ["<h2>Baseline</h2>", _run_details(experiment.baseline)]
    parts.append("<h2>Scenarios</h2>")
    for (scenario, variant), results in experiment.cells().items():
        recoveries = [t for r in results for t in r.measures.recoveries]
        parts.append(f"<h3>{_esc(scenario)}{_esc(f' [{variant}]' if variant else '')}</h3>"
                     f'<p class="muted">faults: {_esc(", ".join(results[0].run.scenario.faults))}'
                     f"</p><p>recovery times</p>{_strip(recoveries)}"
                     + "".join(_run_details(r) for r in results))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>Experiment {_esc(plan.path.name)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")

"""The report and diff pages: one self-contained HTML file each, plain SVG drawn here and a
few lines of inline JavaScript that show an event's payload when it is clicked. Nothing is
fetched when the page is viewed.

Big recordings stay light: a timeline lane with more than `MAX_MARKS` items is drawn as
`AGGREGATE_BINS` bars of counts, and only the first `MAX_PAYLOADS` events of an interaction
carry their payload (each cut at `PAYLOAD_CHARS`); the page says so where it happens.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from sse_recorder.model import Interaction, Outcome, RecordedEvent
from sse_recorder.record.redact import MARKER
from sse_recorder.report.diff import KINDS, Options, PairReport
from sse_recorder.report.timeline import (
    HEARTBEAT_TYPES,
    LONG_GAP_FACTOR,
    LONG_GAP_MS,
    Bin,
    Lane,
    Recording,
    Stats,
    histogram,
    lane_of,
    rates,
    stats,
    type_of,
)

MAX_MARKS = 1500  # items per timeline lane drawn one by one
AGGREGATE_BINS = 480  # bars of a lane with more
MAX_PAYLOADS = 500  # events per interaction whose payload the page carries
PAYLOAD_CHARS = 4000
BODY_CHARS = 4000
RATE_BINS = 40
WIDTH, LEFT, RIGHT = 960, 92, 16  # SVG user units
LANE = 24
HEARTBEAT_COLOUR = "#2a9d8f"
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#17becf", "#bcbd22", "#8c564b")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 48px;color:#222;background:#fff}
h1{font-size:20px;margin:16px 0 4px}h2{font-size:17px;margin:0 0 6px}
h3{font-size:14px;margin:14px 0 4px}
section.interaction{border-top:2px solid #ddd;padding-top:12px;margin-top:20px}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;
vertical-align:top;border-bottom:1px solid #eee}th{font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
dl.figures{display:grid;grid-template-columns:repeat(4,auto 1fr);gap:2px 10px;margin:6px 0}
dl.figures dt{color:#666}dl.figures dd{margin:0;font-variant-numeric:tabular-nums}
mark.redacted{background:#222;color:#fff;padding:0 3px;border-radius:3px;font-size:12px}
.note{color:#8a5300;background:#fff6e0;padding:3px 8px;border-radius:4px;display:inline-block;
margin:4px 0}code,pre{font:12px/1.35 ui-monospace,monospace}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:420px;margin:4px 0}
svg{display:block;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#444}
.lane-bg{fill:#fafafa}.axis{stroke:#bbb}.head{stroke:#555;stroke-dasharray:3 3}
.long-gap{fill:#ffd8d8}.chunk{fill:#999}.hb{fill:#fff;stroke:#2a9d8f;stroke-width:1.5}
.cm{fill:none;stroke:#888;stroke-width:1.2}.bin{fill:#4e79a7}.rate{fill:#59a14f}
.ending line{stroke-width:2.5}.ending-clean line{stroke:#2e7d32}
.ending-bad line{stroke:#c62828}.ending text{font-weight:700}
[data-ev]{cursor:pointer}tr[data-ev]:hover{background:#eef4ff}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.ending-tag{font-weight:700}.ending-tag.bad{color:#c62828}.ending-tag.clean{color:#2e7d32}
details>summary{cursor:pointer;color:#333}
.finding-kind{font:12px ui-monospace,monospace;color:#555}
ul.findings{margin:0;padding-left:16px}
"""

JS = """
(function(){
  var cache={};
  function payloads(id){
    if(!(id in cache)){cache[id]=JSON.parse(document.getElementById('payloads-'+id).textContent);}
    return cache[id];
  }
  function fill(pre,text){
    pre.textContent='';
    text.split('[REDACTED]').forEach(function(part,n){
      if(n){var m=document.createElement('mark');m.className='redacted';
        m.textContent='[REDACTED]';pre.appendChild(m);}
      pre.appendChild(document.createTextNode(part));
    });
  }
  document.addEventListener('click',function(e){
    var t=e.target.closest('[data-ev]');if(!t){return;}
    var sec=t.closest('section.interaction');
    var p=payloads(sec.dataset.id)[+t.getAttribute('data-ev')];
    var shown=p[3];
    try{shown=JSON.stringify(JSON.parse(p[3]),null,2);}catch(err){}
    var pre=sec.querySelector('pre.payload');
    var cut=p[4]?' · cut at '+p[4]+' characters':'';
    fill(pre,'event '+p[0]+' · '+p[1]+' · '+p[2].toFixed(3)+' ms'+cut+'\\n'+shown);
    pre.hidden=false;
  });
})();
"""

Scale = Callable[[float], float]  # ms -> x


def _esc(text: str) -> str:
    """Escaped text where every redacted value shows as a marker."""
    return html.escape(text).replace(MARKER, f'<mark class="redacted">{MARKER}</mark>')


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms"


def _size(n: float) -> str:
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:.0f} B"


def _script_json(value: object) -> str:
    """JSON safe inside a <script> element (no `</script>`, no `<!--`)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + f"<script>{JS}</script></body></html>\n")


class Colours:
    """One colour per event type across the whole page, in order of first appearance."""

    def __init__(self, recordings: Iterable[Recording]):
        self.of: dict[str, str] = {}
        for rec in recordings:
            for event in rec.events:
                if lane_of(event) is Lane.EVENT and type_of(event) not in self.of:
                    self.of[type_of(event)] = PALETTE[len(self.of) % len(PALETTE)]

    def __call__(self, kind: str) -> str:
        return self.of.get(kind, HEARTBEAT_COLOUR if kind in HEARTBEAT_TYPES else "#777")


# -- the report -------------------------------------------------------------------------------


def report_page(cassette: str, recordings: Sequence[Recording]) -> str:
    colours = Colours(recordings)
    measured = [(rec, stats(rec)) for rec in recordings]
    parts = [f"<h1>sse-recorder report: {html.escape(cassette)}</h1>",
             f"<p>{len(recordings)} interaction{'s' if len(recordings) != 1 else ''}, "
             f"generated {datetime.now().astimezone().isoformat(timespec='seconds')}. "
             "Times are from the request. Click an event (on a timeline or in a table) to "
             "see its payload.</p>"]
    if len(recordings) > 1:
        parts.append(_index(measured))
    parts += [_interaction(rec, figures, colours) for rec, figures in measured]
    if not recordings:
        parts.append("<p>The cassette holds no interactions.</p>")
    return _page(f"sse-recorder report: {cassette}", parts)


def _ending_class(i: Interaction) -> str:
    return "clean" if i.outcome is Outcome.CLEAN else "bad"


def _ending_tag(i: Interaction) -> str:
    extra = "" if i.complete else " (incomplete)"
    return (f'<span class="ending-tag {_ending_class(i)}">'
            f"{html.escape(i.outcome.value)}{extra}</span>")


def _index(measured: Sequence[tuple[Recording, Stats]]) -> str:
    rows = ["<h2>Interactions</h2><table class=\"index\"><tr><th>id</th><th>request</th>"
            "<th>status</th><th class=num>events</th><th class=num>size</th>"
            "<th class=num>head</th><th class=num>duration</th><th>ending</th></tr>"]
    for rec, s in measured:
        i = rec.interaction
        rows.append(
            f"<tr><td><a href=\"#i{i.id}\">#{i.id}</a></td>"
            f"<td>{html.escape(i.request.method)} {_esc(i.request.url)}</td>"
            f"<td>{i.response.status if i.response else 'none'}</td>"
            f"<td class=num>{i.event_count:,}</td><td class=num>{_size(s.body_size)}</td>"
            f"<td class=num>{_ms(s.ttfb_ms)}</td><td class=num>{_ms(s.duration_ms)}</td>"
            f"<td>{_ending_tag(i)}</td></tr>")
    return "".join(rows) + "</table>"


def _interaction(rec: Recording, s: Stats, colours: Colours) -> str:
    i = rec.interaction
    status = f"{i.response.status} {i.response.reason}".strip() if i.response else "no response"
    carried = rec.events[:MAX_PAYLOADS]
    payloads = []
    for e in carried:
        cut = len(e.data) > PAYLOAD_CHARS
        payloads.append([e.seq, _label(e), round(e.offset_ns / 1e6, 3), e.data[:PAYLOAD_CHARS],
                         PAYLOAD_CHARS if cut else 0])
    redacted = _redactions(rec)
    parts = [
        f'<section class="interaction" id="i{i.id}" data-id="{i.id}">',
        f"<h2>#{i.id} {html.escape(i.request.method)} {_esc(i.request.url)} → "
        f"{html.escape(status)}</h2>",
        _figures(rec, s),
        f"<p>{redacted}</p>" if redacted else "",
        "<h3>Timeline</h3>", _timeline(rec, s, colours),
        '<pre class="payload" hidden></pre>',
        _gap_section(s), _rate_section(rec), _counts(s, colours),
        _request(rec), _events_table(rec, len(carried)),
        f'<script type="application/json" id="payloads-{i.id}">{_script_json(payloads)}'
        "</script></section>",
    ]
    return "".join(parts)


def _label(e: RecordedEvent) -> str:
    return "comment" if e.kind == "comment" else type_of(e)


def _redactions(rec: Recording) -> str:
    """Where redacted values are, so that a reader knows what the cassette does not hold."""
    i = rec.interaction
    where = []
    if MARKER in i.request.url:
        where.append("URL")
    names = [n for n, v in i.request.headers if MARKER in v]
    if names:
        where.append("request headers " + ", ".join(names))
    if MARKER.encode() in i.request.body:
        where.append("request body")
    if i.response and any(MARKER in v for _, v in i.response.headers):
        where.append("response headers")
    events = sum(MARKER in e.data for e in rec.events)
    if events:
        where.append(f"{events} event{'s' if events != 1 else ''}")
    if not where:
        return ""
    return (f'<mark class="redacted">{MARKER}</mark> values redacted when recording in: '
            + html.escape("; ".join(where)))


def _figures(rec: Recording, s: Stats) -> str:
    i = rec.interaction
    seconds = s.duration_ms / 1000
    per_s = (f"{i.event_count / seconds:.1f}" if seconds > 0 else "–")
    rows = [
        ("time to first byte", _ms(s.ttfb_ms)), ("first event", _ms(s.first_event_ms)),
        ("duration", _ms(s.duration_ms)), ("ending", _ending_tag(i)),
        ("events", f"{i.event_count:,}"),
        ("heartbeats / comments", f"{s.heartbeats:,} / {s.comments:,}"),
        ("chunks", f"{i.chunk_count:,}"), ("body", _size(s.body_size)),
        (f"median gap ({s.gaps_of})", _ms(s.gap_median_ms)), ("p95 gap", _ms(s.gap_p95_ms)),
        ("longest gap", _ms(s.gap_max_ms)), ("long gaps", str(len(s.long_gaps))),
        ("events / s", per_s),
        ("bytes / s", _size(s.body_size / seconds) if seconds > 0 else "–"),
    ]
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    error = f"<p>error: {_esc(i.error)}</p>" if i.error else ""
    return f'<dl class="figures">{cells}</dl>{error}'


# -- the timeline ------------------------------------------------------------------------------


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _tick_label(ms: float, step: float) -> str:
    if step >= 1000:
        return f"{ms / 1000:g} s"
    return f"{ms:g} ms" if step >= 1 else f"{ms:.2f} ms"


def _timeline(rec: Recording, s: Stats, colours: Colours) -> str:
    i = rec.interaction
    span = max(s.duration_ms, 1e-3)
    inner = WIDTH - LEFT - RIGHT

    def x(ms: float) -> float:
        return round(LEFT + ms / span * inner, 2)

    lanes: list[tuple[str, list[tuple[float, RecordedEvent | None, int]]]] = [
        ("chunks", [(o / 1e6, None, n) for n, (o, size) in
                    enumerate(zip(rec.chunk_offsets_ns, rec.chunk_sizes, strict=True))])]
    by_lane: dict[Lane, list[tuple[float, RecordedEvent | None, int]]] = {lane: [] for lane in Lane}
    for n, e in enumerate(rec.events):
        by_lane[lane_of(e)].append((e.offset_ns / 1e6, e, n))
    if i.is_sse or rec.events:
        lanes.append(("events", by_lane[Lane.EVENT]))
    lanes += [(name, by_lane[kind]) for name, kind in
              (("heartbeats", Lane.HEARTBEAT), ("comments", Lane.COMMENT)) if by_lane[kind]]
    top = 22
    height = top + LANE * len(lanes) + 8
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" role="img" '
           f'aria-label="timeline of interaction {i.id}">']
    step = _nice_step(span)
    t = 0.0
    while t <= span + 1e-9:
        out.append(f'<line class="axis" x1="{x(t)}" x2="{x(t)}" y1="{top - 4}" '
                   f'y2="{height - 6}" stroke-opacity="0.35"/>'
                   f'<text x="{x(t)}" y="{top - 8}" text-anchor="middle">'
                   f"{_tick_label(t, step)}</text>")
        t += step
    notes = []
    for n, (name, items) in enumerate(lanes):
        y = top + n * LANE
        out.append(f'<rect class="lane-bg" x="{LEFT}" y="{y}" width="{inner}" '
                   f'height="{LANE - 4}"/><text x="4" y="{y + 14}">{name}</text>')
        if name == "events":
            out += [f'<rect class="long-gap" x="{x(a)}" y="{y}" width="{max(x(b) - x(a), 1)}" '
                    f'height="{LANE - 4}"><title>long gap: {_ms(b - a)}</title></rect>'
                    for a, b in s.long_gaps]
        if len(items) > MAX_MARKS:
            out.append(_aggregated(name, items, y, span, x, colours))
            notes.append(f"{len(items):,} {name} as {AGGREGATE_BINS} bars of counts")
        else:
            out += [_mark(name, at, event, index, y, x, colours, rec) for at, event, index in items]
    if i.head_offset_ns is not None:
        head = i.head_offset_ns / 1e6
        out.append(f'<line class="head" x1="{x(head)}" x2="{x(head)}" y1="{top - 4}" '
                   f'y2="{height - 6}"><title>response head at {_ms(head)}</title></line>')
    end = x(s.duration_ms)
    out.append(f'<g class="ending ending-{_ending_class(i)}" '
               f'data-outcome="{i.outcome.value}"><line x1="{end}" x2="{end}" y1="{top - 4}" '
               f'y2="{height - 6}"/><text x="{min(end, WIDTH - 2)}" y="{height - 1}" '
               f'text-anchor="end">{html.escape(i.outcome.value)}</text>'
               f"<title>ended {html.escape(i.outcome.value)} at {_ms(s.duration_ms)}</title>"
               "</g></svg>")
    if s.long_gaps:
        notes.append(f"shaded: gaps of at least {LONG_GAP_MS:g} ms and {LONG_GAP_FACTOR:g}× "
                     "the median")
    if notes:
        out.append(f'<p class="note">{html.escape("; ".join(notes))}.</p>')
    return "".join(out)


def _mark(name: str, at: float, event: RecordedEvent | None, index: int, y: float,
          x: Scale, colours: Colours, rec: Recording) -> str:
    cx = x(at)
    clickable = f' data-ev="{index}"' if event is not None and index < MAX_PAYLOADS else ""
    if event is None:
        size = rec.chunk_sizes[index]
        return (f'<rect class="chunk" x="{cx}" y="{y + 3}" width="1.5" height="{LANE - 10}">'
                f"<title>chunk {index} at {_ms(at)}, {_size(size)}</title></rect>")
    title = f"<title>{html.escape(_label(event))} #{event.seq} at {_ms(at)}</title>"
    if name == "events":
        return (f'<rect class="ev" x="{cx - 1}" y="{y + 2}" width="3" height="{LANE - 8}" '
                f'fill="{colours(type_of(event))}"{clickable}>{title}</rect>')
    shape = "hb" if name == "heartbeats" else "cm"
    return (f'<circle class="{shape}" cx="{cx}" cy="{y + (LANE - 4) / 2}" r="4"{clickable}>'
            f"{title}</circle>")


def _aggregated(name: str, items: Sequence[tuple[float, RecordedEvent | None, int]],
                y: float, span: float, x: Scale, colours: Colours) -> str:
    """A lane too full to draw item by item: bars of counts per time slice, coloured by
    the commonest event type of the slice."""
    width = span / AGGREGATE_BINS
    counts = [0] * AGGREGATE_BINS
    kinds: list[Counter[str]] = [Counter() for _ in range(AGGREGATE_BINS)]
    for at, event, _ in items:
        slot = min(AGGREGATE_BINS - 1, int(at / width))
        counts[slot] += 1
        if event is not None:
            kinds[slot][type_of(event)] += 1
    top = max(counts)
    out = [f'<g class="aggregated" data-lane="{name}" data-items="{len(items)}">']
    for n, count in enumerate(counts):
        if not count:
            continue
        h = max(1.0, (LANE - 6) * count / top)
        common = kinds[n].most_common(1)
        fill = colours(common[0][0]) if name == "events" and common else "#999"
        out.append(f'<rect x="{x(n * width)}" y="{y + LANE - 4 - h:.1f}" '
                   f'width="{max(x((n + 1) * width) - x(n * width), 1):.2f}" height="{h:.1f}" '
                   f'fill="{fill}"><title>{count} {name}, {_ms(n * width)}–'
                   f"{_ms((n + 1) * width)}</title></rect>")
    return "".join(out) + "</g>"


# -- gaps, rates, counts, request, events -------------------------------------------------------


def _edge(ms: float) -> tuple[str, str]:
    return (f"{ms / 1000:g}", "s") if ms >= 1000 else (f"{ms:g}", "ms")


def _bin_label(b: Bin) -> str:
    """`10–20 ms`, `500 ms–1 s`, `≥ 60 s`: short enough to sit under a bar."""
    lo, lo_unit = _edge(b.lo_ms)
    if math.isinf(b.hi_ms):
        return f"≥ {lo} {lo_unit}"
    hi, hi_unit = _edge(b.hi_ms)
    return f"{lo}–{hi} {hi_unit}" if lo_unit == hi_unit else f"{lo} {lo_unit}–{hi} {hi_unit}"


def _gap_section(s: Stats) -> str:
    bins = histogram(s.gaps_ms)
    head = f"<h3>Gaps between {s.gaps_of}</h3>"
    if not bins:
        return head + f'<p class="gap-histogram-empty">No gaps: fewer than two {s.gaps_of}.</p>'
    height, bar_top = 120, 16
    slot = min(90.0, (WIDTH - LEFT - RIGHT) / len(bins))
    top = max(b.count for b in bins)
    out = [f'<svg class="gap-histogram" viewBox="0 0 {WIDTH} {height + 20}" width="{WIDTH}" '
           f'height="{height + 20}" role="img" aria-label="gap histogram">'
           f'<text x="4" y="{bar_top + 10}">{len(s.gaps_ms):,} gaps</text>']
    for n, b in enumerate(bins):
        h = (height - bar_top) * b.count / top
        x = LEFT + n * slot
        hi = "inf" if math.isinf(b.hi_ms) else f"{b.hi_ms:g}"
        out.append(f'<rect class="bin" data-lo="{b.lo_ms:g}" data-hi="{hi}" '
                   f'data-count="{b.count}" x="{x + 2:.1f}" y="{height - h:.1f}" '
                   f'width="{slot - 4:.1f}" height="{h:.1f}"><title>{b.count} gaps '
                   f"{_bin_label(b)}</title></rect>"
                   f'<text x="{x + slot / 2:.1f}" y="{height - h - 3:.1f}" '
                   f'text-anchor="middle">{b.count}</text>'
                   f'<text x="{x + slot / 2:.1f}" y="{height + 14}" text-anchor="middle">'
                   f"{html.escape(_bin_label(b))}</text>")
    return head + "".join(out) + "</svg>"


def _rate_section(rec: Recording) -> str:
    slices = rates(rec, RATE_BINS)
    if not slices:
        return ""
    height = 70
    slot = (WIDTH - LEFT - RIGHT) / len(slices)
    sse = rec.interaction.is_sse
    values = [r.events_per_s if sse else r.bytes_per_s for r in slices]
    top = max(values) or 1
    what = "events / s" if sse else "bytes / s"
    out = [f"<h3>{what} over the response ({len(slices)} slices of "
           f"{_ms(slices[0].end_ms - slices[0].start_ms)})</h3>",
           f'<svg class="rates" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
           f'height="{height}" role="img" aria-label="rates">'
           f'<text x="4" y="14">peak {top:,.0f}</text>']
    for n, (r, v) in enumerate(zip(slices, values, strict=True)):
        h = (height - 10) * v / top
        out.append(f'<rect class="rate" x="{LEFT + n * slot + 1:.1f}" y="{height - h:.1f}" '
                   f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}"><title>'
                   f"{_ms(r.start_ms)}–{_ms(r.end_ms)}: {r.events_per_s:,.1f} events/s, "
                   f"{_size(r.bytes_per_s)}/s</title></rect>")
    return "".join(out) + "</svg>"


def _counts(s: Stats, colours: Colours) -> str:
    if not (s.counts or s.comments):
        return ""
    total = sum(s.counts.values()) or 1
    rows = ["<h3>Events per type</h3><table class=\"counts\"><tr><th>type</th>"
            "<th class=num>events</th><th class=num>share</th></tr>"]
    for kind, n in s.counts.items():
        rows.append(f'<tr><td><span class="swatch" style="background:{colours(kind)}"></span>'
                    f"{html.escape(kind)}</td><td class=num>{n:,}</td>"
                    f"<td class=num>{100 * n / total:.1f}%</td></tr>")
    if s.comments:
        rows.append(f"<tr><td>(comments)</td><td class=num>{s.comments:,}</td><td></td></tr>")
    return "".join(rows) + "</table>"


def _headers_table(headers: Sequence[tuple[str, str]]) -> str:
    if not headers:
        return "<p>none</p>"
    return ("<table class=\"headers\">" + "".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td><code>{_esc(v)}</code></td></tr>"
        for k, v in headers) + "</table>")


def _body(body: bytes) -> str:
    if not body:
        return "<p>no body</p>"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<p>{_size(len(body))} of binary data</p>"
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    cut = "" if len(text) <= BODY_CHARS else f"\n… cut at {BODY_CHARS} characters"
    return f"<pre>{_esc(text[:BODY_CHARS])}{cut}</pre>"


def _request(rec: Recording) -> str:
    i = rec.interaction
    response = "<p>no response head</p>"
    if i.response is not None:
        response = (f"<p>{html.escape(i.response.http_version)} {i.response.status} "
                    f"{html.escape(i.response.reason)}</p>"
                    + _headers_table(i.response.headers))
    return (f"<details><summary>Request: {html.escape(i.request.method)} "
            f"{_esc(i.request.url)}</summary>{_headers_table(i.request.headers)}"
            f"{_body(i.request.body)}</details>"
            f"<details><summary>Response head</summary>{response}</details>")


def _events_table(rec: Recording, carried: int) -> str:
    if not rec.events:
        return ""
    note = ("" if carried == len(rec.events) else
            f'<p class="note">The first {carried:,} of {len(rec.events):,} events and comments '
            "are listed with their payloads (`sse-recorder show --json` has every one).</p>")
    rows = [f"{note}<details><summary>Events ({len(rec.events):,})</summary>"
            '<table class="events"><tr><th class=num>seq</th><th class=num>ms</th>'
            "<th>type</th><th>id</th><th>data</th></tr>"]
    for n, e in enumerate(rec.events[:carried]):
        preview = " ".join(e.data.split())
        preview = preview if len(preview) <= 100 else preview[:97] + "…"
        rows.append(f'<tr data-ev="{n}"><td class=num>{e.seq}</td>'
                    f"<td class=num>{e.offset_ns / 1e6:.3f}</td>"
                    f"<td>{html.escape(_label(e))}</td><td>{html.escape(e.id or '')}</td>"
                    f"<td><code>{_esc(preview)}</code></td></tr>")
    return "".join(rows) + "</table></details>"


# -- the diff page ----------------------------------------------------------------------------


def diff_page(a: str, b: str, reports: Sequence[PairReport], options: Options) -> str:
    drifted = [r for r in reports if r.findings]
    count = sum(len(r.findings) for r in reports)
    parts = [f"<h1>sse-recorder diff</h1><p>A: <code>{html.escape(a)}</code><br>"
             f"B: <code>{html.escape(b)}</code><br>paired by {options.pair_by}; "
             f"{len(reports)} pairs, {count} finding{'s' if count != 1 else ''} in "
             f"{len(drifted)} of them.</p>",
             "<table class=\"pairs\"><tr><th>A</th><th>B</th><th>request</th>"
             "<th>findings</th></tr>"]
    for r in reports:
        ids = [f"#{p.interaction.id}" if p else "–" for p in (r.pair.a, r.pair.b)]
        found = "".join(f'<li><span class="finding-kind">{f.kind}</span> '
                        f"{_esc(f.message())}</li>" for f in r.findings)
        parts.append(f"<tr><td>{ids[0]}</td><td>{ids[1]}</td><td>{_esc(r.request)}</td><td>"
                     + (f'<ul class="findings">{found}</ul>' if found else "none")
                     + "</td></tr>")
    parts.append("</table><h3>Finding kinds</h3><table>" + "".join(
        f"<tr><td class=\"finding-kind\">{k}</td><td>{html.escape(cls.about)}</td></tr>"
        for k, cls in KINDS.items()) + "</table><h3>Timing thresholds</h3><table>" + "".join(
        f"<tr><td class=\"finding-kind\">{k}</td><td>{html.escape(str(t))}</td></tr>"
        for k, t in options.thresholds.items()) + "</table>")
    return _page("sse-recorder diff", parts)

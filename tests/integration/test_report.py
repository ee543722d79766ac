"""`sse-recorder report` opened in the system's headless Chromium, and `show`/`ls` sketches.

The cassette is real: demo upstream streams recorded through a real `sse-recorder record`
(a redacted Authorization header, a redacted token inside an event, heartbeats and
comments, a TCP reset, a JSON body). The page is checked as a browser renders it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sse_recorder.cli import main
from sse_recorder.model import Outcome
from sse_recorder.report.timeline import HEARTBEAT_TYPES
from sse_recorder.wire.probe import probe
from tests.helpers import SSE_RECORDER, RecordDemo
from tests.integration.support import in_thread

pytestmark = pytest.mark.integration

MESSAGES = json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Say hello"}]}).encode()
TRAFFIC: list[tuple[str, str, bytes, list[tuple[str, str]]]] = [
    ("GET", "/v1/models", b"", []),
    ("POST", "/v1/messages", MESSAGES, [("Content-Type", "application/json"),
                                         ("Authorization", "Bearer sk-demo-secret")]),
    ("GET", "/heartbeat", b"", []),
    ("GET", "/patterns", b"", []),
    ("GET", "/reset", b"", []),
]


def send_traffic(url: str) -> None:
    async def go() -> None:
        for method, path, body, headers in TRAFFIC:
            await probe(url + path, method=method, body=body, headers=headers)

    in_thread(go())  # a loop of its own: Playwright's sync API runs one here


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own."""
    return subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True, timeout=60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (click's runner, on a thread: an event loop may be
    running on this one), without an interpreter start per call."""
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, main, list(args)).result()
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def cassette(record_demo: RecordDemo) -> Path:
    return record_demo("report", send_traffic)


@pytest.fixture(scope="module")
def shown(cassette: Path) -> dict[str, Any]:
    done = cli("show", str(cassette), "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.fixture(scope="module")
def page_path(cassette: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = run("report", str(cassette), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    return out


def expected_gaps(interaction: dict[str, Any]) -> list[float]:
    """The gaps the report must count, computed here from `show --json`: between events
    (comments and heartbeat events excluded) of an event stream, between chunks otherwise."""
    if interaction["sse"]:
        times = [e["offset_ms"] for e in interaction["events"]
                 if e["kind"] == "event" and (e["type"] or "message") not in HEARTBEAT_TYPES]
    else:
        times = [c["offset_ms"] for c in interaction["chunks"]]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_the_report_renders_in_chromium_as_the_cassette_says(
        chromium: Any, page_path: Path, shown: dict[str, Any], tmp_path: Path) -> None:
    interactions = shown["interactions"]
    assert len(interactions) == len(TRAFFIC)
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())

    # one timeline per interaction, each in its own section, with its ending marked
    assert page.locator("svg.timeline").count() == len(interactions)
    assert page.locator("table.index tr").count() == len(interactions) + 1
    for interaction in interactions:
        section = page.locator(f"section#i{interaction['id']}")
        assert section.locator("svg.timeline").count() == 1
        ending = section.locator("svg.timeline g.ending")
        assert ending.get_attribute("data-outcome") == interaction["outcome"]
    assert page.locator('g.ending[data-outcome="reset"]').count() == 1
    assert page.locator('g.ending[data-outcome="clean"]').count() == len(interactions) - 1

    # redaction: the Authorization header of the Messages request, the token event
    messages = page.locator("section#i2")
    assert messages.locator("mark.redacted").count() >= 2  # the note and the header value
    assert "Authorization" in messages.inner_text()
    assert "sk-demo-secret" not in page.content()
    patterns = page.locator("section#i4")
    assert "event" in patterns.locator("p", has_text="values redacted").inner_text()

    # the gap histogram counts exactly the cassette's gaps, bin by bin
    for interaction in interactions:
        gaps = expected_gaps(interaction)
        bins = page.locator(f"section#i{interaction['id']} svg.gap-histogram rect.bin")
        found = [(float(b.get_attribute("data-lo")), float(b.get_attribute("data-hi")),
                  int(b.get_attribute("data-count"))) for b in bins.all()]
        assert sum(n for _, _, n in found) == len(gaps), interaction["url"]
        for lo, hi, n in found:
            assert n == sum(lo <= g < hi for g in gaps), (interaction["url"], lo, hi)

    # heartbeats and comments in lanes of their own
    heartbeat = page.locator("section#i3 svg.timeline")
    assert heartbeat.locator("circle.hb").count() == 3  # ping, heartbeat, keep-alive
    assert heartbeat.locator("circle.cm").count() == 2  # two `: heartbeat` comments

    # a payload on demand, pretty-printed, with its redactions still marked
    messages.locator("svg.timeline rect.ev").first.click()
    payload = messages.locator("pre.payload")
    assert payload.is_visible()
    assert '"type": "message_start"' in payload.inner_text()
    token = page.locator("section#i4 tr[data-ev]", has_text="token-refresh")
    page.locator("section#i4 details", has_text="Events").locator("summary").click()
    token.click()
    assert page.locator("section#i4 pre.payload mark.redacted").count() >= 1

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    context.close()
    assert errors == []
    assert all(url.startswith("file://") for url in requests)  # nothing fetched


async def build_big(path: Path, events: int) -> None:
    """One SSE interaction of `events` events (a comment every 100th), one chunk each,
    2 ms apart, written with the store API: recording would add nothing here."""
    from sse_recorder.model import RecordedRequest, ResponseHead
    from sse_recorder.store.cassette import (
        Cassette,
        EndUpdate,
        HeadUpdate,
        InteractionStart,
        WriteBatch,
    )

    cassette = await Cassette.open_for_recording(path)
    iid = cassette.allocate_id()
    batch = WriteBatch(
        starts=[InteractionStart(iid, 0.0, RecordedRequest("GET", "http://up.test/big", ()))],
        heads=[HeadUpdate(iid, ResponseHead(200, "OK", (("content-type", "text/event-stream"),)),
                          1_000_000, True)])
    for n in range(events):
        at = 2_000_000 * (n + 1)
        comment = n % 100 == 99
        data = "tick" if comment else json.dumps({"n": n, "text": "x" * (n % 7)})
        raw = f": {data}\n\n" if comment else f"event: delta\ndata: {data}\n\n"
        batch.chunks.append((iid, n, at, raw.encode()))  # a reader derives the events
    batch.ends.append(EndUpdate(iid, True, Outcome.CLEAN, 2_000_000 * (events + 1), None))
    await cassette.write(batch)
    await cassette.finish_recording()
    await cassette.close()


def test_a_big_recording_is_aggregated_and_says_so(chromium: Any, tmp_path: Path) -> None:
    cassette, out = tmp_path / "big.sqlite", tmp_path / "big.html"
    in_thread(build_big(cassette, 5000))
    assert cli("report", str(cassette), "-o", str(out)).returncode == 0
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    lane = page.locator('g.aggregated[data-lane="events"]')
    assert lane.get_attribute("data-items") == "4950"
    assert "4,950 events as 480 bars of counts" in page.locator("p.note").first.inner_text()
    assert page.locator("svg.timeline rect.ev").count() == 0  # no per-event marks
    assert page.locator("tr[data-ev]").count() == 500
    assert "The first 500 of 5,000 events" in page.inner_text("body")
    bins = page.locator("svg.gap-histogram rect.bin").all()
    assert sum(int(b.get_attribute("data-count")) for b in bins) == 4949
    assert out.stat().st_size < 400_000
    page.close()
    assert errors == []


def test_show_sketches_the_timeline_and_ls_sums_the_cassette(
        cassette: Path, shown: dict[str, Any]) -> None:
    done = cli("show", str(cassette), "3")
    assert done.returncode == 0, done.stderr
    activity = next(line for line in done.stdout.splitlines() if "activity |" in line)
    bar = activity.split("|")[1]
    assert len(bar) == 60 and bar.strip() and "ended clean" in activity
    gaps = next(line for line in done.stdout.splitlines() if line.startswith("  gaps "))
    assert f"{len(expected_gaps(shown['interactions'][2]))} gaps" in gaps
    piped = run("ls", str(cassette))
    assert piped.returncode == 0 and piped.stderr == ""
    assert "interactions (" not in piped.stdout  # a script reads the table alone
    summary = on_a_terminal("ls", str(cassette)).splitlines()[-1]
    events = sum(i["event_count"] for i in shown["interactions"])
    assert summary.startswith(f"{cassette}: 5 interactions (4 SSE), {events} events, ")
    assert "endings 4 clean, 1 reset, recorded over " in summary


def on_a_terminal(*args: str) -> str:
    """What the command prints when its stdout is a terminal (a pty)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "250", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    with subprocess.Popen([SSE_RECORDER, *args], stdout=follower, stderr=subprocess.PIPE,
                          env=env) as process:
        os.close(follower)
        output = b""
        while True:
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not piece:
                break
            output += piece
        assert process.wait(30) == 0
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;]*m", "", output.decode()).replace("\r\n", "\n")


@pytest.mark.parametrize("argv, message", [
    (("report", "{tmp}/missing.sqlite"), "missing.sqlite: no such cassette"),
    (("report", "{garbage}"), "not"),
    (("report", "{cassette}", "99"), "no interaction 99"),
    (("report", "{cassette}", "-o", "{tmp}/no/such/dir/r.html"), "cannot write"),
    (("report", "{cassette}", "-o", "{cassette}"), "is the cassette"),
    (("report", "postgresql://u@127.0.0.1:9/db?cassette=c"), "name the page with -o"),
])
def test_bad_input_is_one_line_and_exit_2(argv: tuple[str, ...], message: str,
                                          cassette: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    filled = [a.format(tmp=tmp_path, cassette=cassette, garbage=garbage) for a in argv]
    done = cli(*filled)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("sse-recorder: ")
    assert message.format(tmp=tmp_path) in done.stderr
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("argv", [
    ("report", "{a}", "-o", "{a}"),
    ("diff", "{a}", "{b}", "--html", "{b}"),  # it replaced B with the page (an audit found)
    ("diff", "{a}", "{b}", "--html", "{a}"),
    ("diff", "{a}", "{b}", "--html", "{link}"),  # a hard link to A is A
    ("export", "{a}", "--format", "sse", "-o", "{link}"),
    ("replay", "{a}", "--fault-log", "{a}"),  # the log's lines appended to the database
])
def test_no_output_option_writes_over_a_cassette(argv: tuple[str, ...], cassette: Path,
                                                 tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    a.write_bytes(cassette.read_bytes())
    b.write_bytes(cassette.read_bytes())
    os.link(a, tmp_path / "link.sqlite")
    before = a.read_bytes()
    done = cli(*(arg.format(a=a, b=b, link=tmp_path / "link.sqlite") for arg in argv))
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "is the cassette" in done.stderr
    assert a.read_bytes() == before and b.read_bytes() == before


@pytest.mark.parametrize("into", ["{a}", "./{name}", "{link}"])
def test_copy_into_its_own_source_is_refused(into: str, cassette: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A hard link to the source ended in 'disk I/O error' (two WAL files for one
    database); the same cassette by another name is the source."""
    a = tmp_path / "a.sqlite"
    a.write_bytes(cassette.read_bytes())
    os.link(a, tmp_path / "link.sqlite")
    monkeypatch.chdir(tmp_path)
    before = a.read_bytes()
    done = cli("copy", str(a), into.format(a=a, name=a.name, link=tmp_path / "link.sqlite"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is the source" in done.stderr
    assert a.read_bytes() == before

"""The report page as text: escaping, redaction marks, and the limits that keep big
recordings light, each on both sides of its boundary (the browser checks are in
tests/integration/test_report.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_recorder.model import Outcome
from sse_recorder.report.diff import Options, diff
from sse_recorder.report.html import MAX_MARKS, MAX_PAYLOADS, PAYLOAD_CHARS, diff_page, report_page
from tests.unit.test_report_timeline import event, recording


class Tags(HTMLParser):
    """Counts start tags by (tag, class); fails on nothing, so checks are explicit."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def count(self, tag: str, cls: str) -> int:
        return sum(t == tag and cls in (a.get("class") or "").split() for t, a in self.found)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


@given(st.text(max_size=40))
@settings(max_examples=60)
def test_event_data_cannot_break_out_of_the_page(text: str) -> None:
    data = f"</script><script>alert(1)</script>{text}<!--"
    page = report_page("c.sqlite", [recording([event(0, 1, data), event(1, 2, "{}")])])
    tags = parsed(page)
    assert [t for t, a in tags.found if t == "script"] == ["script", "script"]  # ours only
    payloads = json.loads(tags.scripts[0])
    assert payloads[0][3] == data[:PAYLOAD_CHARS]


def test_redacted_values_are_marked_wherever_they_are() -> None:
    rec = recording([event(0, 1, '{"token": "[REDACTED]"}')],
                    url="http://up.test/s?key=[REDACTED]")
    page = report_page("c.sqlite", [rec])
    assert page.count('<mark class="redacted">[REDACTED]</mark>') >= 3  # note, URL, event row
    assert "URL; 1 event" in page


@pytest.mark.parametrize("events", [MAX_MARKS, MAX_MARKS + 1])
def test_a_lane_is_aggregated_only_past_its_limit(events: int) -> None:
    rec = recording([event(n, n) for n in range(events)])
    tags = parsed(report_page("c.sqlite", [rec]))
    marks, bars = tags.count("rect", "ev"), tags.count("g", "aggregated")
    assert (marks, bars) == ((events, 0) if events <= MAX_MARKS else (0, 2))  # events, chunks


@pytest.mark.parametrize("events", [MAX_PAYLOADS, MAX_PAYLOADS + 1])
def test_payloads_are_carried_up_to_their_limit_and_the_page_says_so(events: int) -> None:
    rec = recording([event(n, n) for n in range(events)])
    page = report_page("c.sqlite", [rec])
    tags = parsed(page)
    assert len(json.loads(tags.scripts[0])) == min(events, MAX_PAYLOADS)
    assert ("The first 500 of 501" in page) is (events > MAX_PAYLOADS)
    clickable = {int(a["data-ev"] or -1) for _, a in tags.found if "data-ev" in a}
    assert max(clickable) == min(events, MAX_PAYLOADS) - 1


def test_one_timeline_and_one_ending_per_interaction_and_an_index() -> None:
    recs = [recording([event(0, 1)], iid=1), recording([event(0, 1)], iid=2,
                                                       outcome=Outcome.RESET)]
    page = report_page("c.sqlite", recs)
    tags = parsed(page)
    assert tags.count("svg", "timeline") == 2 and tags.count("table", "index") == 1
    endings = [a["data-outcome"] for t, a in tags.found if t == "g" and "data-outcome" in a]
    assert endings == ["clean", "reset"]
    single = parsed(report_page("c.sqlite", recs[:1]))
    assert single.count("table", "index") == 0


def test_the_diff_page_lists_every_finding() -> None:
    a = recording([event(0, 1, '{"a": 1}', type="x")])
    b = recording([event(0, 1, '{"b": "s"}', type="x"), event(1, 2, type="y")])
    found = diff([a], [b], Options())
    page = diff_page("a.sqlite", "b.sqlite", found, Options())
    messages = re.findall(r'<span class="finding-kind">([a-z-]+)</span>', page)
    assert messages == [f.kind for r in found for f in r.findings]
    assert sorted(messages) == ["field-added", "field-removed", "type-added"]

"""Import and export where mitmproxy is not installed: every format but flows works, and
the flows format is the CLI's one-line error naming the install that has it."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO
from tests.unit.test_core_without_mitmproxy import run_python


def test_flows_need_mitmproxy_and_the_other_formats_do_not(tmp_path: Path) -> None:
    done = run_python(f"""
        from sse_recorder.cli import main
        for argv in (["import", {str(REPO / "cassettes" / "heartbeats.sse")!r}, "-o", "c.sqlite"],
                     ["export", "c.sqlite", "--format", "har", "-o", "c.har"],
                     ["export", "c.sqlite", "--format", "flows", "-o", "c.flows"],
                     ["import", "c.har", "--format", "flows", "-o", "d.sqlite"]):
            try:
                main(argv)
            except SystemExit as exc:
                print("exit", exc.code, flush=True)
        assert not any(m == "mitmproxy" or m.startswith("mitmproxy.") for m in sys.modules)
    """, tmp_path)
    assert done.stdout.splitlines() == ["exit 0", "exit 0", "exit 2", "exit 2"], done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("sse-recorder: ")]
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert all("the flows format needs mitmproxy" in e and "sse-recorder[record]" in e
               for e in errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.har", "c.sqlite"]

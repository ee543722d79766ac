"""The pytest plugin runs a plan's scenarios as parametrized tests of one test function."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_experiment import write_plan

pytestmark = pytest.mark.integration

TEST_FILE = textwrap.dedent('''\
    import pytest

    @pytest.mark.sse_experiment("plan.toml")
    def test_client_copes(sse_scenario):
        assert sse_scenario.held, sse_scenario.explain()
    ''')


def test_each_scenario_is_one_test(tmp_path: Path) -> None:
    write_plan(tmp_path, '''
        [[scenario]]
        name = "reset"
        faults = ["drop:after_event=4,how=rst"]
        times = 1
        [[scenario]]
        name = "rate-limited"
        faults = ["http:status=429,retry_after=1"]
        times = 1
        ''', client="lei 0.05")
    (tmp_path / "test_plan.py").write_text(TEST_FILE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:hypothesispytest", "-rA", "-q", "test_plan.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "PASSED test_plan.py::test_client_copes[baseline]" in out
    assert "PASSED test_plan.py::test_client_copes[reset]" in out
    assert "FAILED test_plan.py::test_client_copes[rate-limited]" in out
    assert "after a 429 with Retry-After: 1" in out

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


def failing_run(directory: Path) -> str:
    """pytest -rA of test_plan.py in `directory`, which fails (some test does); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:hypothesispytest", "-rA", "-q", "test_plan.py"],
        cwd=directory, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout


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
    out = failing_run(tmp_path)
    assert "PASSED test_plan.py::test_client_copes[baseline]" in out
    assert "PASSED test_plan.py::test_client_copes[reset]" in out
    assert "FAILED test_plan.py::test_client_copes[rate-limited]" in out
    assert "after a 429 with Retry-After: 1" in out


def test_a_bad_plan_fails_its_test_in_one_line_and_the_others_run(tmp_path: Path) -> None:
    """It stopped the whole collection with a traceback through pytest's internals (an
    audit found it); so did sse_scenario without the marker."""
    (tmp_path / "plan.toml").write_text('cassette = "ci.sqlite"\ntimout = 3\n')
    (tmp_path / "test_plan.py").write_text(TEST_FILE + textwrap.dedent('''\
        def test_without_marker(sse_scenario):
            pass

        def test_other():
            pass
        '''))
    out = failing_run(tmp_path)
    assert "PASSED test_plan.py::test_other" in out
    assert "test_client_copes[bad-plan]" in out and "unknown key 'timout'" in out
    assert "sse_scenario needs @pytest.mark.sse_experiment(PLAN)" in out
    assert "Traceback" not in out and "During handling" not in out

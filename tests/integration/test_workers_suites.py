"""The replay suites again, every replay process on `--workers 2`.

Not the whole suites (that would double their time): a representative subset, run by a
nested pytest with `--replay-workers 2` (tests/conftest.py), which sets SSE_RECORDER_WORKERS
so every `sse-recorder replay` those tests start is a supervisor and two workers. In-process
servers are unaffected: workers exist only in the command.

Left out on purpose, because they test what each worker keeps to itself (README, "Scale"),
the response numbers seeded faults are drawn from, across connections the kernel spreads
over the workers: test_faults.py's test_same_seed_same_faults_other_seed_other_faults and
test_openai_sdk_retries_after_retry_after (both fail with two workers, as documented).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Two groups, each a nested pytest of its own: one test of a minute could not be shared
# between the suite's two xdist workers, and held up its end.
SUBSETS = {
    "replay": ["tests/integration/test_replay.py"],  # every client, ending, resume and match
    "faults": [
        *(f"tests/integration/test_faults.py::{name}" for name in (
            "test_drop_rst_and_fin_are_told_apart",
            "test_reconnecting_client_gets_every_event_once",
            "test_refuse_resets_before_any_response",
            "test_openai_sdk_raises_rate_limit_error",
            "test_injected_events_and_retry_reach_httpx_sse",
        )),
        # the workers share the stderr nobody reads
        "tests/integration/test_hostile_http.py::"
        "test_a_replay_process_with_an_unread_stderr_keeps_serving",
    ],
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_the_replay_suites_pass_with_two_workers(subset: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--replay-workers", "2", *SUBSETS[subset]],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "replay workers: 2" in output  # the option took effect
    assert " passed" in output and " failed" not in output and " error" not in output

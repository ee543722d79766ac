"""What a serving process does for its own speed: the log written in batches, the garbage
collector kept out of the streams' schedule."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sse_recorder.model import Outcome
from sse_recorder.replay.records import Answer, BackgroundLog, Served


class CountingStream(io.StringIO):
    """A stream that counts the writes it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_a_burst_of_lines_goes_out_whole_in_order_and_in_few_writes() -> None:
    stream = CountingStream()
    log = BackgroundLog(stream)
    lines = [f"GET /stream/{i} -> #1 200, ended clean" for i in range(500)]
    for line in lines:
        log(line)
    log.close()
    assert stream.getvalue() == "".join(f"{line}\n" for line in lines)
    assert log.dropped == 0
    assert stream.writes < len(lines) / 2  # batched: one wake-up and write per burst


def test_lines_logged_after_a_quiet_spell_are_written_too() -> None:
    stream = CountingStream()
    log = BackgroundLog(stream)
    log("first")
    deadline = time.monotonic() + 10
    while stream.getvalue() != "first\n":  # the thread wrote it and waits again
        assert time.monotonic() < deadline
        time.sleep(0.001)
    log("second")
    log.close()
    assert stream.getvalue() == "first\nsecond\n"


def test_a_serving_process_freezes_its_start_up_objects_and_makes_full_passes_rare() -> None:
    script = (
        "import gc, json\n"
        "from sse_recorder.replay.server import FULL_COLLECTION_EVERY, settle_for_serving\n"
        "before = gc.get_threshold()\n"
        "settle_for_serving()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(),\n"
        "                  'frozen': gc.get_freeze_count(), 'every': FULL_COLLECTION_EVERY}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True,
                                    text=True, check=True).stdout)
    assert out["frozen"] > 1000  # the modules loaded to serve are out of every pass
    assert out["after"][:2] == out["before"][:2]  # young collections unchanged
    assert out["after"][2] == out["every"] > out["before"][2]


def test_a_record_given_its_time_is_the_record_with_that_time() -> None:
    served = Served("GET", "/x", 3, 200, Outcome.RESET, Answer.FAULT, "why", 7, 0.0,
                    ({"type": "drop"},))
    assert served.ended_at(12.5) == dataclasses.replace(served, time=12.5)


LOG_SCRIPT = """
import sys, threading
from sse_recorder.model import Outcome
from sse_recorder.replay.records import Served, log_to_stderr
log = log_to_stderr(lambda served: f"{served.method} {served.target}")
log(Served("GET", "/now", 1, 200, Outcome.CLEAN))
threads = sorted(t.name for t in threading.enumerate())
print(",".join(threads), flush=True)
if len(sys.argv) > 1:  # the log file, read back before anything else could write it
    print(repr(open(sys.argv[1]).read()), flush=True)
"""


def test_a_log_into_a_file_is_written_at_once_without_a_thread(tmp_path: Path) -> None:
    log_file = tmp_path / "replay.log"
    with log_file.open("w") as stderr:
        out = subprocess.run([sys.executable, "-c", LOG_SCRIPT, str(log_file)],
                             stdout=subprocess.PIPE, stderr=stderr, text=True,
                             check=True).stdout.splitlines()
    assert "sse-recorder-log" not in out[0]
    assert out[1] == repr("GET /now\n")  # in the file as soon as the call returned


def test_a_log_into_a_pipe_has_a_thread_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-c", LOG_SCRIPT], capture_output=True, text=True,
                          check=True)
    assert "sse-recorder-log" in done.stdout  # a pipe nobody reads must never block serving
    assert done.stderr == "GET /now\n"  # and what was queued is written at exit


MIXING_SCRIPT = """
import sys
from sse_recorder.replay.records import BackgroundLog
log = BackgroundLog(flush_timeout=60)
for i in range(3000):
    log(sys.argv[1] * 300)
log.close()
"""


def test_two_processes_logging_to_one_pipe_never_mix_within_a_line() -> None:
    """Workers share the stderr pipe; a reader slower than them keeps it full. Each line is
    under PIPE_BUF, so the kernel keeps it whole, as long as no write holds more than that."""
    read, write = os.pipe()
    writers = [subprocess.Popen([sys.executable, "-c", MIXING_SCRIPT, letter], stderr=write)
               for letter in "ab"]
    os.close(write)
    data = b""
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while piece := pipe.read(512):  # a slow reader: the pipe stays full
            data += piece
    assert [writer.wait(60) for writer in writers] == [0, 0]
    lines = data.decode().splitlines()
    assert len(lines) == 6000
    assert all(line in ("a" * 300, "b" * 300) for line in lines), "lines mixed"

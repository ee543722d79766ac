"""What the replay server did, as records: one `Served` per request it answered.

The record is the interface between the server and everything that reports on it: the
stderr log (a human line, or the record itself as a JSON line with `--log-format json`),
the `--fault-log` file (the same JSON lines), the pytest plugin and the demo. Nobody parses
the human line; it is only a rendering of the record.
"""

from __future__ import annotations

import atexit
import collections
import io
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

from sse_recorder.model import Outcome


class Answer(StrEnum):
    """Where the response came from."""

    RECORDED = "recorded"  # a recorded response, faulted or not
    FAULT = "fault"  # a fault answered instead (an HTTP error, a refused connection, no head)
    UNMATCHED = "unmatched"  # no recording matches (404), or all were used up (409)
    BAD_REQUEST = "bad-request"  # the request was not valid HTTP/1.1 (4xx, then close)
    ERROR = "error"  # the server could not answer (a damaged cassette, a bug): 500, or a cut


@dataclass(frozen=True, slots=True)
class Served:
    """One request the server answered: what matched, what was sent and how it ended."""

    method: str
    target: str
    interaction_id: int | None
    status: int  # 0: no response head was sent
    outcome: Outcome
    answer: Answer = Answer.RECORDED
    explanation: str = ""  # why a request was unmatched or bad
    number: int = 0  # the server's response counter (what fault seeds are drawn from)
    time: float = 0.0  # wall clock when the answer ended
    faults: tuple[dict[str, Any], ...] = ()  # what fired, as `FaultRun.log` says
    # `--workers`: which one answered (1..N; None: a single process). Each worker numbers
    # its own responses, so in their shared logs (worker, number) names a response.
    worker: int | None = None

    def ended_at(self, when: float, worker: int | None = None) -> Served:
        """This record with its time and worker (what `dataclasses.replace` does, at a fifth
        of the cost: it runs once per request)."""
        return Served(self.method, self.target, self.interaction_id, self.status, self.outcome,
                      self.answer, self.explanation, self.number, when, self.faults, worker)

    def record(self) -> dict[str, Any]:
        """The JSON-lines form shared by `--log-format json` and `--fault-log` (`worker`
        only from a worker of `--workers`)."""
        record = {
            "number": self.number, "time": round(self.time, 6), "method": self.method,
            "target": self.target, "interaction": self.interaction_id, "status": self.status,
            "outcome": self.outcome.value, "answer": self.answer.value,
            "explanation": self.explanation, "faults": list(self.faults),
        }
        if self.worker is not None:
            record["worker"] = self.worker
        return record

    def json_line(self) -> str:
        return json.dumps(self.record(), ensure_ascii=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Served:
        return cls(
            method=record["method"], target=record["target"],
            interaction_id=record["interaction"], status=record["status"],
            outcome=Outcome(record["outcome"]), answer=Answer(record["answer"]),
            explanation=record.get("explanation", ""), number=record.get("number", 0),
            time=record.get("time", 0.0), faults=tuple(record.get("faults", ())),
            worker=record.get("worker"),
        )

    def line(self) -> str:
        """The human log line."""
        if self.answer in (Answer.UNMATCHED, Answer.BAD_REQUEST, Answer.ERROR):
            why = "; ".join(part.strip() for part in self.explanation.splitlines()[1:])
            if self.answer is not Answer.UNMATCHED:
                why = self.explanation.strip()
            return f"{self.method} {self.target} -> {self.status} {self.answer.value}" + (
                f" ({why})" if why else ""
            )
        fired = sorted({entry["type"] for entry in self.faults})
        return (f"{self.method} {self.target} -> #{self.interaction_id} {self.status}, "
                f"ended {self.outcome.value}" + (f" [faults: {', '.join(fired)}]" if fired else ""))

    def log_line(self) -> str:
        """The line `replay` logs: `line()`, a preflight's answer, and the CORS note of an
        answer a page could not read."""
        if self.answer is Answer.RECORDED and self.interaction_id is None:  # a preflight
            return f"{self.method} {self.target} -> {self.status} ({self.explanation})"
        line = self.line()
        if self.explanation and self.answer in (Answer.RECORDED, Answer.FAULT):
            line += f" ({self.explanation})"
        return line


def parse_records(text: str) -> list[Served]:
    """JSON lines back into records; other lines (warnings, tracebacks) are skipped."""
    served = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                served.append(Served.from_record(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    return served


PIPE_BUF = 4096  # POSIX: a write to a pipe of at most this many bytes is never interleaved


class BackgroundLog:
    """Log lines written by a thread of their own, so that the server never waits for its
    log: a stderr pipe nobody reads fills up, and a write to it then blocks (a server that
    printed each line itself froze after about 1,390 requests).

    Lines wait in a queue of `size`; when it is full, a line is dropped and counted, and the
    count is written, once, as soon as a line gets through again. At exit, whatever is queued
    is written for at most `flush_timeout` seconds (a blocked pipe cannot hold the exit)."""

    def __init__(
        self, stream: IO[str] | None = None, size: int = 10_000, flush_timeout: float = 2.0
    ) -> None:
        self.stream = stream
        self.dropped = 0
        self._reported = 0
        self._size = size
        self._flush_timeout = flush_timeout
        # A deque and an Event rather than a queue.Queue: an append takes no lock, and the
        # Event is set only when the thread may be asleep (measured: a Queue's put cost the
        # server about 5 us a request).
        self._lines: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._write, name="sse-recorder-log",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __call__(self, line: str) -> None:
        """Queue a line; never blocks."""
        if len(self._lines) >= self._size:
            self.dropped += 1
            return
        self._lines.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def _write(self) -> None:
        """Lines in batches: whatever was queued while this thread slept or wrote goes out in
        one write, so a burst of requests costs one write, not one per line. Never delayed
        on purpose: the pytest plugin reads a proxy's records from this log as they come."""
        while True:
            self._wake.wait()
            self._wake.clear()  # before taking the lines: one queued after is not missed
            lines = [self._lines.popleft() for _ in range(len(self._lines))]
            if lines:
                self._put(lines)
            if self._closing and not self._lines:
                return

    def _put(self, lines: list[str]) -> None:
        stream = self.stream or sys.stderr  # resolved late: tests swap sys.stderr
        dropped = self.dropped
        notice = 0  # the first write holds the dropped-lines notice, not a log line
        if dropped > self._reported:
            lines = [f"sse-recorder: {dropped - self._reported} log lines dropped "
                     "(the log was not being read)", *lines]
            self._reported, notice = dropped, 1
        encoding = getattr(stream, "encoding", None) or "utf-8"
        errors = getattr(stream, "errors", None) or "strict"
        for count, text in _writes(lines, encoding, errors):
            try:
                stream.write(text)
                stream.flush()  # one write(2) each: a line-buffered stream holds nothing back
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost
                self.dropped += count - notice
            notice = 0

    def close(self) -> None:
        """Write what is queued (for at most `flush_timeout` s) and stop the thread."""
        atexit.unregister(self.close)
        self._closing = True
        self._wake.set()
        self._thread.join(self._flush_timeout)


def _writes(lines: list[str], encoding: str, errors: str) -> Iterator[tuple[int, str]]:
    """Whole lines grouped into writes of at most PIPE_BUF bytes (a longer line alone), with
    how many lines each holds: the kernel writes no more than that to a pipe in one piece,
    and a larger write, split while the pipe is full, lets other workers' lines in between
    (about 4 % of the lines of two workers on a slowly read pipe, in one write per batch)."""
    group: list[str] = []
    size = 0
    for line in lines:
        text = f"{line}\n"
        length = len(text) if text.isascii() else len(text.encode(encoding, errors))
        if group and size + length > PIPE_BUF:
            yield len(group), "".join(group)
            group, size = [], 0
        group.append(text)
        size += length
    if group:
        yield len(group), "".join(group)


def log_to_stderr(render: Callable[[Served], str]) -> Callable[[Served], None]:
    """An `on_served` callback writing `render(served)` to stderr without ever blocking.

    Into a regular file (`2> replay.log`), a write never waits for a reader, so each line is
    written at once, one write(2) a line; anything else (a pipe, a terminal) gets a
    `BackgroundLog`, whose thread costs a wake-up a request (measured: about 40 us of system
    CPU, a sixth of what a request costs)."""
    if _is_regular_file(sys.stderr):
        fd = sys.stderr.fileno()
        return lambda served: _write_line(fd, render(served))
    log = BackgroundLog()
    return lambda served: log(render(served))


def _is_regular_file(stream: IO[str]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False  # no file descriptor (a test's StringIO), or a closed one


def _write_line(fd: int, line: str) -> None:
    """One line to stderr in one write(2) (workers share the file: lines never mix), past
    sys.stderr's buffer: it is line-buffered, so it never holds a whole line back."""
    try:
        os.write(fd, f"{line}\n".encode("utf-8", "backslashreplace"))
    except OSError:  # a full disk or a closed stream: the replay goes on
        pass

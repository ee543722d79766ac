"""What the replay server did, as records: one `Served` per request it answered.

The record is the interface between the server and everything that reports on it: the
stderr log (a human line, or the record itself as a JSON line with `--log-format json`),
the `--fault-log` file (the same JSON lines), the pytest plugin and the demo. Nobody parses
the human line; it is only a rendering of the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sse_recorder.model import Outcome


class Answer(StrEnum):
    """Where the response came from."""

    RECORDED = "recorded"  # a recorded response, faulted or not
    FAULT = "fault"  # a fault answered instead (an HTTP error, a refused connection, no head)
    UNMATCHED = "unmatched"  # no recording matches (404), or all were used up (409)
    BAD_REQUEST = "bad-request"  # the request was not valid HTTP/1.1 (4xx, then close)


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

    def record(self) -> dict[str, Any]:
        """The JSON-lines form shared by `--log-format json` and `--fault-log`."""
        return {
            "number": self.number, "time": round(self.time, 6), "method": self.method,
            "target": self.target, "interaction": self.interaction_id, "status": self.status,
            "outcome": self.outcome.value, "answer": self.answer.value,
            "explanation": self.explanation, "faults": list(self.faults),
        }

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
        )

    def line(self) -> str:
        """The human log line."""
        if self.answer in (Answer.UNMATCHED, Answer.BAD_REQUEST):
            why = "; ".join(part.strip() for part in self.explanation.splitlines()[1:])
            if self.answer is Answer.BAD_REQUEST:
                why = self.explanation.strip()
            return f"{self.method} {self.target} -> {self.status} {self.answer.value}" + (
                f" ({why})" if why else ""
            )
        fired = sorted({entry["type"] for entry in self.faults})
        return (f"{self.method} {self.target} -> #{self.interaction_id} {self.status}, "
                f"ended {self.outcome.value}" + (f" [faults: {', '.join(fired)}]" if fired else ""))


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

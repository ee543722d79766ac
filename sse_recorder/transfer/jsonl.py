"""JSON lines for scripts: one record per interaction, per chunk and per event.

Records, each one line, in cassette order (an interaction, then its chunks, then its events):
- `{"record": "interaction", "id", "started_at" (epoch seconds), "method", "url",
  "http_version", "headers": [[NAME, VALUE]...], "body": {"text" (null unless UTF-8),
  "base64"}, "response": null | {"status", "reason", "http_version", "headers"},
  "head_offset_ns", "outcome", "end_offset_ns", "error"}`
- `{"record": "chunk", "interaction", "seq", "offset_ns", "size", "text" (null unless
  UTF-8), "base64"}`
- `{"record": "event", "interaction", "seq", "kind" (event|comment), "type", "data", "id",
  "retry", "offset_ns", "first_chunk", "last_chunk"}`
Events are the cassette's own (derived from the chunks when recording): an import reads
interactions and chunks, and the recorder's session derives the events again.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, NoReturn

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.transfer import TransferError
from sse_recorder.transfer.exchange import Exchange, Imported, head_text


def _body(data: bytes) -> dict[str, Any]:
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"text": text, "base64": base64.b64encode(data).decode("ascii")}


def dump(exchanges: Sequence[Exchange]) -> bytes:
    lines = []
    for iid, exchange in enumerate(exchanges, 1):
        request, response = exchange.request, exchange.response
        lines.append({
            "record": "interaction", "id": iid, "started_at": exchange.started_at,
            "method": request.method, "url": request.url, "http_version": request.http_version,
            "headers": [list(h) for h in request.headers], "body": _body(request.body),
            "response": None if response is None else {
                "status": response.status, "reason": response.reason,
                "http_version": response.http_version,
                "headers": [list(h) for h in response.headers]},
            "head_offset_ns": exchange.head_offset_ns, "outcome": exchange.outcome.value,
            "end_offset_ns": exchange.end_offset_ns, "error": exchange.error,
        })
        lines += [{"record": "chunk", "interaction": iid, "seq": seq, "offset_ns": offset,
                   "size": len(data), **_body(data)}
                  for seq, (offset, data) in enumerate(exchange.chunks)]
        lines += [{"record": "event", "interaction": iid, "seq": e.seq, "kind": e.kind,
                   "type": e.type, "data": e.data, "id": e.id, "retry": e.retry,
                   "offset_ns": e.offset_ns, "first_chunk": e.first_chunk,
                   "last_chunk": e.last_chunk} for e in exchange.events]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


class _Line:
    def __init__(self, name: str, number: int) -> None:
        self.name, self.number = name, number

    def fail(self, message: str) -> NoReturn:
        raise TransferError(f"{self.name}: line {self.number}: {message}")

    def get(self, record: dict[str, Any], key: str, kind: type | tuple[type, ...],
            nullable: bool = False) -> Any:
        if key not in record:
            self.fail(f"{record.get('record')} record has no {key!r}")
        value = record[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            wanted = {"int": "an integer", "str": "a string", "dict": "an object"}.get(
                getattr(kind, "__name__", ""), "a number")
            self.fail(f"{key!r} is {json.dumps(value)[:40]}, not {wanted}")
        return value

    def headers(self, value: Any, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                and p[0] and not any(c in p[0] + p[1] for c in "\r\n\0") for p in value):
            self.fail(f"{key!r} is not a list of [NAME, VALUE] strings without CR, LF or NUL")
        return tuple((head_text(n), head_text(v)) for n, v in value)

    def data(self, value: Any, key: str) -> bytes:
        if not isinstance(value, dict) or not isinstance(value.get("base64"), str):
            self.fail(f"{key!r} is not an object with \"base64\"")
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            self.fail(f"{key!r}.base64 is not base64")


def _interaction(line: _Line, record: dict[str, Any]) -> dict[str, Any]:
    response = line.get(record, "response", dict, nullable=True)
    head = None
    if response is not None:
        status = line.get(response, "status", int)
        if not 100 <= status <= 999:
            line.fail(f"status {status} is not from 100 to 999")
        head = ResponseHead(status, line.get(response, "reason", str),
                            line.headers(response.get("headers"), "response.headers"),
                            line.get(response, "http_version", str))
    outcome = line.get(record, "outcome", str)
    if outcome not in {o.value for o in Outcome}:
        line.fail(f"outcome {outcome!r} is not one of {', '.join(o.value for o in Outcome)}")
    method = line.get(record, "method", str)
    if not method or any(c.isspace() or not c.isprintable() for c in method):
        line.fail(f"method {method[:20]!r} is not an HTTP method")
    for key in ("started_at", "head_offset_ns", "end_offset_ns"):
        if isinstance(record.get(key), int | float) and record[key] < 0:
            line.fail(f"{key} is {record[key]}, below 0")
    return {
        "request": RecordedRequest(
            line.get(record, "method", str), line.get(record, "url", str),
            line.headers(record.get("headers"), "headers"), line.data(record.get("body"), "body"),
            line.get(record, "http_version", str)),
        "started_at": float(line.get(record, "started_at", (int, float))),
        "response": head,
        "head_offset_ns": line.get(record, "head_offset_ns", int, nullable=True),
        "chunks": [],
        "outcome": Outcome(outcome),
        "end_offset_ns": line.get(record, "end_offset_ns", int, nullable=True),
        "error": line.get(record, "error", str, nullable=True),
    }


def load(data: bytes, name: str) -> Imported:
    drafts: dict[Any, dict[str, Any]] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        line = _Line(name, number)
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            line.fail(f"not JSON ({getattr(exc, 'msg', exc)})")
        if not isinstance(record, dict):
            line.fail("a record is a JSON object")
        kind = record.get("record")
        if kind == "interaction":
            iid = record.get("id")
            if iid in drafts:
                line.fail(f"interaction {iid!r} appears twice")
            drafts[iid] = _interaction(line, record)
        elif kind == "chunk":
            iid = record.get("interaction")
            if iid not in drafts:
                line.fail(f"chunk of interaction {iid!r}, which no earlier line introduced")
            offset = line.get(record, "offset_ns", int)
            if offset < 0:
                line.fail("offset_ns is negative")
            drafts[iid]["chunks"].append((offset, line.data(record, "chunk")))
        elif kind != "event":  # events are derived from the chunks
            line.fail(f"unknown record {kind!r} (interaction, chunk or event)")
    return Imported([Exchange(**{**d, "chunks": tuple(d["chunks"])}) for d in drafts.values()])

"""Rows read back into model values: the one place that checks what a cassette holds.

SQLite keeps any value in any column, and a cassette may be damaged, edited by hand or
written by a newer release, so nothing read back is trusted. Rules:
- every column has one `Rule` in `RULES` (storage classes allowed, NULL or not, range,
  choices, and a parser for values with a shape, such as the headers' JSON); a value that
  breaks its rule raises a `CassetteError` naming the file, the row and the column, so a
  damaged file is one line, never a traceback and never an empty answer;
- a TEXT value where a BLOB belongs (or the reverse) is damage, not something to convert:
  the chunks are the bytes as received, and a guess could change them;
- forward compatibility: an `end_reason` this release does not know reads as CLOSED
  (`schema.outcome_from_disk`); columns and tables it does not know are ignored;
- `screen` turns the simple rules (storage class, range, choices) into SQL, so one query
  over a table finds the rows that break them without loading any blob; `Cassette` runs it
  for the chunks and events of every interaction it reads, then reads the first bad row
  through `check` for the message. Chunk and event rows are checked again as they are read,
  since the file can change under a reader.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Table, and_, false, func, not_, or_

from sse_recorder.errors import CassetteError
from sse_recorder.model import (
    Chunk,
    Headers,
    Interaction,
    RecordedEvent,
    RecordedRequest,
    ResponseHead,
)
from sse_recorder.store.schema import (
    ADDED_IN_V2,
    ChunkRow,
    EventRow,
    InteractionRow,
    outcome_from_disk,
)

# The Python type sqlite3 returns for each SQLite storage class (`typeof()` names); a
# PostgreSQL boolean column gives a bool where SQLite gives 0 or 1.
STORAGE: dict[type, str] = {
    int: "integer", bool: "integer", float: "real", str: "text", bytes: "blob",
    type(None): "null",
}
LATEST_TIME = 253402214400.0  # 9999-12-31 UTC: later cannot be shown as a local date
_UNSAFE = frozenset("\r\n\0")  # would split or end a header line on the wire


def _headers(value: str) -> Headers:
    """A JSON list of [name, value] string pairs that a response head can carry."""
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise ValueError("is not JSON") from None
    if not isinstance(parsed, list) or not all(
        isinstance(pair, list) and len(pair) == 2
        and all(isinstance(part, str) for part in pair) for pair in parsed
    ):
        raise ValueError("is not a JSON list of [name, value] string pairs")
    headers = tuple((name, text) for name, text in parsed)
    for name, text in headers:
        if not name:
            raise ValueError("has a header with an empty name")
        _head_text(name)
        # obsolete line folding (CRLF then a space or tab) is how a value was received
        _head_text(text.replace("\r\n ", "").replace("\r\n\t", ""))
    return headers


def _head_text(value: str) -> str:
    """Latin-1 with no CR, LF or NUL: what a line of a head can carry."""
    if _UNSAFE.intersection(value):
        raise ValueError(f"holds a CR, LF or NUL: {value[:40]!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"is not latin-1: {value[:40]!r}") from None
    return value


def _method(value: str) -> str:
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"is not an HTTP method: {value[:40]!r}")
    return value


def _url(value: str) -> str:
    try:
        urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"is not a URL ({exc}): {value[:60]!r}") from None
    return value


@dataclass(frozen=True, slots=True)
class Rule:
    """What one column may hold. `parse` checks a shape and gives the model's value, or
    raises ValueError saying what is wrong ("is not JSON")."""

    storage: tuple[str, ...]  # typeof() names allowed; "null" where NULL is
    minimum: float | None = None
    maximum: float | None = None  # exclusive
    choices: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None

    def check(self, value: Any) -> Any:
        """The value as the model takes it, or ValueError saying what is wrong."""
        kind = STORAGE.get(type(value), type(value).__name__)
        if kind not in self.storage:
            raise ValueError(f"is {kind}, not {' or '.join(self.storage)}")
        if value is None:
            return None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"is {value!r}, below {self.minimum:g}")
        if self.maximum is not None and value >= self.maximum:
            raise ValueError(f"is {value!r}, not below {self.maximum:g}")
        if self.choices and value not in self.choices:
            raise ValueError(f"is {str(value)[:40]!r}, not one of {', '.join(self.choices)}")
        return value if self.parse is None else self.parse(value)

    def broken(self, column: ColumnElement[Any]) -> ColumnElement[bool]:
        """SQL that is true where a value breaks the storage, range or choice rule."""
        fine: list[ColumnElement[bool]] = [func.typeof(column).in_(self.storage)]
        if self.minimum is not None:
            fine.append(or_(column.is_(None), column >= self.minimum))
        if self.maximum is not None:
            fine.append(or_(column.is_(None), column < self.maximum))
        if self.choices:
            fine.append(or_(column.is_(None), column.in_(self.choices)))
        return not_(and_(*fine))


_NATURAL = Rule(("integer",), minimum=0)  # sequence numbers and offsets
_MAYBE_OFFSET = Rule(("integer", "null"), minimum=0)
_FLAG = Rule(("integer",), minimum=0, maximum=2)
_TEXT = Rule(("text",))
_MAYBE_TEXT = Rule(("text", "null"))

RULES: dict[str, dict[str, Rule]] = {
    InteractionRow.__tablename__: {
        "id": Rule(("integer",), minimum=1),
        "started_at": Rule(("real", "integer"), minimum=0, maximum=LATEST_TIME,
                           parse=float),
        "method": Rule(("text",), parse=_method),
        "url": Rule(("text",), parse=_url),
        "request_headers": Rule(("text",), parse=_headers),
        "request_body": Rule(("blob",)),
        "request_http_version": _TEXT,
        "status": Rule(("integer", "null"), minimum=100, maximum=1000),
        "reason": Rule(("text", "null"), parse=_head_text),
        "response_headers": Rule(("text", "null"), parse=_headers),
        "response_http_version": _MAYBE_TEXT,
        "head_offset_ns": _MAYBE_OFFSET,
        "is_sse": _FLAG,
        "complete": _FLAG,
        "end_reason": _MAYBE_TEXT,
        "end_offset_ns": _MAYBE_OFFSET,
        "error": _MAYBE_TEXT,
        "event_count": _MAYBE_OFFSET,
    },
    ChunkRow.__tablename__: {
        "seq": _NATURAL,
        "offset_ns": _NATURAL,
        "data": Rule(("blob",)),
        "count": Rule(("integer", "null"), minimum=2),
        "offsets": Rule(("blob", "null")),
        "sizes": Rule(("blob", "null")),
    },
    EventRow.__tablename__: {
        "seq": _NATURAL,
        # SSE events and comments; frames of other streams (sse_recorder.framing)
        "kind": Rule(("text",), choices=("event", "comment", "frame", "error", "invalid")),
        "type": _MAYBE_TEXT,
        "data": _TEXT,
        "event_id": _MAYBE_TEXT,
        "retry": Rule(("integer", "null"), minimum=0),
        "offset_ns": _NATURAL,
        "first_chunk": _NATURAL,
        "last_chunk": _NATURAL,
    },
}


def check(table: str, row: Mapping[str, Any], path: object, where: str) -> dict[str, Any]:
    """Every checked column of `row`, as the model takes it; CassetteError at the first
    value that breaks its rule."""
    checked: dict[str, Any] = {}
    for column, rule in RULES[table].items():
        try:
            checked[column] = rule.check(row[column])
        except ValueError as exc:
            raise CassetteError(
                f"{path}: damaged cassette: {where}: {table}.{column} {exc}") from None
    return checked


def screen(table: Table, version: int) -> ColumnElement[bool]:
    """SQL true for a row of `table` that breaks a storage, range or choice rule, or (a chunk
    block) whose packed arrays do not fit its count; parsed shapes are left to `check`.
    `version`: the file's format (v1 files lack the columns v2 added)."""
    rules = RULES[table.name]
    absent = ADDED_IN_V2.get(table.name, ()) if version < 2 else ()
    broken = [rules[name].broken(table.c[name]) for name in rules
              if rules[name].parse is None and name not in absent]
    if table.name == ChunkRow.__tablename__ and version >= 2:
        c = table.c
        broken.append(func.sse_block_broken(c.count, c.offsets, c.sizes,
                                            func.length(c.data)) == 1)
    return or_(false(), *broken)


def block_broken(count: Any, offsets: Any, sizes: Any, data_size: Any) -> int:
    """1 for a chunks row whose block columns are not a single chunk's (all NULL) nor a
    block's that fits its data (the SQL function `sse_block_broken` a SQLite connection
    has, so the screen finds it without reading any data)."""
    if count is None and offsets is None and sizes is None:
        return 0
    try:
        _block_arrays(count, offsets, sizes, data_size)
    except ValueError:
        return 1
    return 0


def _block_arrays(count: Any, offsets: Any, sizes: Any,
                  data_size: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A block's arrivals and lengths, unpacked once and seen to fit its count and its data;
    ValueError says what does not."""
    if count is None or offsets is None or sizes is None:
        raise ValueError("count, offsets and sizes must all be set or all be NULL")
    if not (type(count) is int and type(offsets) is bytes and type(sizes) is bytes):
        raise ValueError("count, offsets or sizes has the wrong type")
    if count < 1 or len(offsets) != 8 * count or len(sizes) != 4 * count:
        raise ValueError(f"offsets or sizes do not hold {count} entries")
    stamps = struct.unpack(f"<{count}q", offsets)
    lengths = struct.unpack(f"<{count}I", sizes)
    total = sum(lengths)
    if total != data_size:
        raise ValueError(f"sizes add up to {total} bytes, data holds {data_size}")
    if min(stamps) < 0:
        raise ValueError("an offset is negative")
    return stamps, lengths


def interaction(row: Mapping[str, Any], path: object) -> Interaction:
    """An interaction row (with its chunk and event figures) as the model's value."""
    v = check(InteractionRow.__tablename__, row, path, f"interaction {row['id']!r}")
    response = None
    if v["status"] is not None:
        response = ResponseHead(
            status=v["status"],
            reason=v["reason"] or "",
            headers=v["response_headers"] or (),
            http_version=v["response_http_version"] or "HTTP/1.1",
        )
    return Interaction(
        id=v["id"],
        started_at=v["started_at"],
        request=RecordedRequest(
            method=v["method"],
            url=v["url"],
            headers=v["request_headers"],
            body=v["request_body"],
            http_version=v["request_http_version"],
        ),
        response=response,
        head_offset_ns=v["head_offset_ns"],
        is_sse=bool(v["is_sse"]),
        complete=bool(v["complete"]),
        outcome=outcome_from_disk(v["end_reason"]),  # NULL: never finalized
        end_offset_ns=v["end_offset_ns"],
        error=v["error"],
        chunk_count=row["chunk_count"],
        body_size=row["body_size"],
        event_count=v["event_count"] if v["event_count"] is not None else row["event_rows"],
    )


def chunks(rows: Sequence[Any], path: object, interaction_id: int) -> list[Chunk]:
    """(seq, offset_ns, data, count, offsets, sizes) rows as chunks, a block unpacked. The
    common case is a few type tests per row (replay reads chunks by the hundred thousand);
    the rules only run to say what is wrong."""
    out = []
    for seq, offset_ns, data, count, offsets, sizes in rows:
        if (type(seq) is int and type(offset_ns) is int and type(data) is bytes
                and seq >= 0 and offset_ns >= 0 and count is None and offsets is None
                and sizes is None):
            out.append(Chunk(seq, offset_ns, data))
            continue
        where = f"interaction {interaction_id}, chunk {seq!r}"
        v = check(ChunkRow.__tablename__, {"seq": seq, "offset_ns": offset_ns, "data": data,
                                           "count": count, "offsets": offsets, "sizes": sizes},
                  path, where)
        if v["count"] is None and v["offsets"] is None and v["sizes"] is None:
            out.append(Chunk(v["seq"], v["offset_ns"], v["data"]))
            continue
        out += _block(v, path, where)
    return out


def _block(v: dict[str, Any], path: object, where: str) -> list[Chunk]:
    """A block row's chunks, once its arrays are seen to fit its count and its data."""
    data = v["data"]
    try:
        stamps, lengths = _block_arrays(v["count"], v["offsets"], v["sizes"], len(data))
    except ValueError as problem:
        raise CassetteError(f"{path}: damaged cassette: {where}: chunks block: {problem}"
                            ) from None
    out, position, seq = [], 0, v["seq"]
    for index in range(len(lengths)):
        end = position + lengths[index]
        out.append(Chunk(seq + index, stamps[index], data[position:end]))
        position = end
    return out


def event(row: Mapping[str, Any], path: object, interaction_id: int) -> RecordedEvent:
    v = check(EventRow.__tablename__, row, path,
              f"interaction {interaction_id}, event {row['seq']!r}")
    return RecordedEvent(
        seq=v["seq"], kind=v["kind"], type=v["type"], data=v["data"], id=v["event_id"],
        retry=v["retry"], offset_ns=v["offset_ns"], first_chunk=v["first_chunk"],
        last_chunk=v["last_chunk"],
    )

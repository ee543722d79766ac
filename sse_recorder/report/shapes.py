"""The JSON shape of SSE event data, per event type: which fields, of which JSON types.

A path names a field in every event of a type: `$.choices[].delta.content` (arrays merge
their elements); each path keeps a concrete example (`$.choices[0].delta.content` in event
seq 3) so that a reader finds it in `show`. Data that is not JSON (`[DONE]`, plain text)
has the shape `$: text`. Pure: the diff compares two shapes, the report prints one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sse_recorder.model import RecordedEvent
from sse_recorder.report.timeline import type_of

ROOT = "$"
TEXT = "text"  # data that is not JSON
# JSON value -> its type name, by Python type (bool before int: True is an int too).
_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"), (int, "number"), (float, "number"), (str, "string"),
    (list, "array"), (dict, "object"), (type(None), "null"),
)


def json_type(value: Any) -> str:
    return next(name for kind, name in _TYPES if isinstance(value, kind))


@dataclass(slots=True)
class Field:
    """One path of a shape: the JSON types seen there and where first."""

    types: set[str]
    example: str  # the concrete path in the example event
    seq: int  # the example event


@dataclass(slots=True)
class Shape:
    fields: dict[str, Field] = field(default_factory=dict)  # path -> Field, first seen first
    events: int = 0

    def add(self, seq: int, data: str) -> None:
        self.events += 1
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            self._note(ROOT, ROOT, TEXT, seq)
            return
        for path, concrete, item in _walk(value):
            self._note(path, concrete, json_type(item), seq)

    def _note(self, path: str, concrete: str, kind: str, seq: int) -> None:
        found = self.fields.get(path)
        if found is None:
            self.fields[path] = Field({kind}, concrete, seq)
        else:
            found.types.add(kind)


def _walk(value: Any) -> Iterator[tuple[str, str, Any]]:
    """(path, concrete path, value) for the value and everything inside it; iterative, so
    no nesting depth exhausts the stack."""
    stack: list[tuple[str, str, Any]] = [(ROOT, ROOT, value)]
    while stack:
        path, concrete, item = stack.pop()
        yield path, concrete, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}", f"{concrete}.{k}", v)
                         for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((f"{path}[]", f"{concrete}[{n}]", v)
                         for n, v in reversed(list(enumerate(item))))


def shapes(events: Iterable[RecordedEvent]) -> dict[str, Shape]:
    """Event type -> the shape of its data, types in order of first appearance (comments
    have no data shape)."""
    found: dict[str, Shape] = {}
    for event in events:
        if event.kind == "event":
            found.setdefault(type_of(event), Shape()).add(event.seq, event.data)
    return found


def parent(path: str) -> str:
    """`$.a.b` -> `$.a`; `$.a[]` -> `$.a`; `$` -> `$`."""
    if path.endswith("[]"):
        return path[:-2]
    return path.rpartition(".")[0] or ROOT


def describe(types: Iterable[str]) -> str:
    return "|".join(sorted(types))

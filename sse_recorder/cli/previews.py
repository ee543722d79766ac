"""One-line previews of SSE events: what changes from event to event.

Vendor streams repeat most of every event (each OpenAI chunk starts with the same
`{"id":"chatcmpl-...","object":"chat.completion.chunk",...`), so a preview of the first
bytes says nothing. For events whose data is JSON, grouped by event type, a preview names
only the fields whose values differ between the group's events, under the shortest name
that tells them apart: `content="Hello", finish_reason=null`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sse_recorder.model import RecordedEvent

PREVIEW = 100  # characters


def event_previews(events: Sequence[RecordedEvent]) -> dict[int, str]:
    """A preview per event or comment, by its seq."""
    groups: dict[str | None, list[RecordedEvent]] = {}
    for event in events:
        if event.kind == "event":
            groups.setdefault(event.type, []).append(event)
    previews = {e.seq: clip(e.data) for e in events}
    for members in groups.values():
        previews.update(zip((e.seq for e in members),
                            varying_fields([e.data for e in members]), strict=True))
    return previews


def varying_fields(datas: Sequence[str]) -> list[str]:
    """A preview per data string: the JSON fields that vary between them, or the data as
    it is (clipped) when it is not JSON or nothing varies."""
    parsed: list[dict[str, Any] | None] = []
    for data in datas:
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        parsed.append(dict(_leaves(value)) if isinstance(value, dict | list) else None)
    varying = _varying([leaves for leaves in parsed if leaves is not None])
    names = _short_names(varying)
    previews = []
    for data, leaves in zip(datas, parsed, strict=True):
        shown = [f"{names[path]}={json.dumps(leaves[path], ensure_ascii=False)}"
                 for path in varying if leaves is not None and path in leaves]
        previews.append(clip(", ".join(shown) if shown else data))
    return previews


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """`("choices[0].delta.content", "Hi")` for each scalar (or empty container) inside."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _varying(members: list[dict[str, Any]]) -> list[str]:
    """The paths whose value (or presence) is not the same in every member, in first-seen
    order; none for a group of one."""
    if len(members) < 2:
        return []
    paths = list(dict.fromkeys(path for leaves in members for path in leaves))
    return [path for path in paths
            if len({(path in leaves, json.dumps(leaves.get(path))) for leaves in members}) > 1]


def _short_names(paths: list[str]) -> dict[str, str]:
    """Each path by its shortest dotted suffix that no other path ends with."""
    names = {}
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(other != path and (other == name or other.endswith("." + name))
                       for other in paths):
                break
        names[path] = name
    return names


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW else text[: PREVIEW - 3] + "..."

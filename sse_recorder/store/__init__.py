"""Cassette storage: the only package that imports SQLAlchemy.

`open_store(target, name)` opens a cassette in a SQLite file or a PostgreSQL store. The names
below are imported on first use: `store.location` (what the CLI parses every CASSETTE with)
must not bring the rest, so a recording proxy's process loads no SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sse_recorder.store.cassette import Cassette, list_cassettes, open_store
    from sse_recorder.store.location import Location, locate

__all__ = ["Cassette", "Location", "list_cassettes", "locate", "open_store"]
_HOMES = {"Cassette": "cassette", "list_cassettes": "cassette", "open_store": "cassette",
          "Location": "location", "locate": "location"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])

"""Cassette storage: the only package that imports SQLAlchemy.

`open_store(target, name)` opens a cassette in a SQLite file or a PostgreSQL store.
"""

from sse_recorder.store.cassette import Cassette, list_cassettes, open_store
from sse_recorder.store.location import Location, locate

__all__ = ["Cassette", "Location", "list_cassettes", "locate", "open_store"]

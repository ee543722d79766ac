"""Everything that imports mitmproxy (nothing else does): the addons and the runner."""

from __future__ import annotations

import logging

# mitmproxy sets the root logger to DEBUG. aiosqlite then formats the repr of every batch
# it executes (all rows) while holding the GIL: measured at ~8% of the recorder's CPU; and
# alembic, creating a cassette, puts nine lines of its plugins and DDL mode in the event log.
for _library in ("aiosqlite", "alembic"):
    logging.getLogger(_library).setLevel(logging.WARNING)


def missing() -> ImportError | None:
    """Why mitmproxy cannot be imported here, or None; its package alone (0.2 ms), so a
    command can fail before it starts anything and import the proxy's modules later."""
    try:
        import mitmproxy  # noqa: F401
    except ImportError as exc:
        return exc
    return None

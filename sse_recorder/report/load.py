"""Read a cassette into `Recording`s: offsets and sizes of chunks, not their bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sse_recorder.report.timeline import Recording

if TYPE_CHECKING:
    from sse_recorder.store.location import Location


async def load(target: Path | Location, ids: Sequence[int] = ()) -> list[Recording]:
    """The interactions `ids` (default: every one) of a cassette file or store cassette; a
    missing, foreign or damaged cassette or an unknown id raises a one-line `CassetteError`."""
    from sse_recorder.store.cassette import Cassette

    async with await Cassette.open(target) as cassette:
        chosen = ([await cassette.interaction(i) for i in dict.fromkeys(ids)] if ids
                  else await cassette.interactions())
        found = []
        for interaction in chosen:
            offsets: list[int] = []
            sizes: list[int] = []
            async for chunk in cassette.chunks(interaction.id):
                offsets.append(chunk.offset_ns)
                sizes.append(len(chunk.data))
            found.append(Recording(interaction, tuple(offsets), tuple(sizes),
                                   tuple(await cassette.events(interaction.id))))
        return found

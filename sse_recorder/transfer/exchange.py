"""Exchanges in and out of cassettes: what every import and export format works on.

Rules:
- an export reads through `Cassette.open` (every value checked);
- an import writes through the recorder's own `RecordingSession`, so redaction, content
  decoding and event parsing are exactly those of a recording;
- an import never leaves a partial cassette: it writes a temporary file beside the target,
  reads it back (every value checked) and only then renames it into place; an existing
  target is refused, never appended to or overwritten.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sse_recorder import partial
from sse_recorder.errors import CassetteError
from sse_recorder.model import Outcome, RecordedEvent, RecordedRequest, ResponseHead
from sse_recorder.record.redact import RedactionRules
from sse_recorder.record.session import (
    Recorded,
    RecorderConfig,
    RecordingSession,
    WriterMode,
)
from sse_recorder.store.cassette import Cassette, stored_names
from sse_recorder.store.copy import copy
from sse_recorder.store.location import Location
from sse_recorder.transfer import TransferError

FLUSH_EVERY = 4096  # chunks queued before waiting for the writer: bounds an import's memory


@dataclass(frozen=True, slots=True)
class Exchange:
    """One interaction with its whole body: the unit every format reads and writes."""

    request: RecordedRequest
    started_at: float
    response: ResponseHead | None = None
    head_offset_ns: int | None = None
    chunks: tuple[tuple[int, bytes], ...] = ()  # (offset_ns, data)
    outcome: Outcome = Outcome.CLEAN
    end_offset_ns: int | None = None
    error: str | None = None
    events: tuple[RecordedEvent, ...] = ()  # a cassette's stored events (derived data)

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)


def head_text(text: str) -> str:
    """Head text as the wire carries it: a tool's text that latin-1 cannot hold stands for
    its UTF-8 bytes (what a viewer decoded them from)."""
    try:
        text.encode("latin-1")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("latin-1")


@dataclass
class Imported:
    """What a reader found: the exchanges, and warnings about what the input lacked."""

    exchanges: list[Exchange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def read_cassette(path: Path, ids: Sequence[int] = ()) -> list[Exchange]:
    """The interactions of a cassette (those of `ids`, in that order, if given)."""
    async with await Cassette.open(path) as cassette:
        chosen = ([await cassette.interaction(i) for i in ids] if ids
                  else await cassette.interactions())
        return [
            Exchange(
                request=i.request, started_at=i.started_at, response=i.response,
                head_offset_ns=i.head_offset_ns,
                chunks=tuple([(c.offset_ns, c.data) async for c in cassette.chunks(i.id)]),
                outcome=i.outcome, end_offset_ns=i.end_offset_ns, error=i.error,
                events=tuple(await cassette.events(i.id)),
            )
            for i in chosen
        ]


async def write_cassette(
    exchanges: Iterable[Exchange],
    target: Path | Location,
    rules: RedactionRules | None = None,
    on_recorded: Callable[[Recorded], None] | None = None,
) -> None:
    """Write a new cassette at `target` as the recorder would have recorded `exchanges`
    (a store's: written to a file first, then copied in whole)."""
    if isinstance(target, Location):
        await _write_into_store(exchanges, target, rules, on_recorded)
        return
    if target.exists() or target.is_symlink():
        raise TransferError(f"{target}: exists: import writes a new cassette (remove it, "
                            "or choose another -o)")
    if target.parent.is_dir() and not os.access(target.parent, os.W_OK):
        raise TransferError(f"{target}: cannot create: {target.parent} is not writable")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.importing")
    with partial.writing(temporary):
        try:
            await _record(exchanges, temporary, rules or RedactionRules(), on_recorded)
            if not temporary.exists():  # the session removes a cassette left empty
                raise TransferError(f"{target}: nothing to import: the input holds no "
                                    "interaction")
            async with await Cassette.open(temporary) as written:
                await written.interactions()  # every value readable, or a CassetteError
            if target.exists():
                raise TransferError(f"{target}: was created meanwhile; not overwriting it")
            os.replace(temporary, target)
        except CassetteError as exc:
            raise TransferError(str(exc).replace(str(temporary), str(target))) from None
        finally:
            partial.remove_sqlite_file(temporary)


async def _write_into_store(
    exchanges: Iterable[Exchange], target: Location, rules: RedactionRules | None,
    on_recorded: Callable[[Recorded], None] | None,
) -> None:
    """A new cassette in a store: staged as a file, so a failed import leaves nothing in
    the store, then copied in (`store.copy`)."""
    if target.name in await stored_names(target):
        raise TransferError(f"{target}: exists: import writes a new cassette (choose another "
                            "cassette= name, or `sse-recorder copy` into this one)")
    with (tempfile.TemporaryDirectory(prefix="sse-recorder-import-") as directory,
          partial.writing(Path(directory))):
        staged = Path(directory) / "import.sqlite"
        await write_cassette(exchanges, staged, rules, on_recorded)
        await copy(staged, target)


async def _record(exchanges: Iterable[Exchange], path: Path, rules: RedactionRules,
                  on_recorded: Callable[[Recorded], None] | None) -> None:
    # a task on this loop: an import has no proxy whose CPU a writer process would spare
    session = RecordingSession(str(path), RecorderConfig(redaction=rules, on_recorded=on_recorded,
                                                         writer=WriterMode.TASK))
    await session.start()
    try:
        queued = 0
        for exchange in exchanges:
            iid = session.begin(exchange.request, exchange.started_at)
            if exchange.response is not None:
                session.head(iid, exchange.response, exchange.head_offset_ns or 0)
                for offset_ns, data in exchange.chunks:
                    session.chunk(iid, offset_ns, data)
                queued += len(exchange.chunks)
            session.end(iid, exchange.outcome, exchange.end_offset_ns, exchange.error)
            if queued >= FLUSH_EVERY:
                await session.flush()
                queued = 0
    finally:
        await session.close()
    if session.failure is not None:
        raise TransferError(str(session.failure))


async def replay_source(path: Path) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """What `sse-recorder replay` serves for `path`: a `.sse` file is imported (as `import`
    would) into a temporary cassette, removed when the returned directory is released;
    anything else is served as the cassette it should be."""
    if path.suffix.lower() != ".sse":
        return path, None
    from sse_recorder.transfer.formats import read_file

    imported = read_file(path, "sse")
    workdir = tempfile.TemporaryDirectory(prefix="sse-recorder-")
    cassette = Path(workdir.name) / f"{path.stem}.sqlite"
    await write_cassette(imported.exchanges, cassette)
    return cassette, workdir

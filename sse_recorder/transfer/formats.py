"""The formats, as a table: each one's reader and writer, and the guess of a file's format.

The flows format lives in `sse_recorder.mitm.flows` (mitmproxy is importable only there):
its functions import it when called, so an install without the record extra raises
ImportError there, and only there (the CLI turns it into its one-line error).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sse_recorder.transfer import TransferError

if TYPE_CHECKING:  # importing the store (SQLAlchemy) is for commands, not for --help
    from sse_recorder.transfer.exchange import Exchange, Imported


@dataclass(frozen=True)
class Format:
    """A format: the module whose `load(data, name)` and `dump(exchanges)` read and write it,
    imported when used."""

    name: str
    module: str
    what: str  # for help and messages

    def read(self, data: bytes, name: str) -> Imported:
        return cast("Imported", importlib.import_module(self.module).load(data, name))

    def write(self, exchanges: Sequence[Exchange]) -> bytes:
        return cast(bytes, importlib.import_module(self.module).dump(exchanges))


FORMATS = {f.name: f for f in (
    Format("har", "sse_recorder.transfer.har",
           "HAR 1.2 (browsers, mitmproxy's hardump; lossless through _sseRecorder fields)"),
    Format("flows", "sse_recorder.mitm.flows", "mitmproxy flow file (mitmdump -w)"),
    Format("sse", "sse_recorder.transfer.ssetext", ".sse text (cassettes/SSE-FORMAT.md)"),
    Format("jsonl", "sse_recorder.transfer.jsonl",
           "JSON lines, one record per interaction, chunk and event"),
)}

_TNETSTRING = re.compile(rb"\d{1,12}:")  # a mitmproxy flow file starts with a length


def guess(data: bytes) -> str | None:
    """The format of a file from its first bytes; None when it is none of them."""
    if _TNETSTRING.match(data):
        return "flows"
    if data[:1] == b"\x78":  # zlib: mitmproxy's .zhar
        return "har"
    start = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if start.startswith(b"{"):
        first = start.split(b"\n", 1)[0]
        try:
            record = json.loads(first)
        except ValueError:
            return "har"
        return "jsonl" if isinstance(record, dict) and "record" in record else "har"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < 4093:  # not a character cut by the 4096-byte window
            return None
    return "sse"


def read_file(path: Path, format_name: str | None = None) -> Imported:
    """A file's exchanges, in the format given or guessed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TransferError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if format_name is None:
        format_name = guess(data)
        if format_name is None:
            raise TransferError(f"{path}: cannot tell its format (not HAR, a mitmproxy flow "
                                "file, .sse text or JSON lines): give --format")
    return FORMATS[format_name].read(data, str(path))

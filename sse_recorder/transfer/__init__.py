"""Cassettes in and out of other formats: HAR 1.2, mitmproxy flows, `.sse` text, JSON lines.

Every format reads into and writes from `Exchange` values (one interaction with its chunks),
so a format knows nothing of the store; `exchange` moves them in and out of cassettes, an
import through the recorder's own session (redaction and event parsing as when recording).
`formats` is the table of readers and writers and the guess of a file's format.
"""

from sse_recorder.errors import SSERecorderError


class TransferError(SSERecorderError):
    """An input that cannot be imported, or an output that cannot be written: one line
    naming the file and the place in it."""

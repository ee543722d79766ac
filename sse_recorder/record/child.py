"""The writer process: `python -m sse_recorder.record.child`, started by a recording session.

Why a process: parsing, redaction and SQLite work cost the proxy's own process about as much
CPU as forwarding the traffic, and every microsecond of it is taken from the traffic. Here
the proxy only stamps and queues; this process does the rest on the other core.

Messages are length-prefixed pickles (`FRAME`), between two processes of the same
installation only; a frame of plain values (runs of chunks as lists of offsets and of bytes,
acknowledgements: a flood's frames) goes as `marshal` instead, which costs the proxy a
quarter of pickle's CPU per item (measured 0.04 against 0.18 us), and is safe here because
both ends run the same interpreter.
The proxy sends `Start` first, then lists of writer items; this process answers `Ready` (or
`Refused`: the cassette could not be opened), then a `Commit` per batch (as a plain tuple
when it ended no interaction), and `Closed` when it has finished the cassette; or, if
storage fails, `Failed`, and it exits at once (status 1) with what it was handed unwritten:
the proxy reads its answers only when it needs them, but it watches this process's exit.

It reads its pipe eagerly, so what the proxy handed over survives the proxy: on end of input
without a STOP (the proxy was killed) it ends the interactions still open as stopped,
writes everything and finishes the cassette. It ignores SIGINT and SIGTERM for the same
reason: the proxy, which gets them too, stops it by closing the pipe.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import pickle
import signal
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sse_recorder.model import Outcome
from sse_recorder.record.items import END, STOP, Commit
from sse_recorder.record.redact import RedactionRules

if TYPE_CHECKING:
    from sse_recorder.record.writer import Writer

FRAME = struct.Struct(">IB")  # size, then how the message is serialised
PICKLED, MARSHALLED = 0, 1
_LOADS = {PICKLED: pickle.loads, MARSHALLED: marshal.loads}
PROXY_GONE = "the proxy exited without closing the recording"


@dataclass(frozen=True, slots=True)
class Start:
    cassette: str
    rules: tuple[frozenset[str], frozenset[str], frozenset[str], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Ready:
    next_id: int  # the cassette's next interaction id: the proxy's first token


@dataclass(frozen=True, slots=True)
class Refused:
    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    pass


def encode(message: object, *, plain: bool = False) -> bytes:
    """A framed message; `plain`: it holds only lists, tuples, ints, bytes, str and None."""
    if plain:
        data = marshal.dumps(cast("list[Any]", message))
        return FRAME.pack(len(data), MARSHALLED) + data
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data), PICKLED) + data


def take_messages(buffer: bytearray) -> list[object]:
    """The whole messages at the start of `buffer`, removed from it; a partial one stays."""
    messages: list[object] = []
    start = 0
    while len(buffer) - start >= FRAME.size:
        size, kind = FRAME.unpack_from(buffer, start)
        end = start + FRAME.size + size
        if end > len(buffer):
            break
        messages.append(_LOADS[kind](bytes(buffer[start + FRAME.size:end])))
        start = end
    del buffer[:start]
    return messages


async def read_message(reader: asyncio.StreamReader) -> object | None:
    """The next message, or None at the end of input. A frame cut short is the last write
    of a process killed while writing it: what it held never fully arrived."""
    try:
        size, kind = FRAME.unpack(await reader.readexactly(FRAME.size))
        return _LOADS[kind](await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


def plain_commit(commit: Commit) -> tuple[int | None, list[int], int]:
    """A commit that ended no interaction, as plain values (`marshal`: its pickle cost the
    writer and the proxy more than the rest of the message's handling)."""
    return commit.acked, commit.flushed, commit.chunks


def rules_message(rules: RedactionRules) -> tuple[frozenset[str], frozenset[str],
                                                    frozenset[str], tuple[str, ...]]:
    """What rebuilds the rules here (their compiled form does not pickle)."""
    return rules.headers, rules.query_params, rules.json_fields, rules.values


async def _serve() -> int:
    # here, not at the top: the proxy's process imports this module for its messages only
    from sse_recorder.record.writer import Writer
    from sse_recorder.store.cassette import Cassette

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(0, "rb", buffering=0))
    out_transport, out_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0))
    out = asyncio.StreamWriter(out_transport, out_protocol, None, loop)

    start = await read_message(reader)
    if not isinstance(start, Start):
        return 2
    try:
        cassette = await Cassette.open_for_recording(start.cassette)
    except Exception as exc:  # noqa: BLE001 - CassetteError or an OS error: told to the proxy
        out.write(encode(Refused(str(exc))))
        await out.drain()
        return 2

    def send(message: object) -> None:
        if out_transport.is_closing():  # closed: the proxy is gone, nobody to tell
            return
        if type(message) is Commit and not message.recorded:  # a flood's: plain values
            out.write(encode(plain_commit(message), plain=True))
        else:
            out.write(encode(message))

    failure = asyncio.Event()

    def failed(exc: Exception) -> None:
        send(Failed(str(exc)))
        failure.set()

    # A batch that ends nothing waits for more frames (`writer.BATCH_DELAY_S`), which bounds
    # the commits a slow stream sends.
    writer = Writer(cassette, RedactionRules(*start.rules), send, failed)
    send(Ready(cassette.peek_next_id()))
    running = loop.create_task(writer.run())
    reading = loop.create_task(_feed(reader, writer))
    failing = loop.create_task(failure.wait())
    await asyncio.wait((reading, failing), return_when=asyncio.FIRST_COMPLETED)
    if failure.is_set():  # nothing more can be stored: say so by exiting
        reading.cancel()
        writer.feed([(STOP,)])
    failing.cancel()
    await running
    await writer.finish()
    if not writer.failed:
        send(Closed())
    try:
        await out.drain()
    except ConnectionError:
        pass  # the proxy is gone: nobody to tell
    return 1 if writer.failed else 0


async def _feed(reader: asyncio.StreamReader, writer: Writer) -> None:
    """Hand the writer every frame until the proxy's STOP (or its end of input: it is gone,
    and what it handed over is kept, its open interactions ended as stopped)."""
    stopped = False
    while not stopped:
        message = await read_message(reader)
        if message is None:
            writer.feed([(END, token, None, Outcome.STOPPED, PROXY_GONE, False)
                         for token in writer.open_tokens()] + [(STOP,)])
            return
        assert isinstance(message, list)
        stopped = any(item[0] == STOP for item in message[-2:])  # STOP, then the frame's ACK
        writer.feed(message)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(asyncio.run(_serve()))


if __name__ == "__main__":  # run as the module itself, so pickled classes are these
    from sse_recorder.record.child import main as module_main

    module_main()

"""Ending a response before its body is complete, the way a recording or a fault says.

Rules: what was already written goes out first (the client sees the bytes, then the
ending); CLOSED is a FIN, RESET a TCP RST, STALLED holds the connection open and silent
until the client leaves. One entry per `Outcome` in `ENDINGS`: no other outcome ends a
response early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sse_recorder.model import Outcome
from sse_recorder.wire.connections import reset


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Hold a connection open, sending nothing, until the client goes away."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


async def _fin(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    await writer.drain()
    writer.close()


async def _rst(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    writer.transport.set_write_buffer_limits(high=0)  # drain() returns once all is sent
    await writer.drain()
    reset(writer)


async def _stall(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    await writer.drain()
    await until_closed(reader)


Ender = Callable[[asyncio.StreamWriter, asyncio.StreamReader], Awaitable[None]]

ENDINGS: dict[Outcome, Ender] = {
    Outcome.CLOSED: _fin,
    Outcome.RESET: _rst,
    Outcome.STALLED: _stall,
}


async def end_early(
    outcome: Outcome, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
) -> Outcome:
    """End the response now as `outcome` says; returns it, as the client saw it end."""
    await ENDINGS[outcome](writer, reader)
    return outcome

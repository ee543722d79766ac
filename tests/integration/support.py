"""Helpers shared by the integration tests (the fixtures live in tests/conftest.py).

Reading a cassette into plain tuples, starting `sse-recorder replay` processes, waiting for
a process's stderr line with a deadline, running a coroutine on a loop of its own, retrying
a timing check a bounded number of times, and the checks several recording tests share.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import anthropic
import openai

from sse_recorder.model import Chunk, Interaction, RecordedEvent
from sse_recorder.sse import Event, parse
from sse_recorder.store.cassette import Cassette
from sse_recorder.wire.probe import ProbeResult
from tests.helpers import SSE_RECORDER, Process, start

T = TypeVar("T")

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
MESSAGES = {"model": "claude-demo", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}]}


# -- cassettes -------------------------------------------------------------------------------


class Recorded(NamedTuple):
    """One recorded interaction, its chunks and its stored events."""

    interaction: Interaction
    chunks: list[Chunk]
    events: list[RecordedEvent]

    @property
    def body(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def parsed_events(self) -> list[Event]:
        """The events of the body, as the project's parser reads them."""
        return events_of(self.body)

    def gaps_ms(self, chunks: list[Chunk] | None = None) -> list[float]:
        chunks = self.chunks if chunks is None else chunks
        return [(b.offset_ns - a.offset_ns) / 1e6
                for a, b in zip(chunks, chunks[1:], strict=False)]


async def load(path: Path) -> list[Recorded]:
    """Every interaction of a cassette, read through `Cassette.open` (read-only)."""
    async with await Cassette.open(path) as cassette:
        return [Recorded(i, [c async for c in cassette.chunks(i.id)], await cassette.events(i.id))
                for i in await cassette.interactions()]


def target_of(interaction: Interaction) -> str:
    parts = urlsplit(interaction.request.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class Recording:
    """A recorded cassette and what it holds."""

    path: Path
    items: list[Recorded]

    @classmethod
    def read(cls, path: Path) -> Recording:
        """Load `path` on a loop of its own (for synchronous fixtures)."""
        return cls(path, in_thread(load(path)))

    def get(self, target: str, method: str = "GET", **fields: Any) -> Recorded:
        """The one recording of `method target` whose JSON body has these fields."""
        found = [
            r for r in self.items
            if r.interaction.request.method == method and target_of(r.interaction) == target
            and all(json.loads(r.interaction.request.body or b"{}").get(k) == v
                    for k, v in fields.items())
        ]
        assert len(found) == 1, (method, target, fields, len(found))
        return found[0]


def events_of(data: bytes) -> list[Event]:
    return [item for item in parse(data) if isinstance(item, Event)]


def stamp_ns(chunk: bytes) -> int:
    """The upstream's `time.monotonic_ns()` stamp in a stamped tick event."""
    return int(json.loads(chunk.split(b"data: ", 1)[1])["t"])


def assert_faithful(recording: Recorded, received: list[bytes], framed: bool = True) -> None:
    """The cassette holds exactly the chunks the client received, and their events. Without
    HTTP chunk framing (`framed` False: a Content-Length or close-delimited body) the client's
    reads are TCP's: adjacent recorded chunks may reach it as one read, so every boundary it
    saw must be a recorded one, and the bytes the same."""
    interaction, chunks, events = recording
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    if framed:
        assert [c.data for c in chunks] == received
    else:
        assert b"".join(c.data for c in chunks) == b"".join(received)
        assert set(itertools.accumulate(len(r) for r in received)) <= set(
            itertools.accumulate(len(c.data) for c in chunks))
    offsets = [c.offset_ns for c in chunks]
    assert offsets == sorted(offsets) and offsets[0] >= (interaction.head_offset_ns or 0)
    expected = events_of(b"".join(received))
    stored = [e for e in events if e.kind == "event"]
    assert [(e.type, e.data, e.id) for e in stored] == [(e.type, e.data, e.id) for e in expected]


# -- processes -------------------------------------------------------------------------------


def replay_process(cassette: Path, log: Path, *options: str) -> Process:
    """A running `sse-recorder replay` of `cassette`, its stderr going to `log`."""
    return start([SSE_RECORDER, "replay", str(cassette), "--port", "0", *options], log)


async def wait_for_lines(
    process: Process, *parts: str, count: int = 1, timeout: float = 10
) -> list[str]:
    """The process's stderr lines holding every part, once there are `count` of them (a
    replay writes one as a response ends); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in process.stderr().splitlines()
                 if all(part in line for part in parts)]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} lines with {parts} in:\n{process.stderr()}")
        await asyncio.sleep(0.02)


async def wait_for_line(process: Process, *parts: str, timeout: float = 10) -> str:
    return (await wait_for_lines(process, *parts, timeout=timeout))[0]


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own (module fixtures are synchronous)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def retrying(check: Callable[[], Awaitable[None]], attempts: int = 3) -> None:
    """Run a timing check, again if a timing assertion fails (at most `attempts` runs).

    A stall of a shared machine is not the replay's fault, and a stream of 100 ms is
    bunched by a single one; exact assertions inside `check` fail on every run anyway."""
    for attempt in range(attempts):
        try:
            await check()
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


# -- clients ---------------------------------------------------------------------------------


def chunk_data(result: ProbeResult) -> list[bytes]:
    return [data for _, data in result.chunks]


async def openai_chunks(base_url: str, max_retries: int = 0) -> list[Any]:
    """The chunks of a streamed chat completion (`CHAT`), through the openai SDK."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="test",
                                max_retries=max_retries)
    async with client:
        stream = await client.chat.completions.create(**CHAT, stream=True)
        return [chunk async for chunk in stream]


async def anthropic_stream(
    base_url: str, texts: list[str] | None = None
) -> tuple[list[str], Any]:
    """The text deltas and the final message of a streamed message (`MESSAGES`), through
    the anthropic SDK; `texts` collects the deltas as they come."""
    texts = [] if texts is None else texts
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="test", max_retries=0)
    async with client, client.messages.stream(**MESSAGES) as stream:
        async for text in stream.text_stream:
            texts.append(text)
        return texts, await stream.get_final_message()

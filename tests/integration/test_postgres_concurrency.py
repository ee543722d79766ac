"""Four recorder processes recording 50 concurrent streams each into one cassette of one
PostgreSQL store; one of them is killed with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sse_recorder.demo.upstream import ticks_writes
from sse_recorder.store import open_store
from tests.helpers import Process, record_args, start
from tests.integration.support import events_of

pytestmark = pytest.mark.integration

RECORDERS, STREAMS = 4, 50
N, INTERVAL_MS = 100, 40  # each stream: 100 events 40 ms apart, ~4 s: the kill lands
# mid-stream even when a loaded box runs the kill a second or two late
KILL_AFTER = 0.5  # seconds after the killed recorder's last stream began
LOSS_BOUND_NS = 250_000_000
TICKS = f"/ticks?n={N}&interval_ms={INTERVAL_MS}"


async def stream(client: httpx.AsyncClient, tag: str,
                 received: dict[str, list[tuple[int, bytes]]]) -> None:
    """GET one stream, keeping each piece with the monotonic time it arrived."""
    pieces = received[tag] = []
    try:
        async with client.stream("GET", f"{TICKS}&tag={tag}") as response:
            async for data in response.aiter_raw():
                pieces.append((time.monotonic_ns(), data))
    except httpx.HTTPError:
        pass  # the killed recorder's streams end early


async def traffic(urls: list[str], killed: Process) -> tuple[dict[str, list[tuple[int, bytes]]],
                                                            int]:
    received: dict[str, list[tuple[int, bytes]]] = {}
    limits = httpx.Limits(max_connections=STREAMS)
    clients = [httpx.AsyncClient(base_url=url, limits=limits, timeout=30) for url in urls]
    try:
        tasks = [asyncio.create_task(stream(client, f"r{r}s{s}", received))
                 for r, client in enumerate(clients) for s in range(STREAMS)]
        # kill recorder 0 once its every stream is flowing, KILL_AFTER into them
        while not all(received.get(f"r0s{s}") for s in range(STREAMS)):
            await asyncio.sleep(0.01)
        flowing = max(received[f"r0s{s}"][0][0] for s in range(STREAMS))
        await asyncio.sleep(max(0.0, KILL_AFTER - (time.monotonic_ns() - flowing) / 1e9))
        killed.popen.send_signal(signal.SIGKILL)
        killed_at = time.monotonic_ns()
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()
    return received, killed_at


async def test_four_recorders_into_one_cassette_and_a_kill_9(
    postgres_url: str, demo_upstream: str, mitm_confdir: Path, tmp_path: Path
) -> None:
    target = f"{postgres_url}?cassette=shared_{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(RECORDERS) as pool:  # each takes a second or two to start
        starting = [pool.submit(start, record_args(
            target, mitm_confdir, "--reverse", demo_upstream),  # type: ignore[arg-type]
            tmp_path / f"recorder-{r}.txt") for r in range(RECORDERS)]
    failed = [f.exception() for f in starting if f.exception() is not None]
    if failed:  # stop the ones that did start before failing
        for future in starting:
            if future.exception() is None:
                future.result().stop()
        raise failed[0]  # type: ignore[misc]
    recorders = [f.result() for f in starting]
    try:
        received, killed_at = await traffic([p.url for p in recorders], recorders[0])
    finally:
        recorders[0].stop()
        codes = [p.stop() for p in recorders[1:]]
    assert codes == [0] * (RECORDERS - 1), [p.stderr()[-2000:] for p in recorders[1:]]

    expected = b"".join(ticks_writes(N))
    async with await open_store(target, in_progress=True) as cassette:
        found = await cassette.interactions()
        stored: dict[str, tuple[bytes, list[int], object]] = {}
        for i in found:
            chunks = [c async for c in cassette.chunks(i.id)]
            tag = parse_qs(urlsplit(i.request.url).query)["tag"][0]
            assert tag not in stored, f"{tag} recorded twice"
            # every chunk in its own interaction, in order, and the events are the chunks'
            assert [c.seq for c in chunks] == list(range(len(chunks)))
            body = b"".join(c.data for c in chunks)
            stored_events = [e for e in await cassette.events(i.id) if e.kind == "event"]
            assert [e.data for e in stored_events] == [e.data for e in events_of(body)]
            stored[tag] = (body, [c.offset_ns for c in chunks], i)

    survivors = [f"r{r}s{s}" for r in range(1, RECORDERS) for s in range(STREAMS)]
    for tag in survivors:  # the others recorded everything, completely
        body, _, interaction = stored[tag]
        assert body == expected == b"".join(d for _, d in received[tag]), tag
        assert interaction.complete, tag  # type: ignore[attr-defined]
    lost_ms = []
    for s in range(STREAMS):  # the killed one: at most its last 250 ms lost
        tag = f"r0s{s}"
        got = b"".join(d for _, d in received[tag])
        body = stored[tag][0] if tag in stored else b""
        # both prefixes of the stream: the recorder may have stored a chunk it had not
        # forwarded yet when killed, and the client may have got one never committed
        assert expected.startswith(body) and expected.startswith(got), tag
        before_bound = sum(len(d) for t, d in received[tag] if t < killed_at - LOSS_BOUND_NS)
        assert len(body) >= before_bound, (tag, len(body), before_bound)
        # the oldest byte the store lacks arrived this long before the kill
        missing = [t for t, _ in _pieces_after(received[tag], len(body))]
        lost_ms.append(max(0.0, (killed_at - missing[0]) / 1e6) if missing else 0.0)
    cut = [tag for tag in (f"r0s{s}" for s in range(STREAMS))
           if len(b"".join(d for _, d in received[tag])) < len(expected)]
    assert len(cut) >= STREAMS // 2, "the kill came after most of its streams ended"
    assert len(stored) == len(survivors) + sum(f"r0s{s}" in stored for s in range(STREAMS))
    print(f"kill -9: the store lacks at most the last {max(lost_ms):.0f} ms the client got")


def _pieces_after(pieces: list[tuple[int, bytes]], offset: int) -> list[tuple[int, bytes]]:
    """The pieces holding body bytes from `offset` on."""
    out, position = [], 0
    for when, data in pieces:
        if position + len(data) > offset:
            out.append((when, data))
        position += len(data)
    return out

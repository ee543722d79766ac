"""Recorded chunks and times under faults, seen on the wire by real clients of real
`sse-recorder replay` processes.

The cassette is a `.sse` file (replayed as is: imported on the fly) whose chunked stream has
two events in its first and last chunks, as a server that flushes late writes them, at 5,
306, 606 and 906 ms. A fault changes the HTTP chunks only where it acts (one that never fires
changes none), and `at=T` acts at T. Clients: the raw-socket probe (HTTP chunk boundaries and
times), a raw h11 reader that also sees a stall (what came before it, and that nothing came
after), httpx and httpx-sse. Timing is asserted with tolerances for a loaded 2-core box; a
timing check that fails is run again (at most three runs) before it counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import httpx_sse
import pytest

from sse_recorder.wire.probe import ProbeResult, probe
from tests.helpers import Process
from tests.integration.support import chunk_data, events_of, replay_process, retrying

pytestmark = pytest.mark.integration

CHUNKS = [  # (recorded offset in ms, chunk)
    (5, b"id: a1\ndata: one\n\nid: a2\ndata: two\n\n"),
    (306, b"id: a3\ndata: three\n\n"),
    (606, b"id: a4\ndata: four\n\n"),
    (906, b"id: a5\ndata: five\n\nid: a6\ndata: six\n\n"),
]
RECORDED = [data for _, data in CHUNKS]
A1, A2 = RECORDED[0][:18], RECORDED[0][18:]
INJECTED = b"event: injected\ndata: x\n\n"
SHARED = "/shared"
SSE_FILE = """\
GET http://127.0.0.1:8080/shared
Accept: text/event-stream

HTTP/1.1 200 OK
Content-Type: text/event-stream
Transfer-Encoding: chunked

""" + "".join(f"@at {ms}ms\n{data.decode()}" for ms, data in CHUNKS) + "@end\n"


@pytest.fixture(scope="module")
def cassette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunks") / "shared.sse"
    path.write_text(SSE_FILE)
    return path


@pytest.fixture
def replay(cassette: Path, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """`replay(*options)`: a new `sse-recorder replay` process of the cassette."""
    started: list[Process] = []

    def make(*options: str) -> Process:
        process = replay_process(cassette, tmp_path / f"replay-{len(started)}.txt", *options)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def arrivals_ms(result: ProbeResult) -> list[float]:
    """Each HTTP chunk's arrival, in ms from the request."""
    return [t / 1e6 for t, _ in result.chunks]


def near(got: float, expected: float, late: float = 80) -> bool:
    """On time: never early (1 ms of clock steps aside), at most `late` ms late."""
    return expected - 1 <= got <= expected + late


@dataclass
class Raw:
    """A response as a raw socket saw it, HTTP chunks whole, times in s from the request."""

    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    complete: bool = False  # the terminating chunk came
    closed_at: float | None = None  # EOF or RST; None: still open when we stopped reading

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)


async def read_raw(url: str, quiet: float, limit: float = 10) -> Raw:
    """One GET, read until the connection closes or nothing came for `quiet` seconds (a
    stall is seen as a silence: this is the window that shows nothing more comes)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    conn = h11.Connection(h11.CLIENT)
    writer.write(conn.send(h11.Request(method="GET", target=parts.path,
                                       headers=[("Host", f"{host}:{port}")])))
    writer.write(conn.send(h11.EndOfMessage()))
    start = time.monotonic()
    raw, pending = Raw(), b""
    try:
        while time.monotonic() - start < limit:
            try:
                data = await asyncio.wait_for(reader.read(65536), quiet)
            except TimeoutError:
                break  # silent for `quiet` seconds, still open
            except ConnectionResetError:
                data = b""
            if not data:
                raw.closed_at = time.monotonic() - start
                break
            conn.receive_data(data)
            while (event := conn.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Data):
                    pending += bytes(event.data)
                    if event.chunk_end:
                        raw.chunks.append((time.monotonic() - start, pending))
                        pending = b""
                elif isinstance(event, h11.EndOfMessage):
                    raw.complete = True
    except h11.RemoteProtocolError:
        pass
    finally:
        writer.close()
    return raw


async def fault_log(path: Path, timeout: float = 10) -> dict[str, Any]:
    """The fault log's first record, once it is written (as the response ends)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"nothing in {path}"
        await asyncio.sleep(0.02)
    record: dict[str, Any] = json.loads(path.read_text().splitlines()[0])
    return record


async def sse_ids(url: str, **client_options: Any) -> list[str]:
    async with httpx.AsyncClient(**client_options) as client:
        async with httpx_sse.aconnect_sse(client, "GET", url) as source:
            return [event.id async for event in source.aiter_sse()]


# -- chunk boundaries --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "drop:after_event=100", "heartbeat:every=10s", "stall:at=5s",
    "inject:after_event=100,shape=error", "corrupt:mode=json,at_event=100",
])
async def test_a_fault_that_never_fires_keeps_the_recorded_chunks(
    replay: Callable[..., Process], spec: str
) -> None:
    url = replay("--fault", spec).url + SHARED

    async def check() -> None:
        result = await probe(url)
        assert chunk_data(result) == RECORDED and result.outcome == "clean"
        assert all(near(got, ms) for got, (ms, _) in zip(arrivals_ms(result), CHUNKS,
                                                         strict=True)), arrivals_ms(result)

    await retrying(check)
    assert await sse_ids(url) == ["a1", "a2", "a3", "a4", "a5", "a6"]


@pytest.mark.parametrize(("spec", "expected"), [
    # Acting inside the first chunk splits that chunk there, and no other.
    ("inject:after_event=1,event=injected,data=x", [A1, INJECTED, A2, *RECORDED[1:]]),
    ("pause:after_event=1,duration=10ms", [A1, A2, *RECORDED[1:]]),
    # Acting between chunks splits none.
    ("inject:after_event=3,event=injected,data=x", [*RECORDED[:2], INJECTED, *RECORDED[2:]]),
    ("retry:value=1000", [b"retry: 1000\n\n", *RECORDED]),
    ("corrupt:mode=duplicate,at_event=3", [*RECORDED[:2], RECORDED[1], *RECORDED[2:]]),
])
async def test_a_fault_that_fires_splits_only_the_chunk_it_acts_in(
    replay: Callable[..., Process], spec: str, expected: list[bytes]
) -> None:
    result = await probe(replay("--instant", "--fault", spec).url + SHARED)
    assert chunk_data(result) == expected and result.outcome == "clean"


async def test_a_pause_between_chunks_moves_them_and_keeps_them_whole(
    replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "pause:after_event=3,duration=300ms").url + SHARED

    async def check() -> None:
        result = await probe(url)
        assert chunk_data(result) == RECORDED
        expected = [5, 306, 906, 1206]
        assert all(near(got, ms) for got, ms in zip(arrivals_ms(result), expected,
                                                    strict=True)), arrivals_ms(result)

    await retrying(check)


async def test_a_cut_keeps_the_chunks_before_it(replay: Callable[..., Process]) -> None:
    result = await probe(replay("--instant", "--fault", "drop:after_event=5,how=rst").url
                         + SHARED)
    assert chunk_data(result) == [*RECORDED[:3], b"id: a5\ndata: five\n\n"]
    assert result.outcome == "reset"


async def test_a_resumed_stream_under_a_fault_keeps_its_chunks(
    replay: Callable[..., Process]
) -> None:
    url = replay("--instant", "--fault", "heartbeat:every=10s",
                 "--fault", "drop:after_event=100").url + SHARED
    result = await probe(url, headers=[("Last-Event-ID", "a1")])
    assert chunk_data(result) == [A2, *RECORDED[1:]]  # the cut chunk's rest, then as recorded
    assert events_of(result.body)[0].id == "a2"


# -- at=T acts at T --------------------------------------------------------------------------


async def test_stall_at_a_time_sends_nothing_due_after_it(
    replay: Callable[..., Process], tmp_path: Path
) -> None:
    log = tmp_path / "faults.jsonl"
    url = replay("--fault", "stall:at=700ms", "--fault-log", str(log)).url + SHARED

    async def check() -> None:
        raw = await read_raw(url, quiet=0.8)
        assert [data for _, data in raw.chunks] == RECORDED[:3]  # due before 700 ms
        assert raw.closed_at is None and not raw.complete  # held open: stalled
        assert near(raw.chunks[-1][0] * 1000, 606)

    await retrying(check)
    record = await fault_log(log)
    assert record["outcome"] == "stalled"
    assert [(f["type"], f["at_ms"], f["event"]) for f in record["faults"]] == [
        ("stall", 700.0, 4)]
    # httpx-sse: the four events due before T, then a read timeout.
    received: list[str] = []
    with pytest.raises(httpx.ReadTimeout):
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.5)) as client:
            async with httpx_sse.aconnect_sse(client, "GET", url) as source:
                async for event in source.aiter_sse():
                    received.append(event.id)
    assert received == ["a1", "a2", "a3", "a4"]


async def test_stall_at_zero_sends_no_event(replay: Callable[..., Process]) -> None:
    raw = await read_raw(replay("--fault", "stall:at=0").url + SHARED, quiet=0.5)
    assert raw.chunks == [] and raw.closed_at is None


async def test_timeout_at_a_time_closes_duration_after_it(
    replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "timeout:at=100ms,duration=200ms").url + SHARED

    async def check() -> None:
        raw = await read_raw(url, quiet=2)
        assert [data for _, data in raw.chunks] == RECORDED[:1]  # 306 ms is after T
        assert not raw.complete and raw.closed_at is not None
        assert near(raw.closed_at * 1000, 300), raw.closed_at  # T + duration

    await retrying(check)


async def test_pause_at_a_time_shifts_what_is_due_after_it(
    replay: Callable[..., Process]
) -> None:
    url = replay("--fault", "pause:at=700ms,duration=1s").url + SHARED

    async def check() -> None:
        result = await probe(url)
        assert chunk_data(result) == RECORDED and result.outcome == "clean"
        expected = [5, 306, 606, 1906]  # the 906 ms chunk is due after T: 1 s later
        assert all(near(got, ms) for got, ms in zip(arrivals_ms(result), expected,
                                                    strict=True)), arrivals_ms(result)

    await retrying(check)


# -- a client that leaves --------------------------------------------------------------------


async def leave_after_first_chunk(url: str) -> float:
    """GET `url`, read until the first event, close; the monotonic time it closed."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    while b"data: one" not in received:
        piece = await asyncio.wait_for(reader.read(65536), 10)
        assert piece, received
        received += piece
    writer.close()
    await writer.wait_closed()
    return time.monotonic()


async def test_faults_planned_after_the_client_left_are_not_logged(
    replay: Callable[..., Process], tmp_path: Path
) -> None:
    """The plan covers the whole body; the log says what fired (an audit found a drop
    at 906 ms and every heartbeat logged for a client gone at 5 ms)."""
    log = tmp_path / "faults.jsonl"
    url = replay("--fault", "drop:after_event=5,how=rst", "--fault", "heartbeat:every=50ms",
                 "--fault-log", str(log)).url + SHARED
    await leave_after_first_chunk(url)
    record = await fault_log(log)
    assert record["outcome"] == "client-gone"
    assert [f["type"] for f in record["faults"]].count("drop") == 0, record["faults"]
    # the heartbeats written until the server saw the client gone, not the ~18 planned
    assert all(f["at_ms"] < 500 for f in record["faults"]), record["faults"]


async def test_a_client_leaving_during_a_long_pause_ends_its_stream(
    replay: Callable[..., Process], tmp_path: Path
) -> None:
    """The pause would have held the stream, and its record, for 30 s."""
    log = tmp_path / "faults.jsonl"
    url = replay("--fault", "pause:after_event=1,duration=30s",
                 "--fault-log", str(log)).url + SHARED
    left = await leave_after_first_chunk(url)
    record = await fault_log(log, timeout=10)
    assert time.monotonic() - left < 5  # GONE_POLL_S after, with a loaded box's margin
    assert record["outcome"] == "client-gone"
    assert [f["type"] for f in record["faults"]] == ["pause"]  # it fired: the client saw it

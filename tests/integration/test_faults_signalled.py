"""The Toxiproxy-style faults (timeout, slow_close, the slicer's delay) and the signalled
faults (pause and throttle announcing themselves, the seed's heartbeat shapes, an injected
event of every seed family), each observed by a real client of a real `sse-recorder replay`.

One recording and one instant replay process per module (a real `sse-recorder record` in
front of the demo upstream, then `sse-recorder replay --instant --control-port 0`): each
test sets its faults through the control API, which is also what it is for. Clients: a raw
socket read through h11 (the close's time and kind, the head's fields), the raw-socket
probe (HTTP chunk boundaries and times), httpx and httpx-sse. Timing is asserted with
tolerances for a loaded 2-core box; a timing check that fails is run again
(at most three runs) before it counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import httpx
import httpx_sse
import pytest

from sse_recorder.demo.payloads import SEED_EVENTS
from sse_recorder.wire.probe import probe
from tests.helpers import SSE_RECORDER, Process, RecordDemo, read_line, start
from tests.integration.support import Recording, events_of, in_thread, retrying

pytestmark = pytest.mark.integration

TICKS = "/ticks?n=10&interval_ms=20"  # 10 events with ids, 20 ms apart, chunked
CLOSING = "/ticks?n=4&interval_ms=20&framing=close"  # ended by the close
BULK = "/ticks?n=8&size=120&interval_ms=1"  # 960 bytes in 8 chunks
GETS = [TICKS, CLOSING, BULK]
FAMILIES = ("stream-start", "stream-end", "status", "state-change", "progress",
            "step-progress", "system-info", "performance-metrics", "debug", "token-refresh")


async def _traffic(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for target in GETS:
            assert (await client.get(url + target)).status_code == 200


@pytest.fixture(scope="module")
def recording(record_demo: RecordDemo) -> Recording:
    recording = Recording.read(record_demo("signalled-recording",
                                           lambda url: in_thread(_traffic(url))))
    assert len(recording.items) == len(GETS)
    return recording


@dataclass
class Replay:
    """The module's replay process; `await faults(*specs)` puts exactly these in play."""

    process: Process
    control: str

    @property
    def url(self) -> str:
        return self.process.url

    async def faults(self, *specs: str) -> str:
        async with httpx.AsyncClient(base_url=self.control, timeout=10) as api:
            assert (await api.delete("/faults")).status_code == 200
            for spec in specs:
                added = await api.post("/faults", content=spec)
                assert added.status_code == 201, added.text
        return self.url


@pytest.fixture(scope="module")
def server(recording: Recording, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    log = tmp_path_factory.mktemp("signalled-replay") / "stderr.txt"
    process = start([SSE_RECORDER, "replay", str(recording.path), "--listen-port", "0",
                     "--instant", "--control-port", "0"], log,
                    env={**os.environ, "SSE_RECORDER_WORKERS": "1"})
    control = read_line(process.popen, 10).removeprefix("control API: ")
    yield Replay(process, control)
    process.stop()


@dataclass
class Raw:
    """A response as a raw socket saw it: times in seconds from the request."""

    headers: dict[str, str] = field(default_factory=dict)
    data: list[tuple[float, bytes]] = field(default_factory=list)  # body bytes as they came
    complete_at: float | None = None  # the framing said the body ended
    closed_at: float = 0.0  # EOF or RST
    close: str = "fin"  # fin | rst

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.data)

    @property
    def last_byte(self) -> float:
        return self.data[-1][0]


async def raw_get(url: str, keep_alive: bool = True, timeout: float = 10) -> Raw:
    """One GET on a connection of its own, read to its close (an HTTP/1.1 client that
    would keep the connection: only the server closes it)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", f"{host}:{port}")] + ([] if keep_alive else [("Connection", "close")])
    writer.write(conn.send(h11.Request(method="GET", target=parts.path + "?" + parts.query,
                                       headers=headers)))
    writer.write(conn.send(h11.EndOfMessage()))
    start = time.monotonic()
    raw = Raw()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionResetError:
                    raw.close = "rst"
                    break
                now = time.monotonic() - start
                if not data:
                    break
                if raw.complete_at is None:
                    conn.receive_data(data)
                    while (event := conn.next_event()) is not h11.NEED_DATA:
                        if isinstance(event, h11.Response):
                            raw.headers = {k.decode().lower(): v.decode()
                                           for k, v in event.headers}
                        elif isinstance(event, h11.Data):
                            raw.data.append((now, bytes(event.data)))
                        elif isinstance(event, h11.EndOfMessage):
                            raw.complete_at = now
                            break
    except h11.RemoteProtocolError:
        pass
    raw.closed_at = time.monotonic() - start
    writer.close()
    return raw


def ids(data: bytes) -> list[str | None]:
    return [event.id for event in events_of(data)]


async def sse(url: str) -> list[tuple[float, httpx_sse.ServerSentEvent]]:
    """Every event an httpx-sse client got, with its arrival time from the request."""
    got: list[tuple[float, httpx_sse.ServerSentEvent]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        start = time.monotonic()
        async with httpx_sse.aconnect_sse(client, "GET", url) as source:
            async for event in source.aiter_sse():
                got.append((time.monotonic() - start, event))
    return got


# -- timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_timeout_stalls_then_closes_after_t(server: Replay, how: str) -> None:
    url = await server.faults(f"timeout:after_event=3,duration=300ms,how={how}")

    async def once() -> None:
        raw = await raw_get(url + TICKS)
        assert ids(raw.body) == ["0", "1", "2"] and raw.complete_at is None
        assert raw.close == how
        assert 0.27 <= raw.closed_at - raw.last_byte <= 0.6, raw.closed_at - raw.last_byte

    await retrying(once)
    # httpx sees the stream cut short once the silence ends, with what came before it.
    async with httpx.AsyncClient(timeout=5) as client:
        data = b""
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with client.stream("GET", url + TICKS) as response:
                async for chunk in response.aiter_bytes():
                    data += chunk
    assert ids(data) == ["0", "1", "2"]


async def test_timeout_with_no_position_sends_no_body(server: Replay) -> None:
    url = await server.faults("timeout:duration=200ms")
    raw = await raw_get(url + TICKS)
    assert raw.headers and raw.body == b"" and raw.close == "fin"
    assert 0.18 <= raw.closed_at <= 2.0


# -- slow_close ------------------------------------------------------------------------------


async def test_slow_close_after_a_framed_body(server: Replay) -> None:
    """The body completes on time; the connection (told `Connection: close`) closes late."""
    url = await server.faults("slow_close:delay=400ms")

    async def once() -> None:
        raw = await raw_get(url + TICKS)
        assert ids(raw.body) == [str(i) for i in range(10)]
        assert raw.headers["connection"] == "close" and raw.complete_at is not None
        assert raw.complete_at < 0.3
        assert 0.37 <= raw.closed_at - raw.complete_at <= 0.8, raw
        assert raw.close == "fin"

    await retrying(once)
    # An httpx client is done when the framing says so: it does not wait for the close.
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url + TICKS)
    assert ids(response.content) == [str(i) for i in range(10)]
    assert time.monotonic() - started < 0.35


async def test_slow_close_delays_the_close_that_ends_a_body(
    server: Replay
) -> None:
    url = await server.faults("slow_close:delay=400ms")

    async def once() -> None:
        raw = await raw_get(url + CLOSING)  # a close-delimited body: the close is its end
        assert ids(raw.body) == ["0", "1", "2", "3"]
        assert not {"content-length", "transfer-encoding"} & set(raw.headers)
        assert 0.37 <= raw.closed_at - raw.last_byte <= 0.8

    await retrying(once)
    # httpx reads such a body until the close: it ends 400 ms after the last event.
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url + CLOSING)
    assert ids(response.content) == ["0", "1", "2", "3"]
    assert time.monotonic() - started >= 0.37


async def test_slow_close_delays_a_drop(server: Replay) -> None:
    url = await server.faults("drop:after_event=2,how=rst", "slow_close:delay=300ms")

    async def once() -> None:
        raw = await raw_get(url + TICKS)
        assert ids(raw.body) == ["0", "1"] and raw.close == "rst"
        assert 0.27 <= raw.closed_at - raw.last_byte <= 0.7

    await retrying(once)


# -- the slicer's delay ----------------------------------------------------------------------


async def test_rechunk_delay_spaces_the_writes(server: Replay,
                                               recording: Recording) -> None:
    """Toxiproxy's slicer: 40-byte writes 15 ms apart, in each recorded chunk and across
    them (an instant replay: only the delay spaces them)."""
    url = await server.faults("rechunk:mode=bytes,size=40,delay=15ms")
    recorded = b"".join(c.data for c in recording.get(BULK).chunks)

    async def once() -> None:
        result = await probe(url + BULK)
        assert result.body == recorded
        sizes = [len(data) for _, data in result.chunks]
        assert max(sizes) <= 40 and len(sizes) >= len(recorded) // 40
        gaps = result.gaps_ms()  # on the schedule: a late write does not push the next one
        span = (result.chunks[-1][0] - result.chunks[0][0]) / 1e6
        assert span >= 15 * (len(sizes) - 1) - 2, (span, gaps)
        assert 13 <= statistics.median(gaps) <= 25, gaps

    await retrying(once)


# -- signalled pause and throttle, heartbeat shapes ------------------------------------------


async def test_a_signalled_pause_announces_itself(server: Replay) -> None:
    url = await server.faults("pause:after_event=4,duration=400ms,signal=true,reason=quota")

    async def once() -> None:
        got = await sse(url + TICKS)
        names = [event.event for _, event in got]
        assert names == ["message"] * 4 + ["stream-pause", "stream-resume"] + ["message"] * 6
        (paused_at, paused), (resumed_at, resumed) = got[4], got[5]
        assert json.loads(paused.data)["reason"] == "quota"
        position = json.loads(paused.data)["position"]
        assert json.loads(resumed.data) == {"position": position, "buffered": True}
        assert 0.37 <= resumed_at - paused_at <= 0.8
        assert got[6][0] - resumed_at < 0.2  # the stream goes on as it resumes

    await retrying(once)


async def test_a_signalled_throttle_announces_its_rate(server: Replay,
                                                       recording: Recording) -> None:
    url = await server.faults("throttle:rate=4K,signal=true")
    got = await sse(url + BULK)
    first = got[0][1]
    assert first.event == "stream-throttle"
    assert json.loads(first.data) == {"rate": 4096, "reason": "network_congestion"}
    assert [event.id for _, event in got[1:]] == [str(i) for i in range(8)]


@pytest.mark.parametrize("style", ["keep-alive", "connection-status", "heartbeat"])
async def test_heartbeats_in_the_seed_shapes_fill_a_silence(server: Replay,
                                                            style: str) -> None:
    url = await server.faults("pause:after_event=2,duration=350ms",
                              f"heartbeat:every=100ms,style={style}")
    got = await sse(url + TICKS)
    names = [event.event for _, event in got]
    beats = [json.loads(event.data) for _, event in got if event.event == style]
    assert 3 <= len(beats) <= 4 and names.count("message") == 10
    first_beat = names.index(style)
    assert names[:first_beat] == ["message", "message"]
    if style == "keep-alive":
        assert [b["nextPing"] for b in beats] == [0.1] * len(beats)
        assert [b["duration"] for b in beats][:3] == [0.1, 0.2, 0.3]
        assert {b["connectionId"] for b in beats} == {"abc123"}
    else:
        assert beats == [SEED_EVENTS[style]] * len(beats)


async def test_an_injected_event_of_every_seed_family(server: Replay) -> None:
    url = await server.faults(*(f"inject:after_event={k},shape={family}"
                                for k, family in enumerate(FAMILIES, start=1)))
    got = await sse(url + TICKS)
    ticks = [event for _, event in got if event.event == "message"]
    injected = [(event.event, json.loads(event.data)) for _, event in got
                if event.event != "message"]
    assert [t.id for t in ticks] == [str(i) for i in range(10)]
    assert injected == [(family, SEED_EVENTS[family]) for family in FAMILIES]
    names = [event.event for _, event in got]
    assert names[:4] == ["message", "stream-start", "message", "stream-end"]  # after event K

"""Recording through a real mitmproxy (`sse-recorder record`) from a real upstream process.

Timing assertions carry generous tolerances (precise figures live in bench/); what must be
exact is exact: bytes, chunk boundaries, order, end reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sse_recorder.demo.upstream import ticks_writes
from sse_recorder.model import Outcome
from sse_recorder.wire.probe import ProbeResult, probe
from tests.helpers import RecorderFactory
from tests.integration.support import Recorded, assert_faithful, load, stamp_ns

pytestmark = pytest.mark.integration


async def wait_for_interactions(path: Path, count: int, timeout: float = 10) -> list[Recorded]:
    """Poll the live cassette (read-only) until `count` interactions have ended."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if path.exists():
            try:
                found = await load(path)
            except Exception:  # noqa: BLE001 - the writer may be creating the schema
                found = []
            if sum(1 for i, _, _ in found if i.end_offset_ns is not None) >= count:
                return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{count} interactions not committed within {timeout}s")
        await asyncio.sleep(0.05)


def delays_ms(result: ProbeResult) -> list[float]:
    return [(result.sent_at_ns + t - stamp_ns(data)) / 1e6 for t, data in result.chunks]


@pytest.mark.parametrize("mode", ["regular", "reverse"])
async def test_live_delivery_and_exact_recording(
    mode: str, demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    path = "/ticks?n=50&interval_ms=20&stamp=1"
    direct = await probe(demo_upstream + path)
    if mode == "regular":
        proxy = recorder()
        proxied = await probe(demo_upstream + path, proxy=proxy.url)
    else:
        proxy = recorder("--upstream", demo_upstream)
        proxied = await probe(proxy.url + path)
    assert proxied.outcome == "clean" and len(proxied.chunks) == 50
    # Live: each event reaches the client a few ms after the upstream wrote it, as direct.
    direct_delays, proxied_delays = delays_ms(direct), delays_ms(proxied)
    assert statistics.median(proxied_delays) < statistics.median(direct_delays) + 3
    # p90, not the max: a busy 2-core box stalls a few events now and then
    assert statistics.quantiles(proxied_delays, n=10)[-1] < 20, proxied_delays
    assert proxy.stop() == 0

    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert interaction.complete and interaction.outcome is Outcome.CLEAN
    assert interaction.is_sse and interaction.response and interaction.response.status == 200
    assert_faithful(recording, [data for _, data in proxied.chunks])
    # Gaps between recorded chunks follow the upstream's own write schedule.
    recorded_gaps = [b.offset_ns - a.offset_ns for a, b in zip(chunks, chunks[1:], strict=False)]
    upstream_gaps = [stamp_ns(b.data) - stamp_ns(a.data) for a, b in zip(chunks, chunks[1:],
                                                                          strict=False)]
    errors_ms = [abs(r - u) / 1e6 for r, u in zip(recorded_gaps, upstream_gaps, strict=True)]
    assert statistics.median(errors_ms) < 1.0, errors_ms
    assert statistics.quantiles(errors_ms, n=10)[-1] < 10, errors_ms


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("end=clean", Outcome.CLEAN),
        ("end=reset", Outcome.RESET),
        ("end=reset&framing=close", Outcome.RESET),  # the body's end is the RST itself
        ("end=reset&framing=length", Outcome.RESET),
        ("end=close", Outcome.CLOSED),
        ("end=close&framing=close", Outcome.CLOSED),
        ("end=close&framing=length", Outcome.CLOSED),
    ],
)
async def test_upstream_endings(
    query: str, reason: Outcome, demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    received = await probe(f"{proxy.url}/ticks?n=8&interval_ms=5&{query}")
    proxy.stop()
    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction = recording[0]
    assert interaction.outcome is reason
    assert interaction.complete is (reason is Outcome.CLEAN)
    writes = ticks_writes(8, end=query.split("&")[0].removeprefix("end="))
    assert b"".join(c.data for c in recording[1]) == b"".join(writes)
    assert_faithful(recording, [data for _, data in received.chunks],
                    framed="framing=" not in query)  # close- or length-delimited: TCP's reads


async def test_client_abort_is_client_gone(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    received: list[bytes] = []
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", f"{proxy.url}/ticks?n=500&interval_ms=10") as response:
            async for piece in response.aiter_raw():
                received.append(piece)
                if len(received) == 5:
                    break
    [recording] = await wait_for_interactions(tmp_path / "cassette.sqlite", 1)
    proxy.stop()
    interaction, chunks, _ = recording
    assert interaction.outcome is Outcome.CLIENT_GONE and not interaction.complete
    stored = b"".join(c.data for c in chunks)
    assert stored.startswith(b"".join(received))
    assert stored == b"".join(ticks_writes(500)[: len(chunks)])


async def test_stream_open_at_shutdown_is_kept(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ticks?n=6&interval_ms=5&end=hang HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while received.count(b"\n\n") < 6:  # the six events; the stream then stays open
        received += await reader.read(65536)
    assert await asyncio.to_thread(proxy.stop, signal.SIGINT) == 0
    writer.close()
    [recording] = await load(tmp_path / "cassette.sqlite")
    assert recording[0].outcome is Outcome.STOPPED
    assert not recording[0].complete
    assert [c.data for c in recording[1]] == ticks_writes(6)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
async def test_a_stream_cut_by_the_stop_gives_its_client_nothing_the_cassette_lacks(
    how: signal.Signals, demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    """mitmproxy keeps its connections going while the recorder closes its cassette: the
    client got events after the stop that were never stored (found by a stranger's audit).
    The stop now cuts the streams still open first."""
    proxy = recorder("--upstream", demo_upstream)
    received = b""
    stopping: asyncio.Task[int] | None = None
    with contextlib.suppress(httpx.HTTPError):  # the stream is cut
        async with httpx.AsyncClient(timeout=30) as client, client.stream(
                "GET", f"{proxy.url}/ticks?n=3000&interval_ms=5") as response:
            async for piece in response.aiter_raw():
                received += piece
                if stopping is None and received.count(b"\n\n") >= 10:
                    stopping = asyncio.create_task(asyncio.to_thread(proxy.stop, how))
    assert stopping is not None and await stopping == 0
    [(interaction, chunks, _)] = await load(tmp_path / "cassette.sqlite")
    stored = b"".join(c.data for c in chunks)
    assert interaction.outcome is Outcome.STOPPED
    assert received.count(b"\n\n") >= 10
    assert stored.startswith(received), (len(stored), len(received))


async def test_replay_matched_answers_from_the_cassette_and_leaves_one_file(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    """`--replay-matched` reads the cassette it appends to: that reader lets go before the
    recorder folds the WAL back, so a stop leaves the cassette alone, no -wal or -shm."""
    cassette = tmp_path / "cassette.sqlite"
    first = recorder("--upstream", demo_upstream)
    assert (await probe(f"{first.url}/ticks?n=3&interval_ms=1")).outcome == "clean"
    assert await asyncio.to_thread(first.stop, signal.SIGTERM) == 0
    again = recorder("--upstream", demo_upstream, "--replay-matched")
    replayed = await probe(f"{again.url}/ticks?n=3&interval_ms=1")  # from the cassette
    fresh = await probe(f"{again.url}/ticks?n=2&interval_ms=1")  # new: recorded
    assert await asyncio.to_thread(again.stop, signal.SIGTERM) == 0
    assert b"".join(d for _, d in replayed.chunks) == b"".join(ticks_writes(3))
    assert fresh.outcome == "clean"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cassette")) == [
        "cassette.sqlite"]
    recordings = await load(cassette)
    assert [i.request.url.rsplit("/", 1)[1] for i, _, _ in recordings] == [
        "ticks?n=3&interval_ms=1", "ticks?n=2&interval_ms=1"]  # the replayed one not again


async def test_concurrent_streams_are_kept_apart(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    sizes = [40 + k for k in range(20)]  # a different padding per stream tells them apart
    results = await asyncio.gather(
        *(probe(f"{proxy.url}/ticks?n=30&interval_ms=10&size={size}") for size in sizes)
    )
    assert all(r.outcome == "clean" for r in results)
    proxy.stop()
    recordings = await load(tmp_path / "cassette.sqlite")
    assert len(recordings) == 20
    by_size = {int(r[0].request.url.rsplit("size=", 1)[1]): r for r in recordings}
    for size in sizes:
        interaction, chunks, events = by_size[size]
        assert interaction.outcome is Outcome.CLEAN
        assert [c.data for c in chunks] == ticks_writes(30, size=size)
        assert [e.id for e in events] == [str(i) for i in range(30)]


async def test_kill_9_keeps_what_was_committed(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    received = 0
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", f"{proxy.url}/ticks?n=400&interval_ms=10") as r:
            with pytest.raises(httpx.HTTPError):  # the proxy dies under the client
                async for piece in r.aiter_raw():
                    received += piece.count(b"\n\n")
                    if received == 60:
                        proxy.popen.kill()
    proxy.popen.wait()
    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert not interaction.complete
    assert interaction.outcome is Outcome.STOPPED
    # Commits follow data within 250 ms: at 10 ms per event, at most ~25 may be missing.
    assert 60 - 30 <= len(chunks) <= received + 5
    assert [c.data for c in chunks] == ticks_writes(400)[: len(chunks)]


async def test_secrets_never_reach_the_cassette_files(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    secrets = [b"sk-FAKE-HEADER-111", b"sk-FAKE-AUTH-222", b"sk-FAKE-QUERY-333",
               b"sk-FAKE-JSON-444", b"sk-FAKE-COOKIE-555", b"eyJ0eXAiOiJKV1Qi",
               b"refresh_token_demo"]
    proxy = recorder("--upstream", demo_upstream)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(
            "/v1/chat/completions?api_key=sk-FAKE-QUERY-333",
            headers={"X-Api-Key": "sk-FAKE-HEADER-111", "Authorization": "Bearer sk-FAKE-AUTH-222",
                     "Cookie": "session=sk-FAKE-COOKIE-555"},
            json={"model": "gpt-4o-mini", "stream": True, "api_key": "sk-FAKE-JSON-444",
                  "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200
        patterns = await client.get("/patterns?interval_ms=1")
        assert b"refresh_token_demo" in patterns.content  # the client still gets it
    cassette = tmp_path / "cassette.sqlite"
    recordings = await wait_for_interactions(cassette, 2)

    def files() -> list[Path]:
        return [p for p in tmp_path.iterdir() if p.name.startswith("cassette.sqlite")]

    assert {p.name for p in files()} >= {"cassette.sqlite", "cassette.sqlite-wal"}
    for path in files():  # while recording: the WAL holds the fresh pages
        for secret in secrets:
            assert secret not in path.read_bytes(), (secret, path.name)
    proxy.stop()
    for path in files():
        for secret in secrets:
            assert secret not in path.read_bytes(), (secret, path.name)
    request = recordings[0][0].request
    assert ("X-Api-Key", "[REDACTED]") in request.headers
    assert "api_key=%5BREDACTED%5D" in request.url or "api_key=[REDACTED]" in request.url
    assert json.loads(request.body)["api_key"] == "[REDACTED]"
    token_event = next(e for e in recordings[1][2] if e.type == "token-refresh")
    assert json.loads(token_event.data)["newToken"] == "[REDACTED]"


def run_cli(*args: str) -> tuple[int, str, str]:
    import subprocess

    from tests.helpers import SSE_RECORDER

    done = subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


async def test_ls_and_show_of_a_recording(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/ticks?n=3&interval_ms=1")).status_code == 200
    proxy.stop()
    cassette = str(tmp_path / "cassette.sqlite")
    code, out, err = run_cli("ls", cassette)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and "application/json" in lines[1] and "text/event-stream" in lines[2]
    assert lines[2].split()[4:6] == ["text/event-stream", "3"] and lines[2].endswith("clean")
    code, out, _ = run_cli("show", cassette, "2")
    assert code == 0 and out.count(" chunk ") == 3 and out.count(" event id=") == 3
    code, out, _ = run_cli("ls", cassette, "--json")
    document = json.loads(out)
    assert [i["id"] for i in document["interactions"]] == [1, 2]
    second = document["interactions"][1]
    assert second["outcome"] == "clean" and second["complete"] is True
    import base64

    code, out, _ = run_cli("show", cassette, "2", "--json")
    (shown,) = json.loads(out)["interactions"]
    assert shown["id"] == 2
    assert [base64.b64decode(c["base64"]) for c in shown["chunks"]] == ticks_writes(3)
    assert [e["id"] for e in shown["events"]] == ["0", "1", "2"]


def _bad_cassettes(tmp_path: Path, good: Path) -> dict[str, Path]:
    import sqlite3

    bad = {"missing": tmp_path / "missing.sqlite"}
    bad["not sqlite"] = tmp_path / "notes.sqlite"
    bad["not sqlite"].write_bytes(b"these are my notes, not a database\n" * 100)
    bad["truncated"] = tmp_path / "truncated.sqlite"
    data = good.read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["future version"] = tmp_path / "future.sqlite"
    bad["future version"].write_bytes(data)
    with sqlite3.connect(bad["future version"]) as db:
        db.execute("UPDATE cassette_meta SET value='99' WHERE key='version'")
    db.close()
    bad["foreign"] = tmp_path / "foreign.sqlite"
    with sqlite3.connect(bad["foreign"]) as db:
        db.execute("CREATE TABLE todo (item TEXT)")
    db.close()
    return bad


async def test_bad_cassettes_fail_in_one_line_and_stay_untouched(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    good = tmp_path / "good.sqlite"
    proxy = recorder("--upstream", demo_upstream, cassette=good)
    # many chunks, so that half the file loses pages the schema points at
    await probe(f"{proxy.url}/ticks?n=400&interval_ms=0&size=200")
    proxy.stop()
    bad = _bad_cassettes(tmp_path, good)
    before = {name: path.read_bytes() if path.exists() else None for name, path in bad.items()}
    reading = {(name, tuple(command)): command for name, path in bad.items() for command in (
        ["ls", str(path)], ["show", str(path)], ["show", str(path), "1"],
        ["ls", "--json", str(path)])}
    recording = {name: ["record", "--cassette", str(path), "--listen-port", "0"]
                 for name, path in bad.items() if name != "missing"}
    with ThreadPoolExecutor(4) as pool:  # 24 processes, side by side
        read = dict(zip(reading, pool.map(lambda c: run_cli(*c), reading.values()), strict=True))
        recorded = dict(zip(recording, pool.map(lambda c: run_cli(*c), recording.values()),
                            strict=True))
    for (name, command), (code, out, err) in read.items():
        assert code == 2, (name, command, out, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (name, err)
        assert "Traceback" not in err and str(bad[name]) in err
    for name, (code, _, err) in recorded.items():  # recording into it must refuse too
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, err)
    for name, path in bad.items():  # and nothing touched any of them
        assert (path.read_bytes() if path.exists() else None) == before[name], name


def _limit_file_size() -> None:
    """In the child: writes past 256 KiB fail with EFBIG instead of killing it (SIGXFSZ)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


async def test_storage_failure_stops_the_in_process_recorder(
    demo_upstream: str, tmp_path: Path
) -> None:
    """`sse-recorder record` (not only `mitmdump -s`) stops loudly when it cannot write."""
    from tests.helpers import record_args, start

    cassette = tmp_path / "cassette.sqlite"
    proxy = start(record_args(cassette, tmp_path / "confdir", "--upstream", demo_upstream),
                  tmp_path / "recorder.txt", preexec_fn=_limit_file_size)
    received = b""
    n = 3000  # ~3 MB over ~6 s: the cassette outgrows the limit early
    try:
        with pytest.raises(httpx.RemoteProtocolError):  # cut, not passed through unrecorded
            async with httpx.AsyncClient(timeout=10) as client:
                url = f"{proxy.url}/ticks?n={n}&interval_ms=2&size=1000"
                async with client.stream("GET", url) as response:
                    async for piece in response.aiter_raw():
                        received += piece
        code = await asyncio.to_thread(proxy.popen.wait, 20)  # it stops by itself
    finally:
        proxy.stop()
    assert code == 1
    assert "cannot write the cassette" in proxy.stderr() and str(cassette) in proxy.stderr()
    assert len(received) < len(b"".join(ticks_writes(n, size=1000))) // 2


# --------------------------------------------------------------------------------------------
# redaction end to end (issue 9): a small upstream that hands out secrets

SECRET = "sk-LIVE-9f8e7d6c5b4a"
ENV_SECRET = "env-S3CR3T-0a1b2c3d"


async def _secret_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /split: an event whose blank line comes 80 ms after its secret line;
    /gzip: a gzip JSON body; /gzip-sse: a gzip event stream; /echo: the request echoed."""
    import gzip as gzip_module
    import zlib

    head = await reader.readuntil(b"\r\n\r\n")
    target = head.split(b" ", 2)[1].decode()
    if target.startswith("/split"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b'data: {"newToken":"%s"}\n' % SECRET.encode(), b"\n",
                      b"data: %s\n\n" % ENV_SECRET.encode()):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.08)
        writer.write(b"0\r\n\r\n")
    elif target.startswith("/gzip-sse"):
        stream = b'data: {"access_token": "%s"}\n\ndata: two\n\n' % SECRET.encode()
        compressor = zlib.compressobj(wbits=31)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (stream[:20], stream[20:]):
            piece = compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        tail = compressor.flush()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    elif target.startswith("/gzip"):
        body = gzip_module.compress(json.dumps({"access_token": SECRET, "n": 1}).encode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    else:
        body = json.dumps({"request": head.decode("latin-1")}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def test_secrets_split_across_batches_gzip_and_echo_end_to_end(
    recorder: RecorderFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await asyncio.start_server(_secret_upstream, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    monkeypatch.setenv("SSE_TEST_ENV_SECRET", ENV_SECRET)  # the recorder inherits it
    proxy = recorder("--upstream", upstream, "--redact-env", "SSE_TEST_ENV_SECRET")
    cassette = tmp_path / "cassette.sqlite"
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            split = await client.get("/split")
            gzipped = await client.get("/gzip", headers={"Accept-Encoding": "gzip"})
            gzip_sse = await client.get("/gzip-sse", headers={"Accept-Encoding": "gzip"})
            echo = await client.get(f"/echo?api_key={SECRET}",
                                    headers={"Authorization": f"Bearer {SECRET}"})
        # the client got every secret: recording does not change what passes through
        assert SECRET in split.text and ENV_SECRET in split.text
        assert gzipped.json()["access_token"] == SECRET
        assert SECRET in gzip_sse.text and SECRET in echo.text
        recordings = await wait_for_interactions(cassette, 4)
        files = sorted(tmp_path.glob("cassette.sqlite*"))
        assert {p.name for p in files} >= {"cassette.sqlite-wal", "cassette.sqlite-shm"}
        for path in files:  # while recording
            for secret in (SECRET, ENV_SECRET):
                assert secret.encode() not in path.read_bytes(), (secret, path.name)
    finally:
        assert proxy.stop() == 0
        server.close()
        await server.wait_closed()
    for path in tmp_path.glob("cassette.sqlite*"):
        for secret in (SECRET, ENV_SECRET):
            assert secret.encode() not in path.read_bytes(), (secret, path.name)
    by_path = {r[0].request.url.split("/")[-1].split("?")[0]: r for r in recordings}
    split_events = [e.data for e in by_path["split"][2] if e.kind == "event"]
    assert split_events == ['{"newToken":"[REDACTED]"}', "[REDACTED]"]
    gz_interaction, gz_chunks, _ = by_path["gzip"]
    assert json.loads(b"".join(c.data for c in gz_chunks)) == {"access_token": "[REDACTED]",
                                                               "n": 1}
    assert gz_interaction.response is not None
    assert "content-encoding" not in {k.lower() for k, _ in gz_interaction.response.headers}
    assert [e.data for e in by_path["gzip-sse"][2]] == ['{"access_token": "[REDACTED]"}',
                                                         "two"]

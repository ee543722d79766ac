"""Recording HTTPS and HTTP/2 through a real `sse-recorder record`.

- regular proxy mode intercepting TLS towards a TLS demo upstream (self-signed certificate
  for 127.0.0.1, generated here), the client trusting mitmproxy's CA;
- an HTTP/2 client in reverse mode (TLS to the recorder, HTTP/1.1 to the demo upstream);
- HTTP/2 end to end towards a small h2 upstream (one DATA frame per event).

Every upstream runs in its own process; per-event delays come from the server's
`time.monotonic_ns()` stamp in each event (CLOCK_MONOTONIC is system-wide).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sse_recorder.demo.upstream import tick_event, ticks_writes
from sse_recorder.model import Chunk, Outcome
from tests.helpers import REPO, SSE_RECORDER, RecorderFactory, start
from tests.integration.support import assert_faithful, load, stamp_ns

pytestmark = pytest.mark.integration

TICKS = "/ticks?n=50&interval_ms=20&stamp=1"


# --- certificates and upstreams --------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("upstream-cert")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(alpn)
    return context


TLS_DEMO = """
import asyncio, sys
from sse_recorder.demo.upstream import serve
from tests.integration.test_record_tls import server_context
context = server_context(sys.argv[1], sys.argv[2], ["http/1.1"])
asyncio.run(serve("127.0.0.1", 0, lambda url: print(url, flush=True), ssl=context))
"""

H2_UPSTREAM = """
import asyncio, sys
from tests.integration.test_record_tls import serve_h2
asyncio.run(serve_h2(sys.argv[1], sys.argv[2]))
"""


def launch_python(code: str, cert: tuple[Path, Path], log: Path) -> Iterator[str]:
    process = start([sys.executable, "-c", code, str(cert[0]), str(cert[1])], log, cwd=REPO)
    yield process.url
    process.stop()


@pytest.fixture(scope="module")
def tls_upstream(
    upstream_cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The demo upstream serving HTTPS (HTTP/1.1 only), in its own process."""
    log = tmp_path_factory.mktemp("tls-upstream") / "stderr.txt"
    yield from launch_python(TLS_DEMO, upstream_cert, log)


@pytest.fixture(scope="module")
def h2_upstream(
    upstream_cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A minimal HTTP/2-only TLS upstream serving stamped /ticks, in its own process."""
    log = tmp_path_factory.mktemp("h2-upstream") / "stderr.txt"
    yield from launch_python(H2_UPSTREAM, upstream_cert, log)


async def serve_h2(cert: str, key: str) -> None:
    """HTTP/2 over TLS (ALPN h2 only): GET /ticks?n=&interval_ms= sends `tick_event(i)` with a
    stamp, one DATA frame per event on an absolute schedule, then an empty END_STREAM frame."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    context = server_context(Path(cert), Path(key), ["h2"])

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: set[asyncio.Task[None]] = set()

        async def respond(stream_id: int, path: str) -> None:
            query = dict(parse_qsl(urlsplit(path).query))
            n, interval = int(query.get("n", 10)), int(query.get("interval_ms", 20)) / 1000
            conn.send_headers(stream_id, [(":status", "200"),
                                          ("content-type", "text/event-stream")])
            writer.write(conn.data_to_send())
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(n):
                await asyncio.sleep(max(t0 + i * interval - loop.time(), 0))
                conn.send_data(stream_id, tick_event(i, stamp_ns=time.monotonic_ns()))
                writer.write(conn.data_to_send())
            conn.send_data(stream_id, b"", end_stream=True)
            writer.write(conn.data_to_send())

        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[":path"]
                        task = asyncio.create_task(respond(event.stream_id, path))
                        streams.add(task)
                        task.add_done_callback(streams.discard)
                writer.write(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in streams:
                task.cancel()
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=context)
    print(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


# --- clients ---------------------------------------------------------------------------------


def trusting(cafile: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context trusting `cafile`. With `alpn`, ALPN is pinned to it: httpcore
    always offers ["http/1.1", "h2"] (even with http1=False), and mitmproxy, with no
    upstream ALPN to mirror, takes the client's first choice."""
    if alpn is None:
        return ssl.create_default_context(cafile=str(cafile))

    class PinnedAlpn(ssl.SSLContext):
        def set_alpn_protocols(self, protocols: object) -> None:
            super().set_alpn_protocols(alpn)

    context = PinnedAlpn(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cafile))
    return context


def mitmproxy_ca(recorder: RecorderFactory) -> Path:
    return recorder.confdir / "mitmproxy-ca-cert.pem"


Timed = list[tuple[int, bytes]]  # (arrival monotonic ns, one SSE event)


async def receive(response: httpx.Response) -> Timed:
    """Each SSE event of the body, with the monotonic time its last byte arrived."""
    events: Timed = []
    buffer = b""
    async for piece in response.aiter_raw():
        now = time.monotonic_ns()
        buffer += piece
        while (end := buffer.find(b"\n\n")) >= 0:
            events.append((now, buffer[: end + 2]))
            buffer = buffer[end + 2:]
    assert buffer == b""
    return events


async def fetch(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, Timed]:
    async with client.stream("GET", url) as response:
        return response, await receive(response)


def delays_ms(events: Timed) -> list[float]:
    return [(arrival - stamp_ns(data)) / 1e6 for arrival, data in events]


def assert_live(delays: list[float], reference: list[float] | None = None) -> None:
    """Each event reached the client a few ms after the upstream wrote it (a buffered stream
    would show delays of hundreds of ms). Generous: the box has 2 vCPUs and may be busy."""
    limit = (statistics.median(reference) if reference else 0) + 5
    assert statistics.median(delays) < limit, delays
    # p90, not the max: a busy 2-core box stalls a few events now and then
    assert statistics.quantiles(delays, n=10)[-1] < 25, delays


def assert_gaps_follow_stamps(chunks: list[Chunk]) -> None:
    """Recorded offsets between chunks match the upstream's own write times."""
    pairs = list(zip(chunks, chunks[1:], strict=False))
    errors_ms = [abs((b.offset_ns - a.offset_ns) - (stamp_ns(b.data) - stamp_ns(a.data))) / 1e6
                 for a, b in pairs]
    assert statistics.median(errors_ms) < 1.0, errors_ms
    assert statistics.quantiles(errors_ms, n=10)[-1] < 10, errors_ms


def report(label: str, delays: list[float]) -> None:
    print(f"{label}: per-event delay median {statistics.median(delays):.2f} ms, "
          f"max {max(delays):.2f} ms, 3rd largest {sorted(delays)[-3]:.2f} ms")


def same_ticks(chunks: list[bytes], n: int) -> bool:
    """The chunks are ticks 0..n-1, one event each (their stamps differ from run to run)."""
    return all(c.count(b"\n\n") == 1 and c.endswith(b"\n\n") for c in chunks) and [
        json.loads(c.split(b"data: ", 1)[1])["i"] for c in chunks] == list(range(n))


# --- tests -----------------------------------------------------------------------------------


async def test_https_interception_in_regular_proxy_mode(
    tls_upstream: str, upstream_cert: tuple[Path, Path], recorder: RecorderFactory,
    tmp_path: Path,
) -> None:
    assert tls_upstream.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(verify=trusting(upstream_cert[0]), timeout=10) as direct:
        _, direct_events = await fetch(direct, tls_upstream + TICKS)
    proxy = recorder("--ssl-insecure")  # the upstream's certificate is self-signed
    async with httpx.AsyncClient(proxy=proxy.url, verify=trusting(mitmproxy_ca(recorder)),
                                 timeout=10) as client:
        response, events = await fetch(client, tls_upstream + TICKS)
    assert response.status_code == 200 and response.http_version == "HTTP/1.1"
    assert len(events) == 50 and same_ticks([data for _, data in events], 50)
    report("direct HTTPS", delays_ms(direct_events))
    report("HTTPS via recorder (regular proxy)", delays_ms(events))
    assert_live(delays_ms(events), delays_ms(direct_events))
    assert proxy.stop() == 0

    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert interaction.request.url == tls_upstream + TICKS  # https://, as the client asked
    assert interaction.complete and interaction.outcome is Outcome.CLEAN
    assert interaction.response is not None and interaction.response.status == 200
    assert_faithful(recording, [data for _, data in events])  # one chunk per upstream write
    assert_gaps_follow_stamps(chunks)

    # Served back as a proxy, matched by scheme too: the router reroutes over plain HTTP,
    # and every HTTPS recording was a 404 ("recorded https, got http", an audit found it).
    replay = start([SSE_RECORDER, "replay", str(tmp_path / "cassette.sqlite"), "--proxy",
                    "--listen-port", "0", "--confdir", str(recorder.confdir), "--instant",
                    "--match", "method,scheme,host,path,query"], tmp_path / "replay.txt")
    try:
        # a client that offers HTTP/2 gets what was recorded, HTTP/1.1 (curl got HTTP/2, so
        # a recorded truncation reached it as a stream reset: an audit found it)
        async with httpx.AsyncClient(proxy=replay.url, http2=True, timeout=10,
                                     verify=trusting(mitmproxy_ca(recorder))) as client:
            again = await client.get(tls_upstream + TICKS)
            assert again.status_code == 200, again.text
            assert again.http_version == "HTTP/1.1"
            assert again.content == b"".join(data for _, data in events)
            plain = await client.get(tls_upstream.replace("https://", "http://") + TICKS)
            assert plain.status_code == 404 and "scheme: recorded https, got http" in plain.text
        if shutil.which("curl"):  # curl offers h2 where httpx through a proxy does not
            done = subprocess.run(
                ["curl", "-sS", "-N", "--proxy", replay.url, "--cacert",
                 str(mitmproxy_ca(recorder)), "-o", "/dev/null", "-w", "%{http_version}",
                 tls_upstream + TICKS], capture_output=True, text=True, timeout=30)
            assert (done.returncode, done.stdout) == (0, "1.1"), (done.stdout, done.stderr)
    finally:
        replay.stop()


@pytest.mark.parametrize(
    ("end", "reason"),
    [("clean", Outcome.CLEAN), ("reset", Outcome.RESET),
     ("close", Outcome.CLOSED)],
)
async def test_http2_client_in_reverse_mode(
    end: str, reason: Outcome, demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    proxy = recorder("--upstream", demo_upstream)
    base = proxy.url.replace("http://", "https://")  # mitmproxy detects TLS in reverse mode
    context = trusting(mitmproxy_ca(recorder), alpn=["h2"])
    async with httpx.AsyncClient(http1=False, http2=True, verify=context, timeout=10) as client:
        if end == "clean":
            response, events = await fetch(client, base + TICKS)
        else:
            events = []
            with pytest.raises(httpx.RemoteProtocolError):  # the stream is reset for the client
                async with client.stream("GET", f"{base}/ticks?n=8&interval_ms=5&end={end}") as (
                        response):
                    async for piece in response.aiter_raw():
                        events.append((time.monotonic_ns(), piece))
    assert response.http_version == "HTTP/2"
    received = [data for _, data in events]
    if end == "clean":
        assert len(events) == 50 and same_ticks(received, 50)
        report("HTTP/2 client via recorder (reverse)", delays_ms(events))
        assert_live(delays_ms(events))
    assert proxy.stop() == 0

    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert interaction.outcome is reason and interaction.complete is (end == "clean")
    assert interaction.request.http_version == "HTTP/2.0"
    assert interaction.response is not None and interaction.response.http_version == "HTTP/1.1"
    if end == "clean":
        assert_faithful(recording, received)
        assert_gaps_follow_stamps(chunks)
    else:
        # Every DATA frame the client got is the recorded chunk of the same upstream write.
        assert [c.data for c in chunks] == ticks_writes(8, end=end)
        assert b"".join(received) == b"".join(ticks_writes(8, end=end))


async def test_http2_end_to_end_in_regular_proxy_mode(
    h2_upstream: str, upstream_cert: tuple[Path, Path], recorder: RecorderFactory,
    tmp_path: Path,
) -> None:
    url = h2_upstream + TICKS
    async with httpx.AsyncClient(http2=True, verify=trusting(upstream_cert[0]),
                                 timeout=10) as direct:
        response, direct_events = await fetch(direct, url)
        assert response.http_version == "HTTP/2"
    proxy = recorder("--ssl-insecure")
    # http1 stays enabled: towards the proxy itself httpx would otherwise send h2 with prior
    # knowledge, which mitmproxy refuses. Through the CONNECT tunnel mitmproxy mirrors the
    # upstream's ALPN (h2), so the client gets HTTP/2.
    async with httpx.AsyncClient(proxy=proxy.url, http2=True,
                                 verify=trusting(mitmproxy_ca(recorder)), timeout=10) as client:
        response, events = await fetch(client, url)
    assert response.http_version == "HTTP/2"
    assert len(events) == 50 and same_ticks([data for _, data in events], 50)
    report("direct h2", delays_ms(direct_events))
    report("h2 via recorder (regular proxy)", delays_ms(events))
    assert_live(delays_ms(events), delays_ms(direct_events))
    assert proxy.stop() == 0

    [recording] = await load(tmp_path / "cassette.sqlite")
    interaction, chunks, _ = recording
    assert interaction.request.url == url and interaction.request.http_version == "HTTP/2.0"
    assert interaction.response is not None and interaction.response.http_version == "HTTP/2.0"
    assert interaction.complete and interaction.outcome is Outcome.CLEAN
    assert_faithful(recording, [data for _, data in events])  # one chunk per DATA frame
    assert_gaps_follow_stamps(chunks)


@pytest.mark.parametrize("command", ["record", "replay"])
def test_a_damaged_ca_is_one_line_before_anything_listens(command: str, tmp_path: Path) -> None:
    """mitmproxy started with it and said nothing: every HTTPS client failed its handshake
    while the printed CA file did not exist (an audit found it)."""
    confdir = tmp_path / "conf"
    confdir.mkdir()
    (confdir / "mitmproxy-ca.pem").write_text("garbage\n")
    cassette = tmp_path / "c.sqlite"
    args = (["record", str(cassette)] if command == "record"
            else ["replay", str(REPO / "cassettes" / "progress.sse"), "--proxy"])
    done = subprocess.run([SSE_RECORDER, *args, "--listen-port", "0", "--confdir",
                           str(confdir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "mitmproxy-ca.pem: not a PEM certificate and private key" in done.stderr
    assert not cassette.exists()

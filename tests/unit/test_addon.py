"""Unit tests for the mitmproxy addon `sse_recorder.mitm.record_addon`, driven through `taddons`."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.flow import Error

from sse_recorder.mitm.record_addon import Recorder, classify_error
from sse_recorder.model import Chunk, Interaction, Outcome, RecordedEvent
from sse_recorder.record.redact import MARKER
from sse_recorder.record.session import LAG_HIGH_NS
from sse_recorder.store.cassette import Cassette

with warnings.catch_warnings():
    # taddons imports mitmproxy.master -> addons.proxyauth -> ldap3, which uses names that
    # pyasn1 >= 0.6.2 deprecates (DeprecationWarning attributed to ldap3.utils.asn1, outside
    # the pyproject's mitmproxy.* ignore). Scoped to this import only.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    from mitmproxy.test import taddons, tflow, tutils

H1_TRUNCATED = (
    "HTTP/1 protocol error: peer closed connection without sending complete message body"
)

# --------------------------------------------------------------------------------------------
# classify_error: every message of the notes' failure table


@pytest.mark.parametrize(
    ("message", "client_open", "server_open", "server_reset", "expected"),
    [
        ("Client disconnected.", False, False, False, Outcome.CLIENT_GONE),
        ("Client disconnected.", True, True, False, Outcome.CLIENT_GONE),  # idle timeout too
        (f"{H1_TRUNCATED} (incomplete chunked read)", True, False, False,
         Outcome.CLOSED),
        (f"{H1_TRUNCATED} (incomplete chunked read)", True, False, True,
         Outcome.RESET),
        (f"{H1_TRUNCATED} (received 189 bytes, expected 630)", True, False, False,
         Outcome.CLOSED),
        (f"{H1_TRUNCATED} (received 189 bytes, expected 630)", True, False, True,
         Outcome.RESET),
        ("peer closed connection", False, True, False, Outcome.CLIENT_GONE),
        ("peer closed connection", True, False, False, Outcome.CLOSED),
        ("peer closed connection", True, False, True, Outcome.RESET),
        ("peer closed connection", True, True, False, Outcome.PROXY_ERROR),
        ("stream reset by client (CANCEL)", True, True, False, Outcome.CLIENT_GONE),
        ("stream reset by client (INTERNAL_ERROR)", True, True, False,
         Outcome.RESET),
        (Error.KILLED_MESSAGE, True, True, False, Outcome.PROXY_ERROR),
        ("Connection killed.", True, False, True, Outcome.PROXY_ERROR),
        ("TLS handshake failed", True, True, False, Outcome.PROXY_ERROR),
        ("Server disconnected.", True, False, False, Outcome.PROXY_ERROR),
        ("", True, True, False, Outcome.PROXY_ERROR),
    ],
)
def test_classify_error(
    message: str, client_open: bool, server_open: bool, server_reset: bool, expected: Outcome
) -> None:
    assert (
        classify_error(
            message, client_open=client_open, server_open=server_open, server_reset=server_reset
        )
        is expected
    )


def test_killed_message_is_the_one_in_the_notes() -> None:
    assert Error.KILLED_MESSAGE == "Connection killed."


# --------------------------------------------------------------------------------------------
# driving the addon with taddons and tflow


@dataclass
class Harness:
    recorder: Recorder
    tctx: taddons.context
    path: Path


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    recorder = Recorder()
    path = tmp_path / "rec.cassette"
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, sse_cassette=str(path))
        await recorder.running()
        assert recorder.session is not None
        try:
            yield Harness(recorder, tctx, path)
        finally:
            if recorder.session is not None:
                await recorder.done()


async def stored(path: Path) -> tuple[list[Interaction], dict[int, list[Chunk]],
                                      dict[int, list[RecordedEvent]]]:
    async with await Cassette.open(path) as cassette:
        interactions = await cassette.interactions()
        chunks = {i.id: [c async for c in cassette.chunks(i.id)] for i in interactions}
        events = {i.id: await cassette.events(i.id) for i in interactions}
    return interactions, chunks, events


def request(
    path: str = "/v1/stream", method: str = "POST", host: str = "api.example.com"
) -> http.Request:
    return tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=method.encode(),
        path=path.encode(),
        headers=http.Headers(
            [(b"Authorization", b"Bearer HDR-SECRET"), (b"Content-Type", b"application/json")]
        ),
        content=b'{"stream": true, "api_key": "BODY-SECRET"}',
    )


def sse_response(framing: tuple[bytes, bytes] | None = (b"transfer-encoding", b"chunked")
                 ) -> http.Response:
    headers = [(b"content-type", b"text/event-stream"), (b"set-cookie", b"sid=COOKIE-SECRET")]
    if framing is not None:
        headers.append(framing)
    return tutils.tresp(headers=http.Headers(headers), content=b"")


async def test_sse_flow_is_streamed_and_recorded(harness: Harness) -> None:
    recorder = harness.recorder
    flow = tflow.tflow(req=request("/v1/stream?api_key=QUERY-SECRET&model=m"))
    recorder.request(flow)
    flow.response = sse_response()
    recorder.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)

    chunks = [b'data: {"access_token": "SSE-SECRET"}\n\n', b"data: tw", b"o\n\n: ping\n\n"]
    for chunk in chunks:
        assert stream(chunk) is chunk  # forwarded untouched (not redacted, not copied)
    assert stream(b"") == []  # never b"": that would end a chunked body early
    recorder.response(flow)
    await recorder.done()

    (interaction,), got_chunks, events = await stored(harness.path)
    assert interaction.request.method == "POST"
    assert interaction.request.url == (
        f"https://api.example.com/v1/stream?api_key={MARKER}&model=m"
    )
    assert dict(interaction.request.headers)["Authorization"] == MARKER
    assert interaction.request.body == f'{{"stream": true, "api_key": "{MARKER}"}}'.encode()
    assert interaction.response is not None
    assert interaction.response.status == 200
    assert dict(interaction.response.headers)["set-cookie"] == MARKER
    assert interaction.is_sse and interaction.complete
    assert interaction.outcome is Outcome.CLEAN
    data = [c.data for c in got_chunks[interaction.id]]
    assert data == [
        f'data: {{"access_token": "{MARKER}"}}\n\n'.encode(), b"data: tw", b"o\n\n: ping\n\n"
    ]
    offsets = [c.offset_ns for c in got_chunks[interaction.id]]
    assert offsets == sorted(offsets) and offsets[0] >= 0
    assert [(e.kind, e.data) for e in events[interaction.id]] == [
        ("event", f'{{"access_token": "{MARKER}"}}'),
        ("event", "two"),
        ("comment", "ping"),
    ]
    raw = harness.path.read_bytes()
    assert b"SECRET" not in raw


async def test_non_sse_flow_is_stored_whole(harness: Harness) -> None:
    recorder = harness.recorder
    flow = tflow.tflow(req=request("/v1/models", method="GET"))
    recorder.request(flow)
    body = b'{"data": [{"id": "m1"}], "refresh_token": "JSON-SECRET"}'
    flow.response = tutils.tresp(
        headers=http.Headers([(b"content-type", b"application/json"),
                              (b"content-length", str(len(body)).encode())]), content=body
    )
    recorder.responseheaders(flow)
    assert flow.response.stream is False  # buffered by mitmproxy as usual
    recorder.response(flow)
    await recorder.done()

    (interaction,), got_chunks, events = await stored(harness.path)
    assert not interaction.is_sse and interaction.complete
    assert [c.data for c in got_chunks[interaction.id]] == [
        f'{{"data": [{{"id": "m1"}}], "refresh_token": "{MARKER}"}}'.encode()
    ]
    assert events[interaction.id] == []


async def test_close_delimited_sse_ending_mid_event_is_upstream_closed(harness: Harness) -> None:
    recorder = harness.recorder
    cut = tflow.tflow(req=request())
    recorder.request(cut)
    cut.response = sse_response(framing=None)  # no Content-Length, no Transfer-Encoding
    recorder.responseheaders(cut)
    assert callable(cut.response.stream)
    cut.response.stream(b"data: 1\n\ndata: 2")
    recorder.response(cut)  # mitmproxy reports a clean end: the framing cannot tell

    whole = tflow.tflow(req=request())
    recorder.request(whole)
    whole.response = sse_response(framing=None)
    recorder.responseheaders(whole)
    assert callable(whole.response.stream)
    whole.response.stream(b"data: 1\n\n")
    recorder.response(whole)
    await recorder.done()

    (first, second), _, _ = await stored(harness.path)
    assert (first.outcome, first.complete) == (Outcome.CLOSED, False)
    assert (second.outcome, second.complete) == (Outcome.CLEAN, True)


async def test_error_flow_is_stored_as_client_gone(harness: Harness) -> None:
    recorder = harness.recorder
    flow = tflow.tflow(req=request())
    recorder.request(flow)
    flow.response = sse_response()
    recorder.responseheaders(flow)
    assert callable(flow.response.stream)
    flow.response.stream(b"data: 1\n\n")
    flow.error = tflow.terr("Client disconnected.")
    recorder.error(flow)
    recorder.response(flow)  # a stray second finalization changes nothing
    await recorder.done()

    (interaction,), got_chunks, _ = await stored(harness.path)
    assert interaction.outcome is Outcome.CLIENT_GONE
    assert interaction.complete is False
    assert interaction.error == "Client disconnected."
    assert [c.data for c in got_chunks[interaction.id]] == [b"data: 1\n\n"]


async def test_errors_while_mitmproxy_stops_are_recording_stopped(harness: Harness) -> None:
    recorder = harness.recorder
    flow = tflow.tflow(req=request())
    recorder.request(flow)
    flow.response = sse_response()
    recorder.responseheaders(flow)
    assert callable(flow.response.stream)
    flow.response.stream(b"data: 1\n\ndata: 2")
    harness.tctx.master.should_exit.set()  # shutting down: mitmproxy closes the connections
    flow.error = tflow.terr("Client disconnected.")
    recorder.error(flow)
    await recorder.done()

    (interaction,), got_chunks, _ = await stored(harness.path)
    assert interaction.outcome is Outcome.STOPPED
    assert interaction.complete is False
    assert [c.data for c in got_chunks[interaction.id]] == [b"data: 1\n\ndata: 2"]


async def test_error_before_any_response(harness: Harness) -> None:
    recorder = harness.recorder
    flow = tflow.tflow(req=request())
    recorder.request(flow)
    flow.error = tflow.terr("TLS handshake failed")
    recorder.error(flow)
    await recorder.done()

    (interaction,), _, _ = await stored(harness.path)
    assert interaction.response is None
    assert interaction.outcome is Outcome.PROXY_ERROR
    assert interaction.error == "TLS handshake failed"


async def test_include_and_exclude_filters(harness: Harness) -> None:
    recorder, tctx = harness.recorder, harness.tctx
    tctx.configure(
        recorder,
        sse_include=["POST api.example.com/v1/*"],
        sse_exclude=["*/v1/private*"],
    )
    flows = {
        "included": tflow.tflow(req=request("/v1/stream?x=1")),
        "excluded": tflow.tflow(req=request("/v1/private/stream")),
        "not-included-method": tflow.tflow(req=request("/v1/stream", method="GET")),
        "not-included-host": tflow.tflow(req=request("/v1/stream", host="other.example.com")),
    }
    for flow in flows.values():
        recorder.request(flow)
        flow.response = sse_response()
        recorder.responseheaders(flow)
        if callable(flow.response.stream):
            flow.response.stream(b"data: 1\n\n")
        recorder.response(flow)
    for name, flow in flows.items():
        assert callable(flow.response.stream) == (name == "included"), name
    await recorder.done()

    interactions, got_chunks, _ = await stored(harness.path)
    assert [i.request.url for i in interactions] == ["https://api.example.com/v1/stream?x=1"]
    assert len(got_chunks[interactions[0].id]) == 1


async def test_bad_route_is_an_options_error(harness: Harness) -> None:
    recorder, tctx = harness.recorder, harness.tctx
    with pytest.raises(exceptions.OptionsError, match="bad route"):
        tctx.configure(recorder, sse_include=["GET api.example.com/a b"])
    with pytest.raises(exceptions.OptionsError, match="bad route"):
        tctx.configure(recorder, sse_exclude=[""])
    assert recorder.filter.allows("GET", "anything", "/")  # still the previous (empty) filter


async def test_cassette_cannot_change_while_recording(harness: Harness) -> None:
    with pytest.raises(exceptions.OptionsError, match="cannot change"):
        harness.tctx.configure(harness.recorder, sse_cassette=str(harness.path) + ".other")


async def test_storage_failure_kills_flows_and_stops_the_proxy(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real storage failure in the writer process (the cassette deleted under it)."""
    recorder = harness.recorder
    assert recorder.session is not None
    harness.path.unlink()
    live = tflow.tflow(req=request())
    recorder.request(live)
    # the writer fails on its first batch and asks mitmproxy to shut down
    await asyncio.wait_for(harness.tctx.master.should_exit.wait(), timeout=5)
    assert recorder.failed
    assert live.error is not None and live.error.msg == Error.KILLED_MESSAGE

    later = tflow.tflow(req=request())
    recorder.request(later)  # new traffic is refused instead of passing unrecorded
    assert later.error is not None and later.error.msg == Error.KILLED_MESSAGE
    with pytest.raises(SystemExit) as info:
        await recorder.done()
    assert info.value.code == 1


async def test_a_request_before_running_waits_for_the_cassette(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "rec.cassette"
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, sse_cassette=str(path))
        early = tflow.tflow(req=request("/v1/early"))
        pending = recorder.request(early)  # mitmproxy is listening, the cassette not open yet
        assert pending is not None
        waiting = asyncio.ensure_future(pending)
        await asyncio.sleep(0)
        assert not waiting.done()
        await recorder.running()
        await asyncio.wait_for(waiting, timeout=5)
        assert recorder.request(tflow.tflow(req=request("/v1/later"))) is None  # no wait now
        await recorder.done()
    interactions, _, _ = await stored(path)
    assert [i.request.url for i in interactions] == [
        "https://api.example.com/v1/early", "https://api.example.com/v1/later"
    ]
    assert all(i.outcome is Outcome.STOPPED for i in interactions)


async def test_without_a_cassette_option_nothing_is_recorded(tmp_path: Path) -> None:
    recorder = Recorder()
    with taddons.context(recorder):
        await recorder.running()
        assert recorder.session is None
        flow = tflow.tflow(req=request())
        recorder.request(flow)
        flow.response = sse_response()
        recorder.responseheaders(flow)
        assert flow.response.stream is True  # streamed through live, no recorder callable
        await recorder.done()
    assert list(tmp_path.iterdir()) == []


async def test_a_bad_cassette_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "not-a-cassette.db"
    path.write_bytes(b"hello, I am a text file" * 100)
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, sse_cassette=str(path))
        await recorder.running()
        assert recorder.session is None
        await recorder.done()
    assert path.read_bytes() == b"hello, I am a text file" * 100


# --------------------------------------------------------------------------------------------
# secret values and backpressure


async def test_secret_values_and_env_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSE_TEST_ADDON_SECRET", "ENV-VALUE-7788")
    recorder = Recorder()
    path = tmp_path / "rec.cassette"
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, sse_cassette=str(path), sse_redact_values=["GIVEN-VALUE-99"],
                       sse_redact_env=["SSE_TEST_ADDON_SECRET"])
        await recorder.running()
        flow = tflow.tflow(req=request("/v1/GIVEN-VALUE-99/stream"))
        recorder.request(flow)
        flow.response = sse_response()
        recorder.responseheaders(flow)
        stream = flow.response.stream
        assert callable(stream)
        stream(b"data: ENV-VALUE-7788 and GIVEN-VALUE-99\n\n")
        recorder.response(flow)
        await recorder.done()
    (interaction,), _, events = await stored(path)
    assert interaction.request.url == f"https://api.example.com/v1/{MARKER}/stream"
    assert [e.data for e in events[interaction.id]] == [f"{MARKER} and {MARKER}"]
    raw = path.read_bytes()
    assert b"ENV-VALUE-7788" not in raw and b"GIVEN-VALUE-99" not in raw


async def test_bad_secret_options_are_options_errors(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSE_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(exceptions.OptionsError, match="SSE_TEST_UNSET_VARIABLE is not set"):
        harness.tctx.configure(harness.recorder, sse_redact_env=["SSE_TEST_UNSET_VARIABLE"])
    with pytest.raises(exceptions.OptionsError, match="empty value"):
        harness.tctx.configure(harness.recorder, sse_redact_values=[""])


async def test_a_congested_writer_pauses_the_upstream_until_it_drains(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While uncommitted data is older than LAG_HIGH_NS (judged once the writer's answers
    are read), each streamed chunk pauses reading from its upstream (a real loopback
    connection here); the commit that brings the lag down resumes it."""
    accepted: list[asyncio.StreamWriter] = []

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    class IO:  # what mitmproxy's connection handler keeps per connection
        writer = upstream_writer

    recorder = harness.recorder
    monkeypatch.setattr(recorder.transports, "io_of", lambda connection: IO())
    session = recorder.session
    assert session is not None
    flow = tflow.tflow(req=request())
    recorder.request(flow)
    flow.response = sse_response()
    recorder.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    transport = upstream_writer.transport
    try:
        stream(b"data: 1\n\n")
        assert transport.is_reading()  # the writer keeps up: nothing paused
        session.backlog_since_ns = time.monotonic_ns() - 2 * LAG_HIGH_NS  # it fell behind
        session._update_due()
        stream(b"data: 2\n\n")  # the writer's answers are read at the turn's end first
        assert transport.is_reading() and not session.congested
        await asyncio.sleep(0)
        stream(b"data: 3\n\n")  # still behind: paused
        assert not transport.is_reading() and session.congested
        await session.flush()  # the writer commits, the lag falls: reading resumes
        assert transport.is_reading() and not session.congested
        recorder.response(flow)
    finally:
        for writer in (upstream_writer, *accepted):
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

"""The demo upstream against real clients: raw sockets, httpx, httpx-sse and the vendor SDKs.

The raw-socket tests read the HTTP/1.1 chunked framing themselves, because the point of the
demo upstream is that every server write is exactly one chunk a recorder can see.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import anthropic
import httpx
import openai
import pytest
from httpx_sse import aconnect_sse

from sse_recorder.demo import upstream as demo
from sse_recorder.sse import Comment, Event, parse

pytestmark = pytest.mark.integration


@pytest.fixture
async def up() -> AsyncIterator[demo.DemoUpstream]:
    async with demo.DemoUpstream() as upstream:
        yield upstream


@pytest.fixture
async def client(up: demo.DemoUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=up.base_url, timeout=5) as http:
        yield http


class Raw:
    """A bare HTTP/1.1 client on one socket that keeps the server's chunk boundaries."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.times: list[float] = []  # when each chunk of the last `chunks()` arrived

    @classmethod
    async def connect(cls, up: demo.DemoUpstream) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", up.port))

    async def request(self, target: str, method: str = "GET", body: object = None,
                      headers: str = "") -> bytes:
        """Send a request and return the response head."""
        data = b"" if body is None else json.dumps(body).encode()
        length = f"Content-Length: {len(data)}\r\n" if data else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: demo\r\n{headers}{length}\r\n"
        self.writer.write(head.encode() + data)
        return await self.reader.readuntil(b"\r\n\r\n")

    async def chunks(self) -> list[bytes]:
        """Chunk payloads up to the terminating chunk, or up to EOF for an unfinished body."""
        out: list[bytes] = []
        self.times = []
        while line := await self.reader.readline():
            size = int(line.strip(), 16)
            data = await self.reader.readexactly(size + 2)
            assert data[-2:] == b"\r\n"
            if size == 0:
                break
            out.append(data[:-2])
            self.times.append(time.monotonic())
        return out

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll a condition with a deadline (readiness, not a synchronising sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def events(body: bytes) -> list[Event]:
    return [item for item in parse(body) if isinstance(item, Event)]


# --- one chunk per write, on every route --------------------------------------------------------

CHAT = {"model": "gpt-demo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
STREAMS = [
    ("/ci/logs", None, demo.ci_log_writes()),
    ("/deploy", None, demo.deploy_writes()),
    ("/heartbeat", None, demo.heartbeat_writes()),
    ("/patterns", None, demo.patterns_writes()),
    ("/crlf", None, demo.crlf_writes()),
    ("/ticks?n=12", None, demo.ticks_writes(12)),
    ("/ticks?n=7&batch=3", None, demo.ticks_writes(7, batch=3)),
    ("/ticks?n=5&split=1&split_ms=1", None, demo.ticks_writes(5, split=True)),
    ("/ticks?n=4&size=300", None, demo.ticks_writes(4, size=300)),
    ("/v1/chat/completions", CHAT, demo.openai_chat_writes("gpt-demo")),
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}},
     demo.openai_chat_writes("gpt-demo", include_usage=True)),
    ("/v1/messages", {**CHAT, "model": "claude-demo"},
     demo.anthropic_message_writes("claude-demo")),
]


@pytest.mark.parametrize(("target", "body", "writes"), STREAMS, ids=[s[0] for s in STREAMS])
async def test_every_write_is_one_chunk(up: demo.DemoUpstream, target: str, body: object,
                                        writes: list[bytes]) -> None:
    raw = await Raw.connect(up)
    sep = "&" if "?" in target else "?"
    method = "GET" if body is None else "POST"
    head = await raw.request(f"{target}{sep}interval_ms=1", method, body)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    assert await raw.chunks() == writes
    await raw.close()
    items = parse(b"".join(writes))
    assert any(isinstance(item, Event) for item in items)
    for event in events(b"".join(writes)):
        if target != "/crlf" and event.data != "[DONE]":
            json.loads(event.data)


async def test_every_listed_route_is_served(client: httpx.AsyncClient) -> None:
    for route in demo.ROUTES:
        if route.path == "/reset":
            continue  # ends in a reset: see test_reset_is_a_client_error
        body = {} if route.method == "POST" else None
        response = await client.request(route.method, route.path, json=body,
                                        params={"interval_ms": 0, "n": 2})
        assert response.status_code == 200 and route.description, route


# --- /ticks: timing, framing and endings ------------------------------------------------------


async def test_ticks_follow_the_schedule(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    sent = time.monotonic()
    await raw.request("/ticks?n=10&interval_ms=30&first_ms=60")
    assert time.monotonic() - sent >= 0.06 * 0.9
    assert await raw.chunks() == demo.ticks_writes(10)
    assert raw.times[-1] - raw.times[0] >= 9 * 0.030 * 0.9
    await raw.close()


async def test_split_halves_are_separate_chunks_split_ms_apart(up: demo.DemoUpstream) -> None:
    """The second half is due split_ms after the head, which is written after the request
    was sent: a bound that holds however late the first half is read (measuring between
    the two arrivals failed under load, when the first was read late)."""
    raw = await Raw.connect(up)
    sent = time.monotonic()
    await raw.request("/ticks?n=3&split=1&split_ms=40&interval_ms=100")
    chunks = await raw.chunks()
    await raw.close()
    assert b"".join(chunks[:2]) == demo.tick_event(0) and len(chunks) == 6
    assert raw.times[1] - sent >= 0.040 * 0.9


async def test_keep_alive_serves_requests_in_turn(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    for n in (2, 3):
        await raw.request(f"/ticks?n={n}&interval_ms=0")
        assert await raw.chunks() == demo.ticks_writes(n)
    head = await raw.request("/v1/models")
    assert b"Content-Length: " in head.title()
    await raw.close()


async def test_stamp_adds_the_server_clock(client: httpx.AsyncClient) -> None:
    response = await client.get("/ticks", params={"n": 5, "interval_ms": 2, "stamp": 1})
    stamps = [json.loads(e.data)["t"] for e in events(response.content)]
    assert stamps == sorted(stamps) and stamps[-1] <= time.monotonic_ns()


async def test_framing_length(client: httpx.AsyncClient) -> None:
    response = await client.get("/ticks", params={"n": 6, "interval_ms": 1, "framing": "length"})
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content == b"".join(demo.ticks_writes(6))


async def test_framing_close(up: demo.DemoUpstream, client: httpx.AsyncClient) -> None:
    response = await client.get("/ticks", params={"n": 6, "interval_ms": 1, "framing": "close"})
    assert response.headers["connection"] == "close"
    assert "content-length" not in response.headers and "transfer-encoding" not in response.headers
    assert response.content == b"".join(demo.ticks_writes(6))
    raw = await Raw.connect(up)
    await raw.request("/ticks?n=3&interval_ms=0&framing=close&end=close")
    body = await raw.reader.read()  # to EOF: the body is cut inside its last event
    assert body == b"".join(demo.ticks_writes(3, end="close"))
    assert len(events(body)) == 2
    await raw.close()


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_end_close_is_an_incomplete_body(client: httpx.AsyncClient, framing: str) -> None:
    params = {"n": 4, "interval_ms": 1, "end": "close", "framing": framing}
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("GET", "/ticks", params=params) as response:
            async for data in response.aiter_raw():
                received += data
    assert received == b"".join(demo.ticks_writes(4, end="close"))
    assert [e.id for e in events(received)] == ["0", "1", "2"]


async def test_end_close_chunked_has_no_terminating_chunk(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    await raw.request("/ticks?n=3&batch=2&interval_ms=0&end=close")
    assert await raw.chunks() == demo.ticks_writes(3, batch=2, end="close")
    assert raw.reader.at_eof()
    await raw.close()


@pytest.mark.parametrize(
    "target", ["/reset", "/ticks?n=4&end=reset", "/ticks?n=4&end=reset&framing=length"])
async def test_reset_is_a_client_error(client: httpx.AsyncClient, target: str) -> None:
    received = b""
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        async with client.stream("GET", target) as response:
            async for data in response.aiter_raw():
                received += data
    expected = demo.reset_writes() if target == "/reset" else demo.ticks_writes(4, end="reset")
    assert received == b"".join(expected)


async def test_hang_stays_open_until_the_client_leaves(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    await raw.request("/ticks?n=3&interval_ms=1&end=hang")
    for expected in demo.ticks_writes(3):  # no terminating chunk will come
        size = int(await raw.reader.readline(), 16)
        assert (await raw.reader.readexactly(size + 2))[:-2] == expected
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(raw.reader.read(1), timeout=0.2)
    assert up.open_connections == 1
    await raw.close()
    await eventually(lambda: up.open_connections == 0)


@pytest.mark.parametrize("abort", [False, True], ids=["fin", "rst"])
async def test_client_leaving_mid_stream_is_quiet(up: demo.DemoUpstream, abort: bool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    raw = await Raw.connect(up)
    await raw.request("/ticks?n=100000&interval_ms=1")
    await raw.reader.readline()
    if abort:
        raw.writer.transport.abort()
    else:
        await raw.close()
    await eventually(lambda: up.open_connections == 0)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_close_aborts_open_streams(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    await raw.request("/ticks?n=3&interval_ms=0&end=hang")
    await eventually(lambda: up.open_connections == 1)
    await up.close()
    assert up.open_connections == 0
    rest = await asyncio.wait_for(raw.reader.read(), 2)  # reaches EOF: the server hung up
    assert not rest.endswith(b"0\r\n\r\n")
    await raw.close()


# --- the vendor formats through real clients --------------------------------------------------


async def test_openai_sdk_streams_and_completes(up: demo.DemoUpstream) -> None:
    def run() -> tuple[list[str], openai.types.CompletionUsage | None, str | None]:
        with openai.OpenAI(base_url=up.base_url + "/v1", api_key="test", max_retries=0) as sdk:
            messages = [{"role": "user", "content": "hi"}]
            stream = sdk.chat.completions.create(
                model="gpt-demo", messages=messages, stream=True,
                stream_options={"include_usage": True})
            chunks = list(stream)
            text = [c.choices[0].delta.content or "" for c in chunks if c.choices]
            done = sdk.chat.completions.create(model="gpt-demo", messages=messages)
            return text, chunks[-1].usage, done.choices[0].message.content

    text, usage, content = await asyncio.to_thread(run)
    assert "".join(text) == "".join(demo.TEXT) == content
    assert usage is not None and usage.completion_tokens == len(demo.TEXT)


async def test_anthropic_sdk_streams_and_completes(up: demo.DemoUpstream) -> None:
    def run() -> tuple[list[str], anthropic.types.Message, anthropic.types.Message]:
        with anthropic.Anthropic(base_url=up.base_url, api_key="test", max_retries=0) as sdk:
            args = {"model": "claude-demo", "max_tokens": 64,
                    "messages": [{"role": "user", "content": "hi"}]}
            with sdk.messages.stream(**args) as stream:
                deltas = list(stream.text_stream)
                final = stream.get_final_message()
            return deltas, final, sdk.messages.create(**args)

    deltas, final, message = await asyncio.to_thread(run)
    assert deltas == demo.TEXT
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(demo.TEXT)
    assert final.content[0].text == message.content[0].text == "".join(demo.TEXT)


async def test_models_is_plain_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.headers["content-length"] == str(len(response.content))
    assert [m["object"] for m in response.json()["data"]] == ["model", "model"]


async def test_ci_logs_resume_after_last_event_id(up: demo.DemoUpstream) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        # httpx-sse dispatches the data-less `retry: 1000` block as an empty event; the spec
        # (and sse_recorder.sse) does not, so it is dropped here.
        url = up.base_url + "/ci/logs?interval_ms=1"
        async with aconnect_sse(http, "GET", url) as source:
            full = [sse async for sse in source.aiter_sse() if sse.data]
        async with aconnect_sse(http, "GET", url, headers={"Last-Event-ID": full[4].id}) as source:
            resumed = [sse async for sse in source.aiter_sse() if sse.data]
    assert [e.id for e in full] == [str(i) for i in range(1, len(full) + 1)]
    assert source.response.is_closed and [e.id for e in resumed] == [e.id for e in full[5:]]
    assert {e.event for e in full} == {"workflow_run", "job_step", "log_line"}
    assert demo.ci_log_writes(full[4].id)[0] == b"retry: 1000\n\n"


async def test_seed_patterns_parse(client: httpx.AsyncClient) -> None:
    deploy = events((await client.get("/deploy", params={"interval_ms": 0})).content)
    transition = next(e for e in deploy if e.type == "state-transition")
    assert "\n" in transition.data and json.loads(transition.data)["currentState"] == "deploying"
    assert [json.loads(e.data)["step"] for e in deploy if e.type == "status"] == [1, 2, 3, 4, 5]
    beats = parse((await client.get("/heartbeat", params={"interval_ms": 0})).content)
    assert Comment("heartbeat") in beats
    assert {"ping", "heartbeat", "keep-alive", "message"} <= {
        i.type for i in beats if isinstance(i, Event)}
    patterns = events((await client.get("/patterns", params={"interval_ms": 0})).content)
    token = json.loads(next(e for e in patterns if e.type == "token-refresh").data)
    assert {"newToken", "refreshToken"} <= token.keys()
    assert patterns[0].type == "stream-start" and patterns[-1].type == "stream-end"
    crlf = events((await client.get("/crlf", params={"interval_ms": 0})).content)
    assert [e.data for e in crlf[:2]] == ["첫째 줄\n둘째 줄", "line one\nline two"]


# --- errors and the CLI entry point -----------------------------------------------------------


async def test_unknown_path_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/plain")
    assert (await client.delete("/ticks")).status_code == 405
    head = await client.head("/v1/models")
    assert head.status_code == 405 and head.content == b""
    assert (await client.get("/v1/models")).status_code == 200  # the connection still works


async def test_bad_parameters_are_400(client: httpx.AsyncClient) -> None:
    for params in ({"n": "x"}, {"framing": "pigeon"}, {"batch": "0"}):
        assert (await client.get("/ticks", params=params)).status_code == 400
    bad_json = await client.post("/v1/messages", content=b"{not json")
    assert bad_json.status_code == 400


async def test_malformed_request_is_400_and_close(up: demo.DemoUpstream) -> None:
    raw = await Raw.connect(up)
    raw.writer.write(b"NOT AN HTTP REQUEST\r\n\r\n")
    response = await raw.reader.read()  # to EOF: the server closes
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in response.lower()
    await raw.close()


async def test_a_body_over_the_cap_is_413_and_close(
    up: demo.DemoUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sse_recorder.demo.http11.MAX_REQUEST_BODY", 10)
    raw = await Raw.connect(up)
    body = b'{"model": "over ten bytes"}'
    raw.writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
    response = await raw.reader.read()  # to EOF: the server closes
    assert response.startswith(b"HTTP/1.1 413 ") and b"over 10 bytes" in response
    await raw.close()


async def test_serve_reports_its_url_and_stops_on_cancel() -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(demo.serve("127.0.0.1", 0, ready.set_result))
    url = await asyncio.wait_for(ready, 5)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url + "/v1/models")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

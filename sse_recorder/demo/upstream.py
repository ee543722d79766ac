"""The built-in demo upstream: a deterministic SSE server for the README demo, tests and benches.

Invariants:
- every write is one `writer.write()` + `drain()` and, when chunked, exactly one HTTP/1.1 chunk,
  so the chunk boundaries a recorder sees are the server's write boundaries;
- bodies are a pure function of the request (except `/ticks?stamp=1`): the `*_writes` helpers
  return the exact bytes each route writes, so tests can compare recordings byte for byte;
- write i is due at head + i * interval (an absolute schedule), so timing does not drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from ssl import SSLContext
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import h11

from sse_recorder.demo.http11 import read_request
from sse_recorder.demo.payloads import KOREAN, service_events
from sse_recorder.sse import encode_event
from sse_recorder.wire.connections import reset
from sse_recorder.wire.requests import BadRequest

__all__ = [
    "ROUTES", "TEXT", "DemoUpstream", "Request", "Route", "Ticks", "anthropic_message_json",
    "anthropic_message_writes", "ci_log_writes", "crlf_writes", "deploy_writes",
    "heartbeat_writes", "openai_chat_json", "openai_chat_writes", "patterns_writes",
    "reset_writes", "serve", "tick_event", "ticks_writes",
]

SSE = "text/event-stream; charset=utf-8"
CREATED = 1_700_000_000  # a fixed clock keeps every body deterministic
TEXT = ["안녕하세요", "! ", "SSE ", "데모 ", "업스트림", "입니다", "."]  # one delta per piece


def _json(value: object) -> str:
    """Compact UTF-8 JSON, as the vendor APIs send it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _events(items: Sequence[tuple[str | None, object]], **fields: Any) -> list[bytes]:
    """One write per (event name, JSON data) pair; data shown as text is multi-line JSON."""
    out = []
    for name, data in items:
        text = data if isinstance(data, str) else _json(data)
        out.append(encode_event(text, event=name, **fields))
    return out


# --- OpenAI Chat Completions and Anthropic Messages ------------------------------------------


def openai_chat_writes(model: str = "gpt-4o-mini", include_usage: bool = False) -> list[bytes]:
    """`chat.completion.chunk` data lines, then `[DONE]`; usage comes in a last chunk of its own."""
    base = {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_demo"}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, object]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return None, {**base, "choices": [choice], **extra}

    items = [chunk({"role": "assistant", "content": "", "refusal": None})]
    items += [chunk({"content": piece}) for piece in TEXT]
    items.append(chunk({}, "stop"))
    if include_usage:
        items.append((None, {**base, "choices": [], "usage": _openai_usage()}))
    return _events(items) + [b"data: [DONE]\n\n"]


def _openai_usage() -> dict[str, int]:
    return {"prompt_tokens": 12, "completion_tokens": len(TEXT), "total_tokens": 12 + len(TEXT)}


def openai_chat_json(model: str = "gpt-4o-mini") -> dict[str, Any]:
    """The non-streaming `chat.completion` with the same text."""
    message = {"role": "assistant", "content": "".join(TEXT), "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return {"id": "chatcmpl-demo", "object": "chat.completion", "created": CREATED,
            "model": model, "choices": [choice], "usage": _openai_usage(),
            "system_fingerprint": "fp_demo"}


def anthropic_message_json(model: str = "claude-sonnet-4-5", done: bool = True) -> dict[str, Any]:
    """A Messages API `message`; `done=False` is the empty one that `message_start` carries."""
    content = [{"type": "text", "text": "".join(TEXT)}] if done else []
    return {"id": "msg_demo", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "end_turn" if done else None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": len(TEXT) if done else 1}}


def anthropic_message_writes(model: str = "claude-sonnet-4-5") -> list[bytes]:
    """Named events exactly as the Messages API streams them, one text block."""
    start = {"type": "message_start", "message": anthropic_message_json(model, done=False)}
    text = {"type": "text", "text": ""}
    block = {"type": "content_block_start", "index": 0, "content_block": text}
    items: list[tuple[str | None, object]] = [
        ("message_start", start),
        ("content_block_start", block),
        ("ping", {"type": "ping"}),
    ]
    items += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}})
              for piece in TEXT]
    items += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": len(TEXT)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _events(items)


# --- CI logs, deploys, heartbeats and other service patterns -------------------------------

_STEPS = [("Checkout", ["Fetching the repository", "HEAD is now at 1a2b3c4"]),
          ("Install dependencies", ["pip install -e .[dev]", "Successfully installed 42 packages"]),
          ("Run Tests", ["collected 128 items", "All tests passed!"])]


def _ci_events() -> list[tuple[str | None, object]]:
    items: list[tuple[str | None, object]] = [
        ("workflow_run", {"action": "started", "workflow": "CI Pipeline", "run_id": 4242})]
    for number, (name, lines) in enumerate(_STEPS, 1):
        items.append(("job_step", {"name": name, "status": "in_progress", "number": number}))
        items += [("log_line", {"line": line, "timestamp": f"2024-01-15T10:30:{len(items):02d}Z"})
                  for line in lines]
        items.append(("job_step", {"name": name, "status": "completed",
                                   "conclusion": "success", "number": number}))
    items.append(("workflow_run", {"action": "completed", "conclusion": "success"}))
    return items


def ci_log_writes(last_event_id: str | None = None) -> list[bytes]:
    """`retry: 1000`, then the events with ids after `last_event_id` (ids count from 1)."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    writes = [encode_event(retry=1000)]
    for i, (name, data) in enumerate(_ci_events(), 1):
        if i > after:
            writes += _events([(name, data)], id=str(i))
    return writes


def deploy_writes() -> list[bytes]:
    """Vercel-like progress; `state-transition` and `step-progress` carry multi-line JSON."""
    total = 1_048_576
    states = ["initializing", "building", "testing", "deploying", "complete"]
    status = [("status", {"state": s, "step": i, "total": 5}) for i, s in enumerate(states, 1)]
    transition = {"workflow": "ci-pipeline", "previousState": "testing",
                  "currentState": "deploying", "duration": 145000, "success": True}
    step = {"currentStep": "데이터 검증", "stepNumber": 1, "totalSteps": 4,
            "stepProgress": 100, "overallProgress": 25}
    items: list[tuple[str | None, object]] = [
        status[0], ("build-state", {"state": "queued", "progress": 0}),
        ("state-change", {"from": "pending", "to": "running", "trigger": "git-push"}),
        status[1], ("build-state", {"state": "building", "progress": 45}),
        *[("progress", {"percent": p, "bytes": total * p // 100, "total": total})
          for p in (0, 25, 50, 75, 100)],
        status[2], ("step-progress", json.dumps(step, ensure_ascii=False, indent=2)),
        status[3], ("state-transition", json.dumps(transition, indent=2)),
        ("creating-functions", {"functions": ["api/hello", "api/world"], "count": 2}),
        status[4], ("ready", {"url": "https://my-app.vercel.app", "duration": 35000}),
    ]
    return _events(items)


def heartbeat_writes() -> list[bytes]:
    """Comment heartbeats, `ping`, `heartbeat`, `keep-alive` between `message` events."""
    def message(seq: int) -> list[bytes]:
        return _events([(None, {"seq": seq, "text": f"메시지 {seq}"})])

    return [
        encode_event(comment="heartbeat"), *message(1),
        *_events([("ping", {"timestamp": "2024-01-15T10:30:00Z"})]), *message(2),
        *_events([("heartbeat", {"status": "alive", "uptime": 3600})]),
        encode_event(comment="heartbeat"),
        *_events([("keep-alive", {"connectionId": "abc123", "duration": 120, "nextPing": 30}),
                  ("connection-status", {"active": True, "latency": 15, "region": "us-east-1"})]),
        *message(3),
    ]


def patterns_writes() -> list[bytes]:
    """Control, error, retry, metadata and auth events as big services send them."""
    shaped = service_events(KOREAN)  # the payloads fault injection sends, in Korean here
    return _events([
        ("stream-start", {"id": "chatcmpl-123", "model": "gpt-4", "created": CREATED}),
        ("message", {"content": "스트리밍 응답 내용..."}),
        ("stream-pause", {"reason": "buffer_full", "position": 1024}),
        ("stream-resume", {"position": 1024, "buffered": True}),
        ("stream-throttle", {"rate": 0.5, "reason": "network_congestion"}),
        ("warning", shaped["warning"]),
        ("error", json.dumps(shaped["error"], ensure_ascii=False, indent=2)),
        ("retry-hint", shaped["retry-hint"]),
        ("backoff", shaped["backoff"]),
        ("system-info", {"serverId": "prod-us-east-1a", "version": "2.5.0", "uptime": 864000}),
        ("performance-metrics", {"cpu": 45.2, "memory": 78.5, "activeStreams": 523}),
        ("debug", {"action": "query_executed", "duration": 123, "affectedRows": 42,
                   "query": "SELECT * FROM users WHERE active = true"}),
        ("trace", {"requestId": "req-123", "spanId": "span-456", "operation": "database_query"}),
        ("token-refresh", {"newToken": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.demo.sig",
                           "expiresIn": 3600, "refreshToken": "refresh_token_demo"}),
        ("session-update", {"sessionId": "sess_123", "remainingTime": 1800, "autoExtended": True}),
        ("permission-change", {"userId": "user123", "changes": {
            "added": ["write", "delete"], "removed": ["admin"], "current": ["read", "write"]}}),
        ("access-granted", {"resource": "/api/premium-features", "level": "full",
                            "validUntil": "2024-12-31T23:59:59Z"}),
        ("stream-end", {"finish_reason": "stop", "usage": {"total_tokens": 150}}),
    ])


def crlf_writes() -> list[bytes]:
    """CRLF events, split between CR and LF and inside a multi-byte UTF-8 character."""
    one = encode_event("첫째 줄\n둘째 줄", event="crlf", id="1", newline="\r\n")
    two = encode_event("line one\nline two", event="crlf", id="2", newline="\r\n")
    three = encode_event("셋째 이벤트", id="3", newline="\r\n")
    four = encode_event("last", event="crlf", id="4", newline="\r\n")
    inside = one.index("둘".encode()) + 1  # the first byte of a three-byte character
    between = two.index(b"\r\n") + 1
    return [one[:inside], one[inside:], two[:between], two[between:], three, four[:-1], four[-1:]]


def reset_writes() -> list[bytes]:
    """The events sent before `/reset` resets the connection."""
    return _events([(None, {"i": i}) for i in range(3)])


# --- /ticks -----------------------------------------------------------------------------------

ENDS = ("clean", "close", "reset", "hang")


def tick_event(i: int, size: int = 0, stamp_ns: int | None = None) -> bytes:
    """Event i; the stamp is space-padded to a fixed width so lengths do not depend on it."""
    fields = f'"i": {i}' + ("" if stamp_ns is None else f', "t": {stamp_ns:>20d}')
    pad = size - len(fields) - 13
    data = "{" + fields + (f', "pad": "{"x" * pad}"' if pad > 0 else "") + "}"
    return encode_event(data, id=str(i))


@dataclass(frozen=True)
class Ticks:
    """The parameters of `/ticks` (see `ROUTES`)."""

    n: int = 50
    batch: int = 1
    split: bool = False
    end: str = "clean"
    size: int = 0
    stamp: bool = False

    @property
    def write_count(self) -> int:
        return -(-self.n // self.batch)

    def pieces(self, k: int, stamp_ns: int | None = None) -> list[bytes]:
        """What write k sends: its events, the last one cut for `end=close`, maybe split."""
        indices = range(k * self.batch, min(self.n, (k + 1) * self.batch))
        events = [tick_event(i, self.size, stamp_ns) for i in indices]
        if self.end == "close" and k == self.write_count - 1:
            events[-1] = events[-1][: len(events[-1]) // 2]
        data = b"".join(events)
        half = len(data) // 2
        return [data[:half], data[half:]] if self.split else [data]

    def declared_length(self) -> int:
        """For `framing=length`; an unclean end also declares one event that never comes."""
        clean = sum(len(tick_event(i, self.size, 0 if self.stamp else None)) for i in range(self.n))
        extra = len(tick_event(self.n, self.size, 0 if self.stamp else None))
        return clean + (extra if self.end != "clean" else 0)


def ticks_writes(n: int = 50, *, batch: int = 1, split: bool = False, end: str = "clean",
                 size: int = 0) -> list[bytes]:
    """The exact writes of `/ticks` with these parameters and `stamp=0`."""
    ticks = Ticks(n, batch, split, end, size)
    return [piece for k in range(ticks.write_count) for piece in ticks.pieces(k)]


# --- HTTP plumbing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a route sees of an HTTP request (header names are lower-case)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def number(self, name: str, default: int, low: int = 0, high: int = 10_000_000) -> int:
        """An integer query parameter; a bad value raises ValueError, which becomes a 400."""
        value = int(self.query.get(name, default))
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.query.get(name, default)
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        return value

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body or b"{}")
        if not isinstance(value, dict):
            raise ValueError("the body must be a JSON object")
        return value


class _Out:
    """Writes one response; in chunked mode every `write` is exactly one HTTP/1.1 chunk."""

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, no_body: bool = False) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer
        self.no_body = no_body  # a response to HEAD has a head only
        self.loop = asyncio.get_running_loop()
        self.raw = False  # close-delimited: h11 would choose chunked for an HTTP/1.1 client
        self.t0: float | None = None

    async def head(self, status: int, ctype: str = SSE, *, length: int | None = None,
                   close: bool = False) -> None:
        headers = [("content-type", ctype), ("cache-control", "no-cache")]
        headers += [("content-length", str(length))] if length is not None else []
        headers += [("connection", "close")] if close else []
        reason = HTTPStatus(status).phrase
        if close and length is None:
            self.raw = True
            lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
            await self._send(("\r\n".join(lines) + "\r\n\r\n").encode())
        else:
            await self._send(self.conn.send(h11.Response(status_code=status, headers=headers,
                                                         reason=reason)))
        self.t0 = self.loop.time()

    async def write(self, data: bytes) -> None:
        if not self.no_body:
            await self._send(data if self.raw else self.conn.send(h11.Data(data=data)))

    async def end(self) -> None:
        if not self.raw:
            await self._send(self.conn.send(h11.EndOfMessage()))

    async def at(self, offset: float) -> None:
        """Sleep until `offset` seconds after the head, so delays never accumulate."""
        assert self.t0 is not None
        delay = self.t0 + offset - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def reset(self) -> None:
        """Abort with a TCP RST instead of a FIN."""
        reset(self.writer)

    async def hang(self) -> None:
        """Keep the response open until the client goes away."""
        while await self.reader.read(65536):
            pass

    async def _send(self, data: bytes | None) -> None:
        if data:
            self.writer.write(data)
            await self.writer.drain()  # buffer limit 0: returns once the kernel has it all


async def _text(out: _Out, status: int, text: str, ctype: str = "text/plain; charset=utf-8",
                close: bool = False) -> None:
    """A complete non-streaming response with a Content-Length."""
    body = text.encode()
    await out.head(status, ctype, length=len(body), close=close)
    await out.write(body)
    await out.end()


async def _play(out: _Out, writes: list[bytes], interval: float, end: str = "clean") -> None:
    """Send `writes` on the absolute schedule, then end the body as `end` says."""
    for i, data in enumerate(writes):
        await out.at(i * interval)
        await out.write(data)
    await _finish(out, end, len(writes) * interval)


async def _finish(out: _Out, end: str, next_due: float) -> None:
    """End the body; a reset comes when the next write would have, so the data gets read."""
    if end == "clean":
        await out.end()
    elif end == "reset":
        await out.at(next_due)
        out.reset()
    elif end == "hang":
        await out.hang()
    # "close": no terminating chunk; the connection loop closes the socket after the handler


Handler = Callable[[Request, _Out], Awaitable[None]]


Plan = Callable[[Request], list[bytes]]


def _stream(make: Plan, interval_ms: int, end: str = "clean") -> Handler:
    """A route that plays `make(request)` every `interval_ms` (overridable by query)."""
    async def handler(req: Request, out: _Out) -> None:
        writes, interval = make(req), req.number("interval_ms", interval_ms) / 1000
        await out.head(200)
        await _play(out, writes, interval, end)
    return handler


async def _chat(req: Request, out: _Out) -> None:
    body = req.json()
    model = str(body.get("model", "gpt-4o-mini"))
    if not body.get("stream"):
        return await _text(out, 200, _json(openai_chat_json(model)), "application/json")
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    await _stream(lambda _: openai_chat_writes(model, usage), 20)(req, out)


async def _messages(req: Request, out: _Out) -> None:
    body = req.json()
    model = str(body.get("model", "claude-sonnet-4-5"))
    if not body.get("stream"):
        return await _text(out, 200, _json(anthropic_message_json(model)), "application/json")
    await _stream(lambda _: anthropic_message_writes(model), 20)(req, out)


async def _models(req: Request, out: _Out) -> None:
    models = [{"id": m, "object": "model", "created": CREATED, "owned_by": "sse-recorder"}
              for m in ("gpt-4o-mini", "claude-sonnet-4-5")]
    await _text(out, 200, _json({"object": "list", "data": models}), "application/json")


async def _ticks(req: Request, out: _Out) -> None:
    framing = req.choice("framing", "chunked", ("chunked", "length", "close"))
    p = Ticks(req.number("n", 50), req.number("batch", 1, 1), bool(req.number("split", 0, 0, 1)),
              req.choice("end", "clean", ENDS), req.number("size", 0),
              bool(req.number("stamp", 0, 0, 1)))
    interval, split_s = req.number("interval_ms", 20) / 1000, req.number("split_ms", 5) / 1000
    await asyncio.sleep(req.number("first_ms", 0) / 1000)
    length = p.declared_length() if framing == "length" else None
    await out.head(200, length=length, close=framing == "close")
    for k in range(p.write_count):
        await out.at(k * interval)
        for j, piece in enumerate(p.pieces(k, time.monotonic_ns() if p.stamp else None)):
            if j:
                await out.at(k * interval + split_s)
            await out.write(piece)
    await _finish(out, p.end, p.write_count * interval)


@dataclass(frozen=True)
class Route:
    """One route of the demo upstream, for dispatch and for the CLI's and README's listings."""

    method: str
    path: str
    description: str
    handler: Handler = field(repr=False, compare=False)


# Every stream route takes `interval_ms`, the time between writes.
ROUTES: list[Route] = [
    Route("GET", "/v1/models", "OpenAI-style model list (plain JSON)", _models),
    Route("POST", "/v1/chat/completions",
          "OpenAI Chat Completions; `stream: true` gives chunks and [DONE]", _chat),
    Route("POST", "/v1/messages", "Anthropic Messages; `stream: true` gives named events",
          _messages),
    Route("GET", "/ci/logs", "CI log events with ids, retry: 1000, honours Last-Event-ID",
          _stream(lambda r: ci_log_writes(r.headers.get("last-event-id")), 30)),
    Route("GET", "/deploy", "deploy progress, with multi-line JSON data",
          _stream(lambda _: deploy_writes(), 40)),
    Route("GET", "/heartbeat", "comment heartbeats, ping, heartbeat and keep-alive events",
          _stream(lambda _: heartbeat_writes(), 30)),
    Route("GET", "/patterns", "control, error, retry, debug and auth events (a redaction case)",
          _stream(lambda _: patterns_writes(), 20)),
    Route("GET", "/crlf", "CRLF line endings, events split inside CRLF and UTF-8",
          _stream(lambda _: crlf_writes(), 20)),
    Route("GET", "/reset", "three events, then a TCP reset mid-stream",
          _stream(lambda _: reset_writes(), 20, end="reset")),
    Route("GET", "/ticks", "parametric stream: n interval_ms framing batch split split_ms end "
          "stamp size first_ms", _ticks),
]


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    """The next request as a route sees it, or None once the client has closed; a malformed
    one raises `BadRequest` (`demo.http11`)."""
    request = await read_request(conn, reader)
    if request is None:
        return None
    url = urlsplit(request.target)
    return Request(request.method, url.path, dict(parse_qsl(url.query)), dict(request.headers),
                   request.body)


async def _dispatch(req: Request, out: _Out) -> None:
    same_path = [r for r in ROUTES if r.path == req.path]
    route = next((r for r in same_path if r.method == req.method), None)
    if route is None and same_path:
        return await _text(out, 405, f"method not allowed: {req.method} {req.path}\n")
    if route is None:
        return await _text(out, 404, f"not found: {req.path}\n")
    try:
        await route.handler(req, out)
    except ValueError as exc:  # bad query or body; handlers validate before the head
        if out.t0 is not None:
            raise
        await _text(out, 400, f"bad request: {exc}\n")


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Requests in turn on one keep-alive connection; a client going away just ends it."""
    conn = h11.Connection(h11.SERVER)
    try:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # drain() waits until the kernel has it all. Over TLS, until it is encrypted and handed
        # to the socket's transport: asyncio's SSL layer never resumes writing with high=0.
        tls = writer.get_extra_info("ssl_object") is not None
        writer.transport.set_write_buffer_limits(high=1 if tls else 0)
        while (req := await _read_request(conn, reader)) is not None:
            await _dispatch(req, _Out(conn, reader, writer, no_body=req.method == "HEAD"))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except BadRequest as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(OSError):
                await _text(_Out(conn, reader, writer), exc.status, f"bad request: {exc}\n",
                            close=True)
    except OSError:
        pass  # the client reset or closed the connection: that just ends it
    finally:
        writer.close()


class DemoUpstream:
    """The demo upstream on the running loop: `async with DemoUpstream() as up: up.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 ssl: SSLContext | None = None) -> None:
        self._address = (host, port)
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl: SSLContext | None = None) -> Self:
        """Listen; with `ssl` (a server context) every connection is HTTPS (HTTP/1.1 only)."""
        self._ssl = ssl or self._ssl
        self._server = await asyncio.start_server(self._connected, host, port, ssl=self._ssl)
        return self

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            await _serve_connection(reader, writer)
        except asyncio.CancelledError:
            pass  # close() aborted us; Python 3.12.1 would log a cancelled connection task
        finally:
            del self._open[task]

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host = self._server.sockets[0].getsockname()[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        scheme = "http" if self._ssl is None else "https"
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections being served right now; tests poll it to see a handler end."""
        return len(self._open)

    async def close(self) -> None:
        """Stop listening and abort every open connection."""
        if self._server is None:
            return
        self._server.close()
        for task, writer in list(self._open.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        return await self.start(*self._address)

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(host: str, port: int, on_ready: Callable[[str], None], *,
                ssl: SSLContext | None = None) -> None:
    """Run the demo upstream until cancelled; `on_ready(base_url)` once it is listening.

    With `ssl` (a server-side context holding the certificate) it serves HTTPS instead."""
    async with DemoUpstream(host, port, ssl=ssl) as upstream:
        on_ready(upstream.base_url)
        await asyncio.Event().wait()

"""A local upstream for streams that are not SSE: Bedrock's AWS event stream, Ollama's NDJSON,
Google's streamed JSON array, JSON text sequences, and a small JSON answer.

Invariants (as in `demo.upstream`): every frame is one write and one HTTP/1.1 chunk, frame i
is due at head + i * gap_ms (an absolute schedule), and bodies are a pure function of the
request, so tests compare what a client got with `*_frames()` byte for byte. With
`?gate=NAME`, or a model named `gated-NAME` (in the path, or Ollama's JSON body: clients
such as boto3 add no query), a stream holds after its first frame until
`POST /release?gate=NAME`: a test proves a client got that frame while the upstream had not
finished (no clock involved).

Routes (`ROUTES`; the media type, then the frames):
- POST /model/{id}/invoke-with-response-stream: AWS event stream, `chunk` events holding
  Anthropic chunks as base64 `bytes`;
- POST /model/{id}/converse-stream: AWS event stream, messageStart, contentBlockDelta...,
  contentBlockStop, messageStop, metadata;
- POST /api/chat: NDJSON, Ollama chat chunks, the last one `done`;
- POST /v1beta/models/{model}:streamGenerateContent: one JSON array, an element per write;
- GET /seq: JSON text sequence; GET /small.json: one small object with a Content-Length;
- GET /lines?n=N&interval_ms=MS&format=ndjson|sse: N lines stamped with the upstream's
  `time.monotonic_ns()` when written (the benchmark's latency and flood stream; the same
  payload as NDJSON or as SSE, so the two compare on one server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import h11

from sse_recorder.demo.http11 import read_request
from sse_recorder.demo.upstream import TEXT
from sse_recorder.framing import eventstream
from sse_recorder.wire.requests import BadRequest

EVENT_STREAM = "application/vnd.amazon.eventstream"
CREATED = "2024-01-01T00:00:00Z"


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _event(event_type: str, payload: object) -> bytes:
    return eventstream.encode([(":event-type", event_type), (":content-type", "application/json"),
                               (":message-type", "event")], _json(payload))


def invoke_frames(model: str = "anthropic.claude-3-haiku") -> list[bytes]:
    """InvokeModelWithResponseStream: the model's own chunks, base64 in `bytes`."""
    chunks: list[dict[str, Any]] = [{"type": "message_start", "message": {"model": model}}]
    chunks += [{"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}} for text in TEXT]
    chunks.append({"type": "message_stop"})
    return [_event("chunk", {"bytes": base64.b64encode(_json(c)).decode()}) for c in chunks]


def converse_frames() -> list[bytes]:
    frames = [_event("messageStart", {"role": "assistant"})]
    frames += [_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
               for text in TEXT]
    frames += [_event("contentBlockStop", {"contentBlockIndex": 0}),
               _event("messageStop", {"stopReason": "end_turn"}),
               _event("metadata", {"usage": {"inputTokens": 3, "outputTokens": len(TEXT),
                                             "totalTokens": 3 + len(TEXT)},
                                   "metrics": {"latencyMs": 42}})]
    return frames


def ollama_frames(model: str = "llama3.2") -> list[bytes]:
    lines = [{"model": model, "created_at": CREATED,
              "message": {"role": "assistant", "content": text}, "done": False} for text in TEXT]
    lines.append({"model": model, "created_at": CREATED,
                  "message": {"role": "assistant", "content": ""}, "done": True,
                  "done_reason": "stop", "total_duration": 1000, "load_duration": 10,
                  "prompt_eval_count": 3, "prompt_eval_duration": 100,
                  "eval_count": len(TEXT), "eval_duration": 800})
    return [_json(line) + b"\n" for line in lines]


def gemini_frames() -> list[bytes]:
    items = [_json({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                    "index": 0}]}) for text in TEXT]
    return [b"[" + items[0]] + [b",\r\n" + item for item in items[1:]] + [b"]"]


def seq_frames() -> list[bytes]:
    return [b"\x1e" + _json({"seq": i, "text": text}) + b"\n" for i, text in enumerate(TEXT)]


def _gated_model(model: str | None, body: bytes) -> str | None:
    """The gate a `gated-NAME` model names (in the path, or an Ollama request body)."""
    if model is None:
        with contextlib.suppress(ValueError, AttributeError):
            model = json.loads(body or b"{}").get("model")
    if isinstance(model, str) and model.startswith("gated-"):
        return model.removeprefix("gated-")
    return None


SMALL_JSON = _json({"object": "list", "data": [{"id": "demo"}]})


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    media_type: str
    frames: Callable[[], list[bytes]]


ROUTES = (
    Route("POST", re.compile(r"/model/(?P<model>[^/]+)/invoke-with-response-stream"), EVENT_STREAM,
          invoke_frames),
    Route("POST", re.compile(r"/model/(?P<model>[^/]+)/converse-stream"), EVENT_STREAM,
          converse_frames),
    Route("POST", re.compile(r"/api/chat"), "application/x-ndjson", ollama_frames),
    Route("POST", re.compile(r"/v1beta/models/(?P<model>[^/:]+):streamGenerateContent"),
          "application/json; charset=UTF-8", gemini_frames),
    Route("GET", re.compile(r"/seq"), "application/json-seq", seq_frames),
)


class StreamsUpstream:
    """The upstream on a loop of its own thread (sync clients such as boto3 call it from the
    test's thread): `with StreamsUpstream() as up: up.base_url`."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gates: dict[str, asyncio.Event] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.finished: list[str] = []  # paths of the streams that ended, in order

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def _gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        self._writers.add(writer)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=0)
        try:
            while (request := await read_request(conn, reader)) is not None:
                await self._answer(conn, writer, request.method, request.target,
                                   request.body)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (BadRequest, OSError, h11.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str,
                      target: str, body: bytes) -> None:
        async def send(event: h11.Event) -> None:
            data = conn.send(event)
            if data:
                writer.write(data)
                await writer.drain()

        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        if url.path == "/release" and method == "POST":
            self._gate(query.get("gate", "")).set()
            await send(h11.Response(status_code=204, headers=[]))
            return await send(h11.EndOfMessage())
        if url.path == "/lines":
            return await self._lines(send, query)
        if url.path == "/small.json":
            await send(h11.Response(status_code=200, headers=[
                ("content-type", "application/json"), ("content-length", str(len(SMALL_JSON)))]))
            await send(h11.Data(data=SMALL_JSON))
            return await send(h11.EndOfMessage())
        found = [(r, m) for r in ROUTES if r.method == method
                 and (m := r.pattern.fullmatch(url.path)) is not None]
        if not found:
            text = f"not found: {method} {url.path}\n".encode()
            await send(h11.Response(status_code=404, headers=[
                ("content-type", "text/plain"), ("content-length", str(len(text)))]))
            await send(h11.Data(data=text))
            return await send(h11.EndOfMessage())
        route, match = found[0]
        gap = int(query.get("gap_ms", "20")) / 1000
        gate = query.get("gate") or _gated_model(match.groupdict().get("model"), body)
        await send(h11.Response(status_code=200, headers=[
            ("content-type", route.media_type), ("transfer-encoding", "chunked"),
            ("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")]))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, frame in enumerate(route.frames()):
            await asyncio.sleep(max(start + i * gap - loop.time(), 0))
            await send(h11.Data(data=frame))
            if i == 0 and gate is not None:
                await self._gate(gate).wait()
                start = loop.time() - gap  # the rest keeps its gaps after the release
        # noted before the terminating chunk goes: a client that has seen the end can then
        # never find the stream unfinished (and a test's clear() after it never misses it)
        self.finished.append(url.path)
        await send(h11.EndOfMessage())

    async def _lines(self, send: Callable[[h11.Event], Awaitable[None]],
                     query: dict[str, str]) -> None:
        count, interval = int(query.get("n", "100")), int(query.get("interval_ms", "0")) / 1000
        sse = query.get("format") == "sse"
        await send(h11.Response(status_code=200, headers=[
            ("content-type", "text/event-stream" if sse else "application/x-ndjson"),
            ("transfer-encoding", "chunked")]))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            if interval:
                await asyncio.sleep(max(start + i * interval - loop.time(), 0))
            line = _json({"i": i, "t": time.monotonic_ns()})
            await send(h11.Data(data=b"data: " + line + b"\n\n" if sse else line + b"\n"))
        await send(h11.EndOfMessage())


def main() -> None:
    """`python -m sse_recorder.demo.streams`: serve until stopped; the first line is the URL."""
    with StreamsUpstream() as upstream:
        print(upstream.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

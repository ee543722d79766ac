"""A real headless Chromium recording a page's streams through `sse-recorder record`, then
reading them back from `sse-recorder replay` on another origin, with the upstream gone.

The upstream is a small server of this module: the page, an `EventSource` feed with
`retry: 400` and non-ASCII ids, and an OpenAI-shaped POST stream. Live and recording, the
page is on the upstream's origin; replaying, the upstream is gone and the same page is
served from an origin of its own, reading the replayer on a third. Gaps are measured by the
page's own clock (`performance.now()`), live and replayed, in the same module. Pages are
never routed by Playwright: with a route set, Playwright answers CORS preflights itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import SSE_RECORDER, Process, record_args, start
from tests.integration.support import in_thread, wait_for_lines

pytestmark = pytest.mark.integration

RETRY_MS = 400
FEED_IDS = [f"évé-{k}" for k in range(1, 7)]  # non-ASCII: browsers send them back as UTF-8
FEED_GAPS_MS = [40, 90, 220, 60, 250, 120]  # before each event
CHAT_GAPS_MS = [30, 120, 60, 150, 40]  # before each chunk; [DONE] follows the last
CHAT_BODY = {"model": "gpt-4o-mini", "stream": True,
             "messages": [{"role": "user", "content": "Say hello"}]}
GAP_TOLERANCE_MS = 30  # beyond the spread of the two live runs (the browser's own noise)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _chat_piece(k: int) -> bytes:
    delta = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": f"word{k} "}}]}
    return f"data: {json.dumps(delta)}\n\n".encode()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 streams: bool) -> None:
    """GET /app (the page), and with `streams` GET /feed and POST /v1/chat/completions;
    chunked, one response per connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        length = next((int(v) for k, _, v in (f.partition(": ") for f in fields)
                       if k.lower() == "content-length"), 0)
        await reader.readexactly(length)
        if (method, target) == ("GET", "/app"):
            body = PAGE.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%b"
                         % (len(body), body))
            await writer.drain()
            return
        if streams and (method, target) == ("GET", "/feed"):
            pieces = [f"retry: {RETRY_MS}\n\n".encode()] + [
                f"id: {i}\ndata: tick {k}\n\n".encode() for k, i in enumerate(FEED_IDS, 1)]
            gaps = [0, *FEED_GAPS_MS]
        elif streams and (method, target) == ("POST", "/v1/chat/completions"):
            pieces = [_chat_piece(k) for k in range(len(CHAT_GAPS_MS))] + [b"data: [DONE]\n\n"]
            gaps = [*CHAT_GAPS_MS, 10]
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        for index, (gap, piece) in enumerate(zip(gaps, pieces, strict=True)):
            await asyncio.sleep(gap / 1000)
            # the last piece and the body's end in one write: the proxy reads them together,
            # before a page that closes on the last event can be seen gone (on a loaded
            # machine the close could beat a separate terminator: recorded "client-gone")
            last = index == len(pieces) - 1
            writer.write(_chunk(piece) + (b"0\r\n\r\n" if last else b""))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class Server:
    """A server of this module on its own thread and loop, until `stop()`: the upstream
    (`streams`), or the page's own origin (the page alone)."""

    def __init__(self, streams: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            functools.partial(_serve, streams=streams), "127.0.0.1", 0), self.loop).result(10)
        self.origin = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


PAGE = """<!doctype html><meta charset="utf-8"><title>streams</title><script>
window.readEvents = (url, count, timeout = 8000) => new Promise((resolve) => {
  const t0 = performance.now(), got = [], opens = [], errors = [];
  const es = new EventSource(url);
  const done = (state) => { es.close(); resolve({got, opens, errors, state}); };
  es.onopen = () => opens.push(performance.now() - t0);
  es.onmessage = (e) => {
    got.push({id: e.lastEventId, data: e.data, t: performance.now() - t0});
    if (got.length === count) done(es.readyState);
  };
  es.onerror = () => {
    errors.push({t: performance.now() - t0, state: es.readyState});
    if (es.readyState === EventSource.CLOSED) done(EventSource.CLOSED);
  };
  setTimeout(() => done(-1), timeout);
});
window.readFetch = async (url, body) => {
  const t0 = performance.now(), chunks = [];
  try {
    const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}});
    const reader = r.body.getReader(), decoder = new TextDecoder();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      chunks.push({text: decoder.decode(value, {stream: true}), t: performance.now() - t0});
    }
    return {status: r.status, chunks};
  } catch (e) {
    return {error: String(e), chunks};
  }
};
</script>"""


def open_page(context: Any, origin: str) -> Any:
    """The page, loaded from `origin` (no Playwright routing: with a route set, Playwright
    itself would answer the CORS preflights the replay must answer)."""
    page = context.new_page()
    page.goto(f"{origin}/app")
    return page


def read_both(page: Any, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The feed through EventSource and the chat stream through fetch, from `base`."""
    events = page.evaluate("([u, n]) => readEvents(u, n)", [f"{base}/feed", len(FEED_IDS)])
    chat = page.evaluate("([u, b]) => readFetch(u, b)",
                         [f"{base}/v1/chat/completions", CHAT_BODY])
    return events, chat


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def event_gaps(result: dict[str, Any]) -> list[float]:
    return gaps([e["t"] for e in result["got"]])


def chat_span(result: dict[str, Any]) -> float:
    """First to last read of the fetch stream (reads may join chunks that arrive together,
    so the span, not each gap)."""
    return float(result["chunks"][-1]["t"] - result["chunks"][0]["t"])


def chat_text(result: dict[str, Any]) -> str:
    return "".join(c["text"] for c in result["chunks"])


def assert_within_live(replayed: list[float], *live_runs: list[float]) -> None:
    """Each replayed gap lies within what the page saw live (two runs: straight from the
    upstream and through the recorder, so their spread is the browser's and the machine's
    own noise), give or take `GAP_TOLERANCE_MS`."""
    for k, got in enumerate(replayed):
        seen = [run[k] for run in live_runs]
        assert min(seen) - GAP_TOLERANCE_MS <= got <= max(seen) + GAP_TOLERANCE_MS, (
            k, replayed, live_runs)


@dataclass
class Session:
    origin: str  # the page's origin for replays: its own server, not the replayer's
    cassette: Path
    live: tuple[dict[str, Any], dict[str, Any]]  # what the page read from the upstream
    recorded: tuple[dict[str, Any], dict[str, Any]]  # ... through the recorder
    recorder_log: str

    @property
    def live_runs(self) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
        return (self.live, self.recorded)


@pytest.fixture(scope="module")
def session(chromium: Any, mitm_confdir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Session]:
    """The page read live from the upstream's origin, then the same through `sse-recorder
    record` as the browser's proxy; then the upstream stops and the page is served from
    an origin of its own."""
    workdir = tmp_path_factory.mktemp("browser")
    cassette = workdir / "page.sqlite"
    upstream = Server(streams=True)
    try:
        context = chromium.new_context()
        try:
            live = read_both(open_page(context, upstream.origin), upstream.origin)
        finally:
            context.close()
        recorder = start(record_args(cassette, mitm_confdir, "--exclude", "GET */app",
                                     "--exclude", "*/favicon.ico"),
                         workdir / "recorder.txt")
        try:
            # Regular proxy mode; Playwright proxies loopback too (Chromium would not).
            context = chromium.new_context(proxy={"server": recorder.url},
                                           ignore_https_errors=True)
            try:
                recorded = read_both(open_page(context, upstream.origin), upstream.origin)
            finally:
                context.close()
        finally:
            assert recorder.stop() == 0, recorder.stderr()
    finally:
        upstream.stop()
    page = Server(streams=False)
    yield Session(page.origin, cassette, live, recorded, recorder.stderr())
    page.stop()


def timed(check: Callable[[], None], attempts: int = 3) -> int:
    """Run a browser measurement and its assertions until they pass, at most `attempts`
    times; returns how many runs it took. A stall of this shared machine bunches a stream
    of a second; a real fault fails every run."""
    for attempt in range(1, attempts + 1):
        try:
            check()
            return attempt
        except AssertionError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def warm_up(base_url: str) -> None:
    """Have a fresh replay process read the feed once (a resume after its last event: no
    waiting), so the timing measured next is not that of its first cassette read, which
    makes the first event of a fresh process's first response late by tens of ms."""
    response = httpx.get(f"{base_url}/feed", headers={"Last-Event-ID": FEED_IDS[-1].encode()},
                         timeout=10)
    assert response.status_code == 200 and "tick" not in response.text


def records_of(process: Process, count: int) -> list[dict[str, Any]]:
    """The replay's JSON records, once there are `count` (one is written as a response
    ends, which for a stream the page gave up on is when the server notices)."""
    lines = in_thread(wait_for_lines(process, '"number"', count=count))
    return [json.loads(line) for line in lines]


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[Any]:
    """`replay(cassette, *options)`: a started `sse-recorder replay`, stopped after."""
    started: list[Process] = []

    def run(cassette: Path, *options: str) -> Process:
        process = start([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0",
                         *options], tmp_path / f"replay-{len(started)}.txt")
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def test_a_browser_records_its_eventsource_and_fetch_streams(session: Session) -> None:
    """Through the recorder the page gets what it gets live; the cassette holds the two
    streams (not the page, which `--exclude` left out)."""
    live_events, live_chat = session.live
    events, chat = session.recorded
    expected = [{"id": i, "data": f"tick {k}"} for k, i in enumerate(FEED_IDS, 1)]
    for got in (live_events, events):
        assert [{"id": e["id"], "data": e["data"]} for e in got["got"]] == expected
    assert chat["status"] == live_chat["status"] == 200
    assert chat_text(chat) == chat_text(live_chat) and "[DONE]" in chat_text(chat)
    lines = [line for line in session.recorder_log.splitlines() if " -> " in line]
    assert len(lines) == 2, session.recorder_log
    assert any("GET http://127.0.0.1" in line and "/feed" in line for line in lines)
    assert any("POST http://127.0.0.1" in line and "/v1/chat/completions" in line
               for line in lines)


def test_a_page_on_another_origin_reads_the_replay_with_cors(
    session: Session, chromium: Any, replay: Any
) -> None:
    """EventSource gets every event with the live gaps; the POST fetch (openai shape)
    passes its preflight and gets the recorded chunks with their gaps."""
    server = replay(session.cassette, "--cors", session.origin, "--log-format", "json")
    warm_up(server.url)
    live_events, live_chat = session.live

    def check() -> None:
        context = chromium.new_context()  # a new one each time: no cached preflight
        try:
            events, chat = read_both(open_page(context, session.origin), server.url)
        finally:
            context.close()
        assert [(e["id"], e["data"]) for e in events["got"]] == [
            (e["id"], e["data"]) for e in live_events["got"]]
        assert chat.get("error") is None and chat["status"] == 200
        assert chat_text(chat) == chat_text(live_chat)
        assert_within_live(event_gaps(events),
                           *(event_gaps(run[0]) for run in session.live_runs))
        assert_within_live([chat_span(chat)],
                           *([chat_span(run[1])] for run in session.live_runs))

    runs = timed(check)
    records = records_of(server, 1 + 3 * runs)[-3:]
    assert [(r["method"], r["status"]) for r in records] == [
        ("GET", 200), ("OPTIONS", 204), ("POST", 200)]
    assert records[1]["interaction"] is None  # answered by --cors, never matched
    assert "allowed by --cors" in records[1]["explanation"]


def test_without_cors_the_page_cannot_read_and_the_log_says_why(
    session: Session, chromium: Any, replay: Any
) -> None:
    """CORS is off by default: EventSource ends in readyState 2 with no event, fetch fails,
    and each log line names the --cors option that would let the page read."""
    server = replay(session.cassette)
    context = chromium.new_context()
    try:
        events, chat = read_both(open_page(context, session.origin), server.url)
    finally:
        context.close()
    assert events["got"] == [] and events["state"] == 2
    assert chat["chunks"] == [] and "Failed to fetch" in chat["error"]
    hint = f"--cors {session.origin}"
    feed = in_thread(wait_for_lines(server, "GET /feed -> #1 200"))[0]
    assert feed.endswith(f"(a page at Origin {session.origin} cannot read this (CORS is off): "
                         f"replay with {hint})")
    preflight = in_thread(wait_for_lines(server, "OPTIONS /v1/chat/completions -> 404"))[0]
    assert preflight.endswith(f"cannot answer this CORS preflight (CORS is off): replay with "
                              f"{hint})")
    assert not [line for line in server.stderr().splitlines() if line.startswith("POST")]


def test_a_disallowed_origin_is_refused_with_the_option_to_add(
    session: Session, chromium: Any, replay: Any
) -> None:
    server = replay(session.cassette, "--cors", "http://localhost:5173")
    context = chromium.new_context()
    try:
        events, chat = read_both(open_page(context, session.origin), server.url)
    finally:
        context.close()
    assert events["got"] == [] and "Failed to fetch" in chat["error"]
    hint = f"--cors allows http://localhost:5173; add --cors {session.origin}"
    in_thread(wait_for_lines(server, f"OPTIONS /v1/chat/completions -> 403 unmatched ({hint})"))
    in_thread(wait_for_lines(server, "GET /feed -> #1 200", f"cannot read this: {hint}"))


def test_eventsource_reconnects_after_a_drop_with_its_utf8_last_event_id(
    session: Session, chromium: Any, replay: Any
) -> None:
    """`drop:after_event=3,on_resume=none`: the browser waits the recorded `retry:`,
    reconnects with `Last-Event-ID: évé-3` (UTF-8 on the wire) and gets events 4-6 exactly
    once; a Latin-1 reading of the id would have replayed from the start (duplicates)."""
    server = replay(session.cassette, "--cors", session.origin, "--log-format", "json",
                    "--fault", "drop:after_event=3,on_resume=none")

    def check() -> None:
        context = chromium.new_context()
        try:
            page = open_page(context, session.origin)
            result = page.evaluate("([u, n]) => readEvents(u, n)",
                                   [f"{server.url}/feed", len(FEED_IDS)])
        finally:
            context.close()
        assert [e["id"] for e in result["got"]] == FEED_IDS
        assert len(result["opens"]) == 2 and len(result["errors"]) == 1
        assert result["errors"][0]["state"] == 0  # CONNECTING: the browser will retry
        waited = result["opens"][1] - result["errors"][0]["t"]
        assert RETRY_MS - 20 <= waited <= RETRY_MS + 300, waited  # the recorded retry, not 3 s
        # After the reconnection the recorded gaps hold again.
        assert_within_live(event_gaps(result)[3:],
                           *(event_gaps(run[0])[3:] for run in session.live_runs))

    runs = timed(check)
    records = records_of(server, 2 * runs)[-2:]
    assert [(r["target"], r["outcome"]) for r in records] == [
        ("/feed", "closed"), ("/feed", "clean")]
    assert [f["type"] for f in records[0]["faults"]] == ["drop"] and not records[1]["faults"]

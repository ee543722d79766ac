"""Streams that are not SSE, recorded live through a real `sse-recorder record` and replayed
with their frames and gaps, faults at frame K seen by the real clients: boto3's Bedrock
runtime client (`invoke_model_with_response_stream`, `converse_stream`), the `ollama` client
(NDJSON) and httpx (a chunked JSON array, a JSON text sequence, a small JSON answer).

Liveness is proven without a clock: each recorded stream is gated (`demo.streams`): the
upstream holds after its first frame until the test releases it, which the test does only
once its client has that frame. A recorder that buffered would never hand it over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import ollama
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import EventStreamError

from sse_recorder.demo.streams import (
    SMALL_JSON,
    StreamsUpstream,
    converse_frames,
    gemini_frames,
    invoke_frames,
    ollama_frames,
    seq_frames,
)
from sse_recorder.framing.base import FRAME
from sse_recorder.model import Chunk, Interaction, RecordedEvent
from sse_recorder.store.cassette import Cassette
from tests.helpers import Process, record_args, start
from tests.integration.support import replay_process

pytestmark = pytest.mark.integration

CONVERSE = ["messageStart", *["contentBlockDelta"] * 7, "contentBlockStop", "messageStop",
            "metadata"]
Stored = tuple[Interaction, list[Chunk], list[RecordedEvent]]


@contextlib.contextmanager
def bedrock(url: str) -> Iterator[Any]:
    """boto3's Bedrock runtime client on `url` with dummy credentials (closed after)."""
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=url,
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(retries={"max_attempts": 0}, read_timeout=10))
    try:
        yield client
    finally:
        client.close()


def converse_stream(client: Any, model: str) -> Iterator[dict[str, Any]]:
    return iter(client.converse_stream(
        modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])["stream"])


def invoke_stream(client: Any, model: str) -> Iterator[dict[str, Any]]:
    return iter(client.invoke_model_with_response_stream(modelId=model, body=b"{}")["body"])


def chat_stream(client: ollama.Client, model: str) -> Iterator[Any]:
    return iter(client.chat(model=model, messages=[{"role": "user", "content": "hi"}],
                            stream=True))


def release(upstream: StreamsUpstream, gate: str) -> None:
    httpx.post(f"{upstream.base_url}/release", params={"gate": gate}).raise_for_status()


def gated(first: Callable[[], object], rest: Callable[[], list[Any]],
          upstream: StreamsUpstream, gate: str) -> list[Any]:
    """The first frame (the upstream has not finished: it waits for us), then the rest."""
    got = [first()]
    assert not upstream.finished  # nothing has ended upstream while we hold its first frame
    release(upstream, gate)
    return got + rest()




@pytest.fixture(scope="module")
def upstream() -> Iterator[StreamsUpstream]:
    with StreamsUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def cassette(upstream: StreamsUpstream, mitm_confdir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stream recorded once through a real recorder, each client live (gated)."""
    workdir = tmp_path_factory.mktemp("streams")
    path = workdir / "cassette.sqlite"
    proxy = start(record_args(path, mitm_confdir, "--upstream", upstream.base_url),
                  workdir / "recorder.txt")
    try:
        url = proxy.url
        with bedrock(url) as client:
            events = invoke_stream(client, "gated-invoke")
            got = gated(lambda: next(events), lambda: list(events), upstream, "invoke")
            assert [e["chunk"]["bytes"] for e in got] == payloads(invoke_frames())
            upstream.finished.clear()

            stream = converse_stream(client, "gated-converse")
            got = gated(lambda: next(stream), lambda: list(stream), upstream, "converse")
            assert [next(iter(e)) for e in got] == CONVERSE
            upstream.finished.clear()

        with ollama.Client(host=url) as chat_client:
            parts = chat_stream(chat_client, "gated-chat")
            got = gated(lambda: next(parts), lambda: list(parts), upstream, "chat")
            assert [p.done for p in got] == [False] * 7 + [True]
            upstream.finished.clear()

        with httpx.Client(base_url=url) as client, client.stream(
                "POST", "/v1beta/models/gated-gemini:streamGenerateContent") as response:
            pieces = response.iter_raw()
            got = gated(lambda: next(pieces), lambda: list(pieces), upstream, "gemini")
            assert b"".join(got) == b"".join(gemini_frames())
        upstream.finished.clear()

        assert httpx.get(f"{url}/seq").content == b"".join(seq_frames())
        assert httpx.get(f"{url}/small.json").content == SMALL_JSON
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    return path


def payloads(frames: list[bytes]) -> list[bytes]:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames))
    return [base64.b64decode(json.loads(m.payload)["bytes"]) for m in buffer]


async def _read(path: Path) -> dict[str, Stored]:
    cassette = await Cassette.open(path)
    try:
        out = {}
        for interaction in await cassette.interactions():
            chunks = [c async for c in cassette.chunks(interaction.id)]
            events = await cassette.events(interaction.id)
            out[interaction.request.url.split("?")[0].rsplit("/", 1)[-1]] = (
                interaction, chunks, events)
        return out
    finally:
        await cassette.close()


@pytest.fixture(scope="module")
def stored(cassette: Path) -> dict[str, Stored]:
    return asyncio.run(_read(cassette))


@pytest.mark.parametrize(("name", "frames"), [
    ("invoke-with-response-stream", invoke_frames()),
    ("converse-stream", converse_frames()),
    ("chat", ollama_frames()),
    ("gated-gemini:streamGenerateContent", gemini_frames()),
    ("seq", seq_frames()),
])
def test_each_stream_is_stored_chunk_by_chunk(
    stored: dict[str, Stored], name: str, frames: list[bytes]
) -> None:
    interaction, chunks, _ = stored[name]
    assert interaction.complete
    assert [c.data for c in chunks] == frames  # one chunk per upstream write
    offsets = [c.offset_ns for c in chunks]
    assert offsets == sorted(offsets)


def test_the_gate_shows_in_the_offsets_and_frames_are_events(
        stored: dict[str, Stored]) -> None:
    _, chunks, events = stored["converse-stream"]
    gaps_ms = [(b.offset_ns - a.offset_ns) / 1e6 for a, b in zip(chunks, chunks[1:],
                                                                 strict=False)]
    assert all(gap >= 20 * 0.7 for gap in gaps_ms[1:])  # the upstream's 20 ms schedule
    assert [(e.kind, e.type) for e in events][:2] == [(FRAME, "messageStart"),
                                                      (FRAME, "contentBlockDelta")]


def test_a_small_json_answer_is_still_one_chunk(stored: dict[str, Stored]) -> None:
    interaction, chunks, events = stored["small.json"]
    assert [c.data for c in chunks] == [SMALL_JSON] and not events


@pytest.fixture(scope="module")
def replay(cassette: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = replay_process(cassette, tmp_path_factory.mktemp("replay") / "stderr.txt")
    yield process
    process.stop()


def test_replay_gives_the_same_frames_and_gaps(replay: Process,
                                               stored: dict[str, Stored]) -> None:
    url = replay.url
    with bedrock(url) as client:
        assert [e["chunk"]["bytes"] for e in invoke_stream(client, "gated-invoke")] == payloads(
            invoke_frames())
        assert [next(iter(e)) for e in converse_stream(client, "gated-converse")] == CONVERSE
    with ollama.Client(host=url) as chat_client:
        assert "".join(p.message.content or "" for p in chat_stream(chat_client, "gated-chat")
                       ) == "".join(json.loads(line)["message"]["content"]
                                    for line in ollama_frames())
    arrivals = []
    with httpx.Client(base_url=url) as http, http.stream("GET", "/seq") as response:
        for piece in response.iter_raw():
            arrivals.append((time.monotonic(), piece))
    _, seq_chunks, _ = stored["seq"]
    assert b"".join(p for _, p in arrivals) == b"".join(c.data for c in seq_chunks)
    recorded = (seq_chunks[-1].offset_ns - seq_chunks[0].offset_ns) / 1e9
    replayed = arrivals[-1][0] - arrivals[0][0]
    assert replayed == pytest.approx(recorded, abs=0.05)


@pytest.fixture(scope="module")
def faulted(cassette: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = replay_process(
        cassette, tmp_path_factory.mktemp("faulted") / "stderr.txt", "--instant",
        "--fault", "corrupt:mode=crc,at_event=3,route=POST */model/*/converse-stream",
        "--fault", "inject:after_event=2,shape=bedrock-throttling,"
                   "route=POST */model/*/invoke-with-response-stream",
        "--fault", "inject:after_event=2,shape=ollama-error,route=POST */api/chat",
        "--fault", "drop:after_event=2,route=GET */seq",
        "--fault", "rechunk:mode=adversarial,route=POST */*streamGenerateContent")
    yield process
    process.stop()


def test_a_bad_crc_at_frame_k_raises_in_boto3(faulted: Process) -> None:
    with bedrock(faulted.url) as client, contextlib.closing(client.converse_stream(
            modelId="gated-converse", messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )["stream"]) as body:
        stream = iter(body)
        assert [next(iter(next(stream))) for _ in range(2)] == CONVERSE[:2]
        with pytest.raises(ChecksumMismatch):
            next(stream)


def test_an_injected_throttling_exception_raises_in_boto3(faulted: Process) -> None:
    with bedrock(faulted.url) as client, contextlib.closing(
            client.invoke_model_with_response_stream(modelId="gated-invoke", body=b"{}")["body"]
    ) as body:  # what is left unread goes with the connection
        events = iter(body)
        assert [next(events)["chunk"]["bytes"] for _ in range(2)] == payloads(
            invoke_frames())[:2]
        with pytest.raises(EventStreamError, match="throttlingException"):
            next(events)


def test_an_injected_ollama_error_line_raises_in_the_ollama_client(faulted: Process) -> None:
    got = []
    with ollama.Client(host=faulted.url) as client, pytest.raises(
            ollama.ResponseError, match="error was encountered"):
        for part in chat_stream(client, "gated-chat"):
            got.append(part)
    assert len(got) == 2


def test_drop_after_frame_k_and_adversarial_chunks(faulted: Process) -> None:
    with httpx.stream("GET", f"{faulted.url}/seq") as response:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in response.iter_raw():
                received += piece
    assert received == b"".join(seq_frames()[:2])
    with httpx.stream("POST", f"{faulted.url}/v1beta/models/gated-gemini:"
                              "streamGenerateContent") as response:
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == b"".join(gemini_frames())
    assert len(pieces) > len(gemini_frames())
    assert json.loads(b"".join(pieces))[0]["candidates"][0]["index"] == 0

"""Streaming LLM SDK calls replayed from committed cassettes: no network, no API key.

Each test points an unmodified SDK at `sse_cassette.base_url`. The cassettes under
`cassettes/test_vendor_streams/` were recorded once against the demo upstream:

    sse-recorder demo-upstream --port 8765 &
    pytest examples --sse-record-mode=once --sse-upstream=http://127.0.0.1:8765

and every later `pytest examples` replays them, chunk for chunk, instantly. Needs only
pytest, sse-recorder and the two SDKs: `pytest.ini` here keeps the repository's own
configuration (and its pytest-asyncio settings) out.
"""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from sse_recorder.testing.plugin import SSECassette

EXPECTED = "안녕하세요! SSE 데모 업스트림입니다."
PROMPT = [{"role": "user", "content": "Say hello"}]


def test_openai_chat_stream(sse_cassette: SSECassette) -> None:
    client = openai.OpenAI(base_url=f"{sse_cassette.base_url}/v1", api_key="sk-test",
                           max_retries=0)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == EXPECTED
    assert len(pieces) == 9  # role, seven text deltas, finish: one SSE event each


def test_openai_chat_stream_async(sse_cassette: SSECassette) -> None:
    """The async client, on a loop of its own: no pytest-asyncio needed."""

    async def chat() -> str:
        async with openai.AsyncOpenAI(base_url=f"{sse_cassette.base_url}/v1",
                                      api_key="sk-test", max_retries=0) as client:
            stream = await client.chat.completions.create(model="gpt-4o-mini",
                                                          messages=PROMPT, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])

    assert asyncio.run(chat()) == EXPECTED


def test_anthropic_messages_stream(sse_cassette: SSECassette) -> None:
    client = anthropic.Anthropic(base_url=sse_cassette.base_url, api_key="sk-ant-test",
                                 max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=256,
                                messages=PROMPT) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == EXPECTED
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 7


@pytest.mark.sse_cassette("test_openai_chat_stream", speed=1)
def test_openai_chat_stream_at_recorded_pace(sse_cassette: SSECassette) -> None:
    """The same cassette as above, at the recorded pace (the default is instant)."""
    client = openai.OpenAI(base_url=f"{sse_cassette.base_url}/v1", api_key="sk-test",
                           max_retries=0)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == EXPECTED

"""The official `openai` SDK as the client under test, with its own retry settings.

The SDK retries a 429 or 5xx itself (max_retries, honouring Retry-After), but it does not
resume a stream that breaks mid-way: the experiment measures both.
"""

import os

import openai


def main() -> None:
    client = openai.OpenAI(base_url=os.environ["SSE_RECORDER_BASE_URL"] + "/v1",
                           api_key="sk-test", max_retries=int(os.environ.get("RETRIES", "2")))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    print(f"done: {text}")


if __name__ == "__main__":
    main()

"""A naive client of the recorded CI-log stream: one request, no timeout, no retry.

It reads the stream the experiment's replay server serves (SSE_RECORDER_BASE_URL), prints
each event, and exits 0 when the stream ends; anything unexpected is a crash.
"""

import json
import os

import httpx
from httpx_sse import connect_sse


def main() -> None:
    url = os.environ["SSE_RECORDER_BASE_URL"] + "/ci/logs"
    count = 0
    with httpx.Client(timeout=None) as client, connect_sse(client, "GET", url) as source:
        source.response.raise_for_status()
        for sse in source.iter_sse():
            if not sse.data:  # the retry: line alone
                continue
            payload = json.loads(sse.data)
            count += 1
            print(f"{sse.id} {sse.event}: {payload}")
    print(f"done: {count} events")


if __name__ == "__main__":
    main()

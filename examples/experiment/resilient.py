"""A resilient client of the recorded CI-log stream.

What it does that the naive one does not:
- reconnects after a dropped, reset, refused or silent stream, sending `Last-Event-ID`;
- treats a stream that carries no event for STALL seconds as dead (heartbeats do not count);
- waits `Retry-After` after an HTTP error that carries it, else the stream's `retry:`,
  else an exponential backoff (0.25 s doubling, capped at 4 s), and gives up after 8 tries;
- treats an `error` event as a failed stream (reconnect), skips a payload it cannot parse.
"""

import json
import os
import sys
import threading
import time

import httpx
from httpx_sse import connect_sse

STALL = 1.5  # seconds without an event: the stream is dead
ATTEMPTS = 8


class Failed(Exception):
    def __init__(self, why: str, wait: float | None = None) -> None:
        super().__init__(why)
        self.wait = wait


class Watchdog:
    """Closes the response when no event came for STALL seconds."""

    def __init__(self, response: httpx.Response) -> None:
        self.response, self.last, self.fired = response, time.monotonic(), False
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self.done.wait(0.1):
            if time.monotonic() - self.last > STALL:
                self.fired = True
                self.response.close()
                return

    def stop(self) -> None:
        self.done.set()


def backoff(attempt: int) -> float:
    return min(4.0, 0.25 * 2 ** (attempt - 1))


def main() -> int:
    url = os.environ["SSE_RECORDER_BASE_URL"] + "/ci/logs"
    last_id: str | None = None
    retry_ms: int | None = None
    count = failures = 0
    while failures < ATTEMPTS:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with httpx.Client(timeout=httpx.Timeout(5.0)) as client, connect_sse(
                    client, "GET", url, headers=headers) as source:
                response = source.response
                if response.status_code != 200:
                    after = response.headers.get("Retry-After")
                    raise Failed(f"HTTP {response.status_code}",
                                 float(after) if after else None)
                watchdog = Watchdog(response)
                try:
                    for sse in source.iter_sse():
                        watchdog.last = time.monotonic()
                        if sse.retry is not None:
                            retry_ms = sse.retry
                        if sse.event == "error":
                            raise Failed(f"error event: {sse.data}")
                        if not sse.data:
                            continue
                        try:
                            payload = json.loads(sse.data)
                        except ValueError:
                            print(f"skipped an unreadable payload: {sse.data!r}")
                            continue
                        if sse.id is not None:
                            last_id = sse.id
                        count += 1
                        failures = 0
                        print(f"{sse.id} {sse.event}: {payload}")
                    if watchdog.fired:
                        raise Failed(f"no event for {STALL}s")
                finally:
                    watchdog.stop()
            print(f"done: {count} events, last id {last_id}")
            return 0
        except (httpx.HTTPError, httpx.StreamError, Failed) as exc:
            failures += 1
            wait = getattr(exc, "wait", None)
            if wait is None:
                wait = max(retry_ms / 1000 if retry_ms is not None else 0.0, backoff(failures))
            print(f"attempt {failures} failed ({exc or type(exc).__name__}); "
                  f"reconnecting in {wait:.2f}s")
            time.sleep(wait)
    print("gave up", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

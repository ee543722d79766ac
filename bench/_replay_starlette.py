"""Comparison for bench/replay_bench.py: uvicorn + sse-starlette serving the same events.

`python bench/_replay_starlette.py STREAMS.json [--loop asyncio|uvloop]`; prints its URL.
Same STREAMS.json as `_replay_raw.py`; only instant mode (every event yielded at once). The
events are yielded as the recorded bytes, so the wire carries the same event bytes (the
cheapest path through sse-starlette: no re-encoding); pings are off.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route


def app(path: str) -> Starlette:
    with open(path, encoding="utf-8") as file:
        streams = {key: [data.encode("latin-1") for _, data in s["chunks"]]
                   for key, s in json.load(file).items()}

    async def endpoint(request: Request) -> EventSourceResponse:
        chunks = streams[request.url.path]

        async def events() -> AsyncIterator[bytes]:
            for data in chunks:
                yield data

        return EventSourceResponse(events(), ping=3600)

    return Starlette(routes=[Route(key, endpoint) for key in streams])


async def main(path: str, loop: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app(path), loop=loop, log_level="warning", access_log=False,
                            backlog=4096, lifespan="off")
    server = uvicorn.Server(config)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    factory = None
    if "uvloop" in sys.argv:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(sys.argv[1], "uvloop" if factory else "asyncio"))

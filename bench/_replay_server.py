"""The replay server under test, for bench/replay_bench.py.

`python bench/_replay_server.py CASSETTE [--instant] [--loop asyncio|uvloop]`; prints its URL.
What `sse-recorder replay` does (`ReplayServer.open`, `start`, serve until SIGTERM), plus the
event-loop choice (`server.loop_factory`, which the CLI does not offer yet) and RLIMIT_NOFILE
raised to the hard limit so 10,000 connections fit.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal

from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.server import LOOPS, ReplayOptions, ReplayServer, loop_factory


async def serve(cassette: str, instant: bool) -> None:
    options = ReplayOptions(timing=Timing(instant=instant))
    server = await ReplayServer.open(cassette, options)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await server.start("127.0.0.1", 0)
        print(server.base_url, flush=True)
        await stop.wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cassette")
    parser.add_argument("--instant", action="store_true")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(serve(args.cassette, args.instant))


if __name__ == "__main__":
    main()

"""Baseline for bench/replay_bench.py: the least an asyncio server can do to send the same bytes.

`python bench/_replay_raw.py STREAMS.json [--instant [--batch BYTES] [--turns [--turn BYTES]]]
[--loop asyncio|uvloop] [--port N --reuse-port]`; prints its URL. With --reuse-port, several
of them share one port (SO_REUSEPORT): the baseline for `replay --workers N`.
STREAMS.json maps a path to {"head": str, "head_due": s, "chunks": [[due_s, str], ...]} (latin-1
text). No parsing beyond the request line, no matching, no cassette, frames encoded up front;
the replay server's write pattern: at 1x each chunk is one write due at `start + due` on an
absolute schedule; instant, chunks joined up to BYTES (the replay's INSTANT_BATCH) per write,
back to back; with --turns, other streams run after every `--turn` bytes (the replay's
TURN_BYTES), as the replay's do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time


async def main(path: str, instant: bool, batch: int, turns: bool, port: int = 0,
               reuse_port: bool = False, turn_bytes: int = 65536) -> None:
    def frame(data: str) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data.encode("latin-1"))

    with open(path, encoding="utf-8") as file:
        streams = {}
        for key, s in json.load(file).items():
            frames = [(due, frame(data)) for due, data in s["chunks"]]
            if instant:  # joined up to `batch` bytes per write
                joined: list[bytes] = [b""]
                for _, f in frames:
                    joined[-1] += f
                    if len(joined[-1]) >= batch:
                        joined.append(b"")
                frames = [(0.0, j) for j in joined if j]
            streams[key.encode()] = (s["head"].encode("latin-1"), s["head_due"], frames)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                start = time.monotonic()
                head, head_due, frames = streams[request.split(b" ", 2)[1].split(b"?")[0]]
                since_turn = 0
                for due, data in [(head_due, head), *frames, (0.0, b"0\r\n\r\n")]:
                    delay = start + due - time.monotonic()
                    if delay > 0 and not instant:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    if writer.transport.get_write_buffer_size() > 65536:
                        await writer.drain()
                    since_turn += len(data)
                    if turns and since_turn >= turn_bytes:
                        since_turn = 0
                        await asyncio.sleep(0)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096,
                                        reuse_port=reuse_port or None)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    factory = None
    if "uvloop" in sys.argv:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        batch = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 4096
        port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
        turn = int(sys.argv[sys.argv.index("--turn") + 1]) if "--turn" in sys.argv else 65536
        runner.run(main(sys.argv[1], "--instant" in sys.argv, batch, "--turns" in sys.argv,
                        port, "--reuse-port" in sys.argv, turn))

"""Playing one recorded response: its head when due, its body on the schedule, its ending.

Rules:
- piece i is due at `start + offset_i / speed` on an absolute schedule (see `schedule.py`),
  and each goes out as one write with TCP_NODELAY, framed by the writer for the recorded
  framing (`wire/responses.py`): one HTTP chunk per recorded chunk, or the raw bytes;
- paced, the pieces are a plain list of (due time, wire bytes) (a cached body's list is made
  once, for every stream); while few streams play, each stream's task sends its own with
  precise waits; under load (more than PRECISE_MAX_STREAMS) one timer sends every stream's
  due pieces (`pacer.py`), and a stream's task wakes only when its buffer needs draining,
  its body is out, or the load fell (it then sends the rest itself);
- instant, it writes batches (INSTANT_BATCH) in turns of TURN_BYTES with the other instant
  streams, from one callback per round (`rounds.py`); the loop runs between rounds.
  Measured with 100 clients against a server that never turns: 4 KiB writes and turns
  reached 0.55 of its events/s, 8 KiB 0.78; 64 KiB turns were faster but left a stream
  without a byte in the first quarter of the events (bench/replay_bench.py, part 3's
  fairness);
- the recorded ending is reproduced: terminating chunk, a FIN (the close ends a
  close-delimited body, or cuts any other short) or an RST, at the recorded time;
- with faults, the transform is planned first over the whole body (it is pure), then played;
- an HTTP/1.0 client gets a chunked recording close-delimited (it has no chunked coding),
  and every head says `Connection: close` when the connection ends after it;
- once the head is out, a failure (a cassette value that cannot be read back) can only cut
  the response short: it comes out as `Interrupted`, for the server to close and report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sse_recorder.faults import Ending, FaultRun, Piece, split_at_events, split_at_frames
from sse_recorder.framing.registry import dialect_for
from sse_recorder.model import Framing, Interaction, Outcome, body_framing, header_value
from sse_recorder.replay.pacer import CLIENT_GONE, Pacer
from sse_recorder.replay.rounds import Rounds
from sse_recorder.replay.schedule import Schedule, Timing
from sse_recorder.replay.sources import CACHE_LIMIT, Bodies, Body, Timed, ending_due, timed
from sse_recorder.wire import responses
from sse_recorder.wire.endings import end_early
from sse_recorder.wire.responses import WRITERS, BodyWriter

PRECISE_WINDOW = 0.0015  # wake this early and finish the wait by polling the loop
PRECISE_MAX_STREAMS = 32  # above this many active streams, plain timers (CPU matters more)
WRITE_BUFFER_HIGH = 64 * 1024  # drain above this many bytes queued in the transport
TURN_BYTES = 8 * 1024  # instant: other connections take a turn after this many bytes
LONE_TURN_BYTES = 64 * 1024  # the same for a stream alone in its round: new ones wait no longer


@dataclass
class Load:
    """How busy the server is: the pacing depends on it."""

    streams: int = 0  # responses being answered

    def busy(self) -> bool:
        """More than PRECISE_MAX_STREAMS playing: plain timers, and the pacer sends."""
        return self.streams > PRECISE_MAX_STREAMS


# The framing a client of an HTTP version gets for a recorded one, where they differ.
FRAMING_FOR_VERSION: dict[str, dict[Framing, Framing]] = {
    "1.0": {Framing.CHUNKED: Framing.CLOSE},  # RFC 9112 §7: chunked is HTTP/1.1's
}


class Interrupted(Exception):
    """Playing failed after the head went out: the response can only be cut short."""

    def __init__(self, interaction: Interaction, cause: Exception) -> None:
        super().__init__(str(cause))
        self.interaction = interaction.id
        self.status = interaction.response.status if interaction.response else 0
        self.cause = cause


def writer_for(interaction: Interaction, http_version: str = "1.1") -> BodyWriter:
    """The body writer for the recorded response's framing, as the client's HTTP version
    can take it."""
    assert interaction.response is not None
    framing = body_framing(interaction.response, interaction.request.method)
    return WRITERS[FRAMING_FOR_VERSION.get(http_version, {}).get(framing, framing)]


def declared_length(interaction: Interaction, skipped: int = 0) -> int:
    """The Content-Length to send: the recorded one for a body that ended early (the client
    must see it truncated), else the recorded body's size; less what a resume skipped."""
    assert interaction.response is not None
    if interaction.outcome is not Outcome.CLEAN:
        recorded = header_value(interaction.response.headers, "content-length")
        if recorded is not None and recorded.strip().isdigit():
            return int(recorded) - skipped
    return interaction.body_size - skipped


async def wait_until(due: float, load: Load) -> None:
    """Sleep until `due`, a `time.monotonic()` time. asyncio wakes up to 1 ms late (epoll's
    millisecond timeout), so while few streams are active, wake early and poll the loop for
    the rest. uvloop's timers and its `loop.time()` have millisecond steps: a timer can
    fire up to 1 ms early, hence the clock read here and the sleep again if early."""
    delay = due - time.monotonic()
    if delay <= 0:
        return
    if load.busy():
        while delay > 0:
            await asyncio.sleep(delay)
            delay = due - time.monotonic()
        return
    if delay > PRECISE_WINDOW:
        await asyncio.sleep(delay - PRECISE_WINDOW)
    while time.monotonic() < due:
        await asyncio.sleep(0)


class Player:
    """Plays recorded responses from `bodies` with `timing`."""

    def __init__(self, bodies: Bodies, timing: Timing, load: Load) -> None:
        self.bodies = bodies
        self.timing = timing
        self.load = load
        self.pacer = Pacer(WRITE_BUFFER_HIGH, load.busy)
        self.rounds = Rounds(TURN_BYTES, LONE_TURN_BYTES, WRITE_BUFFER_HIGH)

    async def play(
        self, interaction: Interaction, body_writer: BodyWriter, last_event_id: str | None,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: FaultRun,
        persist: bool = True, http_version: str = "1.1",
    ) -> Outcome:
        """The recorded response (resumed after `last_event_id`, faulted as `run` says)
        through `body_writer` (`writer_for` the client's `http_version`), to a client that
        lets the connection `persist` or not."""
        assert interaction.response is not None
        start = time.monotonic()  # the schedule's clock: loop.time() is whole ms on uvloop
        timing = self.timing
        connection = responses.connection_field(persist, http_version, body_writer.closes)
        body: Body = None  # the whole recorded body
        schedule = Schedule(timing)
        skipped = 0
        resumed = None
        if not body_writer.has_body:
            body = []
        elif last_event_id is not None and interaction.is_sse:
            resumed = await self.bodies.resume(interaction, last_event_id)
        if resumed is not None:
            body, origin_ns, skipped = resumed
            schedule = Schedule(timing, origin_ns)
            start = time.monotonic()  # the recorded gaps count from here, however long it took
            head_due = 0.0
        else:
            head_due = schedule.due(interaction.head_offset_ns or 0)
        if run.chosen:
            return await self._faulted(interaction, body_writer, connection, body, schedule,
                                       start, head_due, skipped, reader, writer, run)
        frame = body_writer.frame
        shared = body is None and interaction.body_size <= CACHE_LIMIT  # one copy for all
        if shared and not timing.instant:  # a first use reads it while the head waits
            plan = self.bodies.paced_plan(interaction, frame, timing)
            pieces, end_due = plan or await self.bodies.paced(interaction, frame, timing)
        elif shared:
            await self.bodies.cached(interaction)
        if start + head_due > time.monotonic():
            await wait_until(start + head_due, self.load)
        transport = writer.transport
        field = body_writer.head_field(declared_length(interaction, skipped))
        transport.write(responses.head(interaction.response, field, connection))
        load = self.load
        try:
            if timing.instant:  # in turns with the other instant streams (`rounds.py`)
                async for batches in self.bodies.batches(interaction, body, frame):
                    if await self.rounds.play(batches, writer):
                        return Outcome.CLIENT_GONE  # a send failed: the client went away
            else:
                if not shared:  # paged from the cassette, or resumed: timed page by page
                    async for page in self.bodies.pages(interaction, body):
                        gone = await self._send_paced(timed(page, schedule, frame), start,
                                                      writer)
                        if gone:
                            return Outcome.CLIENT_GONE
                    end_due = ending_due(interaction, schedule)
                elif await self._send_paced(pieces, start, writer):
                    return Outcome.CLIENT_GONE
                if end_due is not None:
                    await wait_until(start + end_due, load)
            return await _end(interaction, body_writer, writer, reader)
        except ConnectionError:
            return Outcome.CLIENT_GONE
        except Exception as exc:
            raise Interrupted(interaction, exc) from exc

    async def _send_paced(self, pieces: Timed, start: float,
                          writer: asyncio.StreamWriter) -> bool:
        """Each piece at `start` + its due time; True when the client went away. Under load
        (more than PRECISE_MAX_STREAMS playing) the pacer sends them, one timer for every
        stream; else, and once the load falls again, this stream's task does, with precise
        waits."""
        sent = 0
        while self.load.busy() and sent < len(pieces):
            sent = await self.pacer.play(pieces, start, writer, sent)
            if sent == CLIENT_GONE:
                return True
        rest = pieces[sent:] if sent else pieces
        return bool(rest) and await _send_precisely(rest, start, self.load, writer)

    async def _faulted(
        self, interaction: Interaction, body_writer: BodyWriter, connection: str | None,
        body: Body,
        schedule: Schedule, start: float, head_due: float, skipped: int,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: FaultRun,
    ) -> Outcome:
        """The recorded stream through the connection's faults. The transform is pure, so
        the whole plan is computed first (the body is read whole; fine for fault runs)."""
        assert interaction.response is not None
        planned = [piece async for page in self.bodies.pages(interaction, body)
                   for piece in timed(page, schedule, None)]  # unframed: faults cut data
        # a stream that is not SSE is cut at its own frames (framing.registry)
        run.dialect = None if interaction.is_sse else dialect_for(interaction.response.headers)
        pieces: Iterable[Piece] = (
            (Piece(d, b) for d, b in planned) if not run.needs_events()
            else split_at_frames(planned, run.dialect) if run.dialect is not None
            else split_at_events(planned)
        )
        actions = list(run.transform(pieces))
        if any(isinstance(a, Ending) for a in actions):
            length = declared_length(interaction, skipped)
        else:  # what the faults made of the body, complete
            length = sum(len(a.data) for a in actions if isinstance(a, Piece))
        # Pieces are due from the request's start, like the head (not from the head): a head
        # delay shifts both. When reading and transforming the body took longer than the
        # recorded head offset, the schedule starts late rather than bursting to catch up
        # (which would break a throttle's cap and shorten every planned gap).
        start = max(start, time.monotonic() - head_due)
        delay = run.head_delay()
        reached = 0.0  # the due of the last action played: the log keeps what fired by then
        if await _wait_for_client(start + head_due + delay, self.load, reader, writer):
            run.played_until(reached)
            return Outcome.CLIENT_GONE
        writer.write(responses.head(interaction.response, body_writer.head_field(length),
                                    connection))
        frame = body_writer.frame
        try:
            for action in actions:
                if await _wait_for_client(start + delay + action.due, self.load, reader,
                                          writer):
                    return Outcome.CLIENT_GONE
                reached = action.due
                if isinstance(action, Ending):
                    return await end_early(action.outcome, writer, reader)
                if not action.data:
                    continue
                writer.write(frame(action.data) if frame is not None else action.data)
                if writer.transport.is_closing():
                    return Outcome.CLIENT_GONE
                if writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
                    await writer.drain()
            return await _end(interaction, body_writer, writer, reader)
        except ConnectionError:
            return Outcome.CLIENT_GONE
        except Exception as exc:
            raise Interrupted(interaction, exc) from exc
        finally:  # the plan was made for the whole body: what fired is what was played
            run.played_until(reached)


# A fault can hold a response for long without a write (a pause, a head delay): while it
# waits, whether its client went away is checked this often, so the stream ends then (its
# record made, `active_streams` down) instead of when the wait is over.
GONE_POLL_S = 0.25


async def _wait_for_client(due: float, load: Load, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
    """`wait_until(due)`; True, sooner, when the client closed its end or the connection
    (a client never half-closes an HTTP request it awaits, as `until_closed` assumes)."""
    while due - time.monotonic() > GONE_POLL_S:
        await asyncio.sleep(GONE_POLL_S)
        if reader.at_eof() or writer.transport.is_closing():
            return True
    await wait_until(due, load)
    return False


async def _send_precisely(pieces: Timed, start: float, load: Load,
                          writer: asyncio.StreamWriter) -> bool:
    """The hot loop of a stream sent by its own task, once per chunk: each piece at
    `start` + its due time. Returns True when the client went away. Should the load rise
    past PRECISE_MAX_STREAMS meanwhile, it sleeps inline: no call per chunk but the sleep
    and the write."""
    transport = writer.transport
    for due_s, data in pieces:
        due = start + due_s
        now = time.monotonic()
        if due > now:
            if load.busy():
                while due > now:  # a timer can fire early (uvloop's ms steps): sleep again
                    await asyncio.sleep(due - now)
                    now = time.monotonic()
            else:
                await wait_until(due, load)
        transport.write(data)
        if transport.is_closing():
            return True
        if transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
            await writer.drain()
    return False


async def _end(
    interaction: Interaction, body_writer: BodyWriter, writer: asyncio.StreamWriter,
    reader: asyncio.StreamReader,
) -> Outcome:
    """The recorded ending: complete (and, close-delimited, the close that says so), else a
    FIN before the body's end (the client sees it truncated) or an RST."""
    if interaction.outcome is Outcome.CLEAN:
        writer.write(body_writer.end)
        await writer.drain()
        if body_writer.closes:
            writer.close()
        return Outcome.CLEAN
    return await end_early(interaction.outcome.as_replayed, writer, reader)

"""Turn live traffic into cassette rows without slowing the traffic. Knows nothing of mitmproxy.

The proxy calls `begin`, `head`, `end` and, for each streamed chunk, a `chunk_forwarder`
closure synchronously; each only appends to an outbox (well under a microsecond): a chunk
joins its response's run (offsets and data as two lists, held by the closure for the
response's life), so a flood, or many streams at once, cross to the writer, and are stored,
as columns. FRAME_DELAY_S after its first item (or at FRAME_ITEMS items; a slow stream's
chunks ride along longer: QUIET_RIDE_NS) the outbox goes to the writer (`record.writer`) as
one frame: by default to a writer process of its own
(`record.child`, `WriterMode.PROCESS`), so parsing, redaction and SQLite run on another core;
or to a task on this loop (`WriterMode.TASK`), for embedding without a second process and
for unit tests.

Loss on a crash is bounded by time. The session keeps `backlog_since_ns`, when the oldest
frame the writer has not committed yet was queued. The proxy checks it after each chunk:
past `LAG_HIGH_NS`, and still past it once what the writer has already answered is read
(its commits wait unread in the pipe until the proxy needs them: `_ProcessChannel`; in a
flood a busy loop left them unread a median 66 ms and up to 380 ms, which made the proxy
stop its upstream for most of the flood with a writer that kept up), it stops reading from
that upstream and marks the session `congested`; once a commit brings the lag under
`LAG_LOW_NS`, `on_congestion(False)` lets it read again.
So the backlog stays near LAG_HIGH_NS at any rate the proxy can forward: a flood is slowed to
what the writer can store. A writer process also outlives a proxy killed with SIGKILL and
stores what it was handed, so such a kill loses only the frame not yet sent (FRAME_DELAY_S,
QUIET_FRAME_DELAY_S for a slow stream's: the same per-chunk check sends a frame that is due
when the loop is too busy to run its timer).
A storage failure (or a writer process that dies) is reported once through `on_failure`, so
the shell can stop the proxy instead of passing traffic unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from sse_recorder.errors import CassetteError
from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.model import is_event_stream as _is_event_stream
from sse_recorder.record.child import (
    Closed,
    Failed,
    Ready,
    Refused,
    Start,
    encode,
    rules_message,
    take_messages,
)
from sse_recorder.record.items import (
    ACK,
    BEGIN,
    END,
    FLUSH,
    HEAD,
    RUN,
    STOP,
    Commit,
    Item,
    Recorded,
)
from sse_recorder.record.redact import RedactionRules

if TYPE_CHECKING:  # imported where used: the proxy's process never loads the store
    from sse_recorder.record.writer import Writer
    from sse_recorder.store.cassette import Cassette

log = logging.getLogger(__name__)

# Uncommitted data this old: congested (stop reading upstreams). Above two quiet frames'
# cycle (QUIET_RIDE_NS plus a stream's gap, the writer's answer read when the next quiet
# frame goes), so a slow stream never needs a read of the answers of its own.
LAG_HIGH_NS = 150_000_000
LAG_LOW_NS = 75_000_000  # back under this after a commit: no longer congested
# Reading the writer's answers for the brake takes ~100 us with cold caches: done in the
# closure it delayed the chunk that found the deadline (one in ten of a 10 ms stream: p99
# +0.13 ms); it runs at the end of that loop turn instead, unless the turn has already gone
# on this long (a flood's callback), and the brake is decided on the next chunk.
ANSWERS_GRACE_NS = 5_000_000
NO_BACKLOG = 1 << 62  # `backlog_since_ns` when everything is committed
# Items queued within FRAME_DELAY_S go to the writer as one frame: one serialisation and one
# pipe write for a burst, at the price of that much more loss if the proxy is killed. Each
# pipe write wakes the writer on the other CPU, which costs the proxy far more than the bytes:
# in a flood of one-event chunks, 2 ms frames took 6.6% of the proxy's CPU, 10 ms frames 1.5%
# (py-spy, bench/record_bench.py part 2); and each frame is a wake-up and a read for the
# writer: 25 ms frames cut its CPU per event by a fifth against 10 ms ones. After a quiet
# spell (the last frame small and QUIET_GAP_S old), a frame goes at the end of a loop turn
# instead (its own, or a riding chunk's: QUIET_RIDE_NS): no timer wake-up of its own, and no
# send falling due just before a slow stream's next chunk (10 ms timers met a 10 ms-spaced
# stream's next event every time: median added delay 0.015 -> 0.101 ms). A gap alone is no
# sign of quiet: a flood's proxy sharing a CPU is often off it for longer.
FRAME_DELAY_S = 0.025
FRAME_DELAY_NS = int(FRAME_DELAY_S * 1e9)
QUIET_GAP_S = 0.002
QUIET_GAP_NS = int(QUIET_GAP_S * 1e9)
QUIET_FRAME_ITEMS = 32  # the last frame held fewer items: traffic may be quiet (a 10 ms
# stream's riding frames hold ~6 chunks; a 1 ms stream's would hold ~50: busy, 25 ms frames)
# A slow stream's chunks wake the proxy one by one, with cold caches, and a frame per chunk
# (a loop turn of its own, marshal, a pipe write) took the recorder's proxy CPU per event of
# a 10 ms stream to 1.15-1.23x the pass-through's. So after a quiet spell, chunks ride along:
# their frame goes at the end of the loop turn of the first chunk QUIET_RIDE_NS after the
# frame began (a chunk already forwarded: nothing waits on the send), and the writer's
# answers are read in that same turn; a stream that stops sends it by timer,
# QUIET_FRAME_DELAY_S after it began. Other items after a quiet spell (an interaction's
# begin, head and end, a flush) still go at the end of their own loop turn.
QUIET_RIDE_NS = 50_000_000
QUIET_FRAME_DELAY_S = 0.1
QUIET_FRAME_DELAY_NS = int(QUIET_FRAME_DELAY_S * 1e9)
FRAME_ITEMS = 2048  # a frame also goes once a response's run fed by `chunk` has this many
# chunks, or it holds this many other items (the proxy's closure counts nothing: by time)
PIPE_SIZE = 1 << 20  # the writer process's input pipe (Linux default: 64 KiB)
_READ_SIZE = 1 << 16  # the writer's answers are read this much at a time
_F_SETPIPE_SZ = 1031

End = TypeVar("End")  # what the proxy's per-chunk call returns for the body's end

__all__ = ["LAG_HIGH_NS", "LAG_LOW_NS", "NO_BACKLOG", "Recorded", "RecorderConfig",
           "RecordingSession", "WriterMode"]


class WriterMode(enum.StrEnum):
    PROCESS = "process"  # a writer process: the proxy's CPU only stamps and pickles
    TASK = "task"  # a task on the proxy's loop: no second process


@dataclass(frozen=True)
class RecorderConfig:
    redaction: RedactionRules = field(default_factory=RedactionRules)
    # Called on the session's loop once the batch holding an interaction's end is committed.
    on_recorded: Callable[[Recorded], None] | None = None
    writer: WriterMode = WriterMode.PROCESS


class _Channel(Protocol):
    """Where the session's frames go: a writer task or a writer process."""

    async def start(self, session: RecordingSession) -> int: ...  # the first interaction id
    def deliver(self, items: list[Item], plain: bool) -> None: ...
    def poll(self) -> None: ...  # act on what the writer has said so far, without waiting
    def watch(self, prompt: bool) -> None: ...  # whether its answers wake the loop
    async def close(self) -> None: ...


class RecordingSession:
    """One cassette being recorded. Create, `await start()`, feed it, `await close()`."""

    def __init__(
        self,
        cassette_path: str,
        config: RecorderConfig | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        on_congestion: Callable[[bool], None] | None = None,
    ) -> None:
        self.cassette_path = cassette_path
        self.config = config or RecorderConfig()
        self.on_failure = on_failure
        self.on_congestion = on_congestion
        self.failure: Exception | None = None
        self.chunks_written = 0
        # The oldest uncommitted item was queued no earlier than this (monotonic ns): the
        # proxy compares it with its clock after each chunk, and past LAG_HIGH_NS stops
        # reading and sets `congested`.
        self.backlog_since_ns = NO_BACKLOG
        self._due_ns = NO_BACKLOG  # see `_update_due`
        self.congested = False
        self.max_lag_ns = 0  # the oldest uncommitted data when answers were read (an upper bound)
        self._channel: _Channel = (_ProcessChannel() if self.config.writer is WriterMode.PROCESS
                                   else _TaskChannel())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[Item] = []
        self._outbox_items = 0  # items other than chunks (a run's chunks count in its lists)
        # Each response's chunks not yet sent, as two lists kept for its whole life: the
        # proxy's closure appends to them through bound methods, without a lookup; a frame
        # takes copies and empties them.
        self._lists: dict[int, tuple[list[int], list[bytes]]] = {}
        self._run_at: dict[int, int] = {}  # where each response's run sits in the outbox
        self._outbox_plain = True  # only runs of chunks and acknowledgements: marshal
        self._outbox_awaited = False  # holds an END, FLUSH or STOP: its answer is awaited
        self._outbox_since = NO_BACKLOG
        self._timer: asyncio.Handle | None = None  # the pending frame's send
        self._ride_ns = NO_BACKLOG  # a quiet frame of chunks: it goes after the chunk past this
        self._last_frame_ns = 0
        self._last_frame_items = 0
        self._frame = 0
        self._unacked: deque[tuple[int, int]] = deque()  # (frame, queued at) not committed
        self._acked = 0  # the last frame the writer said it committed (as read so far)
        self._answers_read: asyncio.Handle | None = None  # a read at the end of this turn
        self._answers_asked_ns = 0  # when that read was asked for
        self._answers_read_ns = 0  # when the answers were last read for the brake
        self._prompt_until = 0  # its answers wake the loop until this frame is acknowledged
        self._flushes: dict[int, asyncio.Future[None]] = {}
        self._flush_token = 0
        self._next_token = 1
        self._open: set[int] = set()  # interactions begun and not ended
        self._starting: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    async def begin_start(self) -> None:
        """Start the writer without waiting for it to be ready (`start` waits): a caller with
        slow work of its own lets the writer process boot on the other core meanwhile
        (`sse-recorder record` imports mitmproxy, 0.75 s, while the writer imports the store
        and opens the cassette, 0.6 s). Returns once its process is spawned (one loop turn)."""
        self._starting_task()
        await asyncio.sleep(0)

    async def start(self) -> None:
        """Open (or create) the cassette; raises CassetteError before any traffic flows."""
        await self._starting_task()

    def _starting_task(self) -> asyncio.Task[None]:
        if self._starting is None:
            self._loop = asyncio.get_running_loop()
            self._starting = self._loop.create_task(self._start_writer())
        return self._starting

    async def _start_writer(self) -> None:
        self._next_token = await self._channel.start(self)
        self._started = True

    # -- hot path: stamp and queue, nothing else -----------------------------------------

    def begin(self, request: RecordedRequest, started_at: float) -> int:
        """Returns the interaction's token: its cassette id when this is the store's only
        writer (the writer numbers interactions as their BEGIN is written)."""
        assert self._started, "start() first"
        token = self._next_token
        self._next_token += 1
        self._open.add(token)
        self._outbox_plain = False
        self._put((BEGIN, token, started_at, request))
        return token

    def head(self, iid: int, head: ResponseHead, offset_ns: int) -> bool:
        """Record the response head; returns whether the body is an event stream."""
        is_sse = _is_event_stream(head.headers)
        self._outbox_plain = False
        self._put((HEAD, iid, offset_ns, head, is_sse))
        return is_sse

    def chunk(self, iid: int, offset_ns: int, data: bytes) -> None:
        offsets, datas = self._lists_of(iid)
        offsets.append(offset_ns)
        datas.append(data)
        if len(datas) == 1 or len(datas) >= FRAME_ITEMS:
            self._run_grew(iid, offsets, datas)

    def chunk_forwarder(self, iid: int, anchor_ns: int, on_behind: Callable[[], None],
                        at_end: End) -> Callable[[bytes], bytes | End]:
        """The proxy's call for each chunk of one response, as one closure (this is the
        recorder's whole cost per chunk in the proxy): stamps the chunk with its offset
        from `anchor_ns`, queues it and returns it unchanged. An empty chunk (the body's
        end, in mitmproxy's streaming contract) returns `at_end` and is not recorded.
        `on_behind` is called when the writer is LAG_HIGH_NS behind (the proxy should stop
        reading that upstream; `congested` is then set). The closure counts nothing: its
        response's run joins the frame at its first chunk, and a frame goes by time (the
        deadline check below), not by size; a flood's 25 ms frames hold about 1,000 chunks.
        Each step here is paid once per chunk of a flood (measured: 267 ns for the closure
        this replaced, which checked the run's length twice and was called through a second
        closure in the addon)."""
        clock = time.monotonic_ns
        offsets, datas = self._lists_of(iid)
        add_offset, add_data = offsets.append, datas.append

        def forward(data: bytes) -> bytes | End:
            if not data:
                return at_end
            try:
                now = clock()
                first = not datas
                add_offset(now - anchor_ns)
                add_data(data)
                if first:  # its run joins the outbox (a chunk after the end is dropped)
                    self._run_grew(iid, offsets, datas)
                if now > self._due_ns and self._overdue(now):
                    on_behind()
            except Exception:  # noqa: BLE001 - raising here would break the proxy's stream
                log.exception("sse-recorder: dropped a chunk")
            return data

        return forward

    def _overdue(self, now: int) -> bool:
        """A chunk past `_due_ns`: a riding frame's chunks have ridden long enough (it goes
        at the end of this turn: QUIET_RIDE_NS), the pending frame's time has come (the loop
        could not run its timer: mitmproxy hands over the ~2,000 chunks of one 64 KiB read of
        a flood in a single callback, ~75 ms of work), or the writer may be LAG_HIGH_NS behind: its
        answers are read first (at the end of this turn, see ANSWERS_GRACE_NS), and the brake
        is decided on a chunk after that. Returns whether the proxy should stop reading this
        upstream."""
        if self._timer is not None:
            if self._ride_ns != NO_BACKLOG:  # chunks riding after a quiet spell
                if now - self._outbox_since >= QUIET_FRAME_DELAY_NS:  # a busy loop's turn
                    self._send()
                elif now >= self._ride_ns:
                    self._send_soon()
            elif now - self._outbox_since >= FRAME_DELAY_NS:
                self._send()
        if now - self.backlog_since_ns > LAG_HIGH_NS:
            if now - self._answers_read_ns > ANSWERS_GRACE_NS:
                # What the writer said waits unread in its pipe: read it at the end of this
                # loop turn (this chunk goes on at once), or now if this turn has lasted
                # ANSWERS_GRACE_NS already (one long callback); decide after reading.
                if self._answers_read is None:
                    assert self._loop is not None
                    self._answers_read = self._loop.call_soon(self._read_answers)
                    self._answers_asked_ns = now
                    self._update_due()
                    return False
                if now - self._answers_asked_ns < ANSWERS_GRACE_NS:
                    return False
                self._read_answers()
            if now - self.backlog_since_ns > LAG_HIGH_NS:
                self.congested = True
                self._channel.watch(True)  # its next commit must wake the loop to resume
                return True
        return False

    def _read_answers(self) -> None:
        """Act on everything the writer has said so far (the brake's deadline came)."""
        if self._answers_read is not None:
            self._answers_read.cancel()
            self._answers_read = None
        self._answers_read_ns = time.monotonic_ns()
        self._channel.poll()
        self._update_due()

    def _update_due(self) -> None:
        """When the closure next has something to check: the pending frame's send time, or
        the backlog reaching LAG_HIGH_NS (or, with a read of the answers pending, the end
        of its grace)."""
        due = self.backlog_since_ns + LAG_HIGH_NS
        if self._answers_read is not None:
            due = max(due, self._answers_asked_ns + ANSWERS_GRACE_NS)
        if self._timer is not None:
            due = min(due, self._outbox_since + FRAME_DELAY_NS
                      if self._ride_ns == NO_BACKLOG else self._ride_ns)
        self._due_ns = due

    def _lists_of(self, iid: int) -> tuple[list[int], list[bytes]]:
        lists = self._lists.get(iid)
        if lists is None:
            lists = self._lists[iid] = ([], [])
        return lists

    def _run_grew(self, iid: int, offsets: list[int], datas: list[bytes]) -> None:
        """A response's first chunk this frame (its run takes its place in the outbox), or
        its FRAME_ITEMS-th (the frame goes now)."""
        if iid not in self._open:  # after its end: dropped, as the writer would
            self._lists.pop(iid, None)
            offsets.clear()
            datas.clear()
            return
        if iid not in self._run_at:
            self._run_at[iid] = len(self._outbox)
            self._outbox.append((RUN, iid, offsets, datas))
        if len(datas) >= FRAME_ITEMS:
            self._send()
        else:
            self._schedule(ride=True)

    @staticmethod
    def _taken(item: Item) -> Item:
        """A run of the outbox as a frame carries it: copies of its response's lists,
        which are emptied for the next frame."""
        _, iid, offsets, datas = item
        run = (RUN, iid, offsets.copy(), datas.copy())
        offsets.clear()
        datas.clear()
        return run

    def _put(self, item: Item) -> None:
        self._outbox.append(item)
        self._outbox_items += 1
        if self._outbox_items >= FRAME_ITEMS:
            self._send()
        else:
            self._schedule()

    def _schedule(self, ride: bool = False) -> None:
        """The outbox's first item: its frame goes FRAME_DELAY_S later; after a quiet spell,
        at the end of this loop turn, or (`ride`: chunks) with a later chunk's turn (see
        QUIET_RIDE_NS). An item other than a chunk ends a ride at the end of this turn."""
        if self._timer is not None:
            if not ride and self._ride_ns != NO_BACKLOG:
                self._send_soon()
            return
        now = time.monotonic_ns()
        self._outbox_since = now
        if self.backlog_since_ns == NO_BACKLOG:
            self.backlog_since_ns = now
        assert self._loop is not None
        if (self._last_frame_items >= QUIET_FRAME_ITEMS
                or now - self._last_frame_ns < QUIET_GAP_NS):
            self._timer = self._loop.call_later(FRAME_DELAY_S, self._send)
        elif ride:
            self._ride_ns = now + QUIET_RIDE_NS
            self._timer = self._loop.call_later(QUIET_FRAME_DELAY_S, self._send_quiet)
        else:
            self._timer = self._loop.call_soon(self._send)
        self._update_due()

    def _send_soon(self) -> None:
        """A riding frame goes at the end of this loop turn, and the writer's answers are
        read in that turn (no turn of their own)."""
        assert self._timer is not None and self._loop is not None
        self._timer.cancel()
        self._ride_ns = NO_BACKLOG
        self._timer = self._loop.call_soon(self._send_quiet)
        self._update_due()

    def _send_quiet(self) -> None:
        self._send()
        self._read_answers()

    def _send(self) -> None:
        """FRAME_DELAY_S after its first item (after a quiet spell: at the end of that loop
        turn, or of a riding chunk's), or at FRAME_ITEMS items: the outbox goes to the writer
        as one frame."""
        if self._timer is not None:
            self._timer.cancel()  # a frame cut by size: its timer has nothing left to send
            self._timer = None
            self._ride_ns = NO_BACKLOG
            self._update_due()
        items = self._outbox.copy()
        self._outbox.clear()
        count = self._outbox_items
        for index in self._run_at.values():
            items[index] = self._taken(items[index])
            count += len(items[index][3])
        self._run_at.clear()
        plain, self._outbox_plain = self._outbox_plain, True
        awaited, self._outbox_awaited = self._outbox_awaited, False
        self._outbox_items = 0
        if not items:
            return
        self._last_frame_ns = time.monotonic_ns()
        self._last_frame_items = count
        self._frame += 1
        items.append((ACK, self._frame))
        self._unacked.append((self._frame, self._outbox_since))
        if awaited:  # an ended interaction's report, a flush, the stop: its answer wakes us
            self._prompt_until = self._frame
            self._channel.watch(True)
        self._channel.deliver(items, plain)

    def end(
        self,
        iid: int,
        reason: Outcome,
        offset_ns: int | None,
        error: str | None = None,
        *,
        check_truncation: bool = False,
    ) -> None:
        """Finalize an interaction. With `check_truncation` (a close-delimited body, whose
        framing cannot show truncation) a stream ending mid-event counts as closed early."""
        if iid in self._open:
            self._open.discard(iid)
            index = self._run_at.pop(iid, None)
            self._lists.pop(iid, None)
            if index is not None:  # its run is taken now: a chunk after its end is dropped
                self._outbox[index] = self._taken(self._outbox[index])
                self._outbox_items += len(self._outbox[index][3])
            self._outbox_plain = False
            self._outbox_awaited = True
            self._put((END, iid, offset_ns, reason, error, check_truncation))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; the next item starts a new
        batch (tests use it to put a boundary exactly there)."""
        if not self._started or self._closed:
            return
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._flush_token += 1
        self._flushes[self._flush_token] = done
        self._outbox_awaited = True
        self._put((FLUSH, self._flush_token))
        self._send()
        await done

    # -- what the writer reports ---------------------------------------------------------

    def _committed(self, commit: Commit) -> None:
        now = time.monotonic_ns()
        if self.backlog_since_ns != NO_BACKLOG:
            self.max_lag_ns = max(self.max_lag_ns, now - self.backlog_since_ns)
        if commit.acked is not None:
            unacked = self._unacked
            while unacked and unacked[0][0] <= commit.acked:
                unacked.popleft()
            self._acked = commit.acked
        if self._unacked:
            self.backlog_since_ns = self._unacked[0][1]
        elif self._timer is not None:
            self.backlog_since_ns = self._outbox_since
        else:
            self.backlog_since_ns = NO_BACKLOG
        self._update_due()
        self.chunks_written += commit.chunks
        if self.congested and now - self.backlog_since_ns < LAG_LOW_NS:
            self._congestion(False)
        if not (self.congested or self._closed) and self._acked >= self._prompt_until:
            self._channel.watch(False)  # nothing waits: answers are read when needed
        for token in commit.flushed:
            done = self._flushes.pop(token, None)
            if done is not None and not done.done():
                done.set_result(None)
        if commit.recorded and self.failure is None:
            self._report(commit.recorded)

    def _failed(self, exc: Exception) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        log.error("sse-recorder: cannot write %s: %s", self.cassette_path, exc)
        if self.on_failure is not None:
            self.on_failure(exc)

    def _report(self, recorded: list[Recorded]) -> None:
        callback = self.config.on_recorded
        if callback is None:
            return
        for item in recorded:
            try:
                callback(item)
            except Exception:  # noqa: BLE001 - a display hook must not stop the recording
                log.exception("sse-recorder: on_recorded failed")

    def _congestion(self, congested: bool) -> None:
        if congested is self.congested:
            return
        self.congested = congested
        if self.on_congestion is not None:
            try:
                self.on_congestion(congested)
            except Exception:  # noqa: BLE001 - the proxy's business; recording goes on
                log.exception("sse-recorder: on_congestion failed")

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Mark open interactions as stopped, write everything queued, close the file (a
        start begun and not waited for is waited for first; its failure is `start`'s)."""
        if self._starting is not None and not self._started:
            with contextlib.suppress(Exception):
                await self._starting
        if not self._started or self._closed:
            return
        self._closed = True
        for iid in list(self._open):
            self.end(iid, Outcome.STOPPED, None, "recording stopped")
        self._outbox_awaited = True
        self._put((STOP,))
        self._send()
        await self._channel.close()
        if self._answers_read is not None:  # everything is read by now
            self._answers_read.cancel()
            self._answers_read = None
        self.backlog_since_ns = NO_BACKLOG
        self._update_due()
        self._congestion(False)
        for done in self._flushes.values():
            if not done.done():
                done.set_result(None)


class _TaskChannel:
    """The writer as a task on the proxy's own loop."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._writer: Writer | None = None

    async def start(self, session: RecordingSession) -> int:
        from sse_recorder.record.writer import Writer
        from sse_recorder.store.cassette import Cassette

        cassette = await Cassette.open_for_recording(session.cassette_path)
        self._writer = Writer(cassette, session.config.redaction, session._committed,
                              session._failed)
        self._task = asyncio.get_running_loop().create_task(self._writer.run(),
                                                             name="sse-recorder")
        return cassette.peek_next_id()

    @property
    def cassette(self) -> Cassette:
        assert self._writer is not None
        return self._writer.cassette

    def deliver(self, items: list[Item], plain: bool) -> None:
        assert self._writer is not None
        self._writer.feed(items)

    def poll(self) -> None:
        """Nothing to read: the writer runs on this loop, its commits arrive as made."""

    def watch(self, prompt: bool) -> None:
        """Its commits arrive as made."""

    async def close(self) -> None:
        assert self._writer is not None and self._task is not None
        await self._task
        await self._writer.finish()


class _ProcessChannel:
    """The writer in a process of its own (`record.child`): frames pickled over a pipe. Its
    answers come back over a pipe of this channel's own, read through `poll` when the session
    needs them (the brake's deadline: `RecordingSession._overdue`), and by the loop when it
    sees the pipe readable only while someone waits on an answer (`watch`: a flush, an ended
    interaction's report, the stop, a congested proxy waiting to read again). A wake-up per
    commit cost the proxy more than the frame it answered: on one stream of events 10 ms
    apart, reading each commit as it came took the recorder's proxy CPU per event from 1.16
    to 1.31 times the pass-through's. The writer's exit is watched all along (a storage
    failure makes it exit after saying so), so neither goes unnoticed."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._session: RecordingSession | None = None
        self._answers = -1  # the read end of the writer's stdout, non-blocking
        self._buffer = bytearray()
        self._first: asyncio.Future[object] | None = None  # Ready or Refused; None: it died
        self._started = False  # its first answer was Ready
        self._ended = False
        self._reaper: asyncio.Task[None] | None = None
        self._exit_watch: asyncio.Task[None] | None = None
        self._watching = False  # the loop reads the answers as they come
        self._closed = asyncio.Event()

    async def start(self, session: RecordingSession) -> int:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        loop = asyncio.get_running_loop()
        answers, their_end = os.pipe()
        try:
            self._process = process = await asyncio.create_subprocess_exec(
                # -P: not the working directory first on the path (a checkout of another
                # version there would answer for this one)
                sys.executable, "-P", "-m", "sse_recorder.record.child",
                stdin=asyncio.subprocess.PIPE, stdout=their_end, env=env,
            )
        except BaseException:
            os.close(answers)
            raise
        finally:
            os.close(their_end)
        os.set_blocking(answers, False)
        self._answers, self._session = answers, session
        self._first = loop.create_future()
        self.watch(True)  # until it has answered
        assert process.stdin is not None
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fd = process.stdin.transport.get_extra_info("pipe").fileno()
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        process.stdin.write(encode(Start(session.cassette_path,
                                         rules_message(session.config.redaction))))
        answer = await self._first
        if not isinstance(answer, Ready):
            await process.wait()
            self._read(to_the_end=True)  # its end of input, now certain: the pipe is closed
            if isinstance(answer, Refused):
                raise CassetteError(answer.message)
            raise CassetteError(f"{session.cassette_path}: the writer process did not start "
                                f"(exit status {process.returncode})")
        self.watch(False)
        self._exit_watch = loop.create_task(self._exited(process))
        return answer.next_id

    def watch(self, prompt: bool) -> None:
        if prompt is self._watching or self._ended:
            return
        loop = asyncio.get_running_loop()
        if prompt:
            loop.add_reader(self._answers, self.poll)
        else:
            loop.remove_reader(self._answers)
        self._watching = prompt

    async def _exited(self, process: asyncio.subprocess.Process) -> None:
        """The writer exited: read what it said last (a storage failure, or Closed); an exit
        without Closed is a failure of its own (`_died`)."""
        await process.wait()
        self._read(to_the_end=True)

    def poll(self) -> None:
        """Read and act on everything the writer has said so far, without waiting."""
        self._read(to_the_end=False)

    def _read(self, to_the_end: bool) -> None:
        """A short read is all there was, unless the writer has exited (`to_the_end`: its
        end of input must be seen)."""
        if self._ended:
            return
        end_of_input = False
        while True:
            try:
                data = os.read(self._answers, _READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                end_of_input = True
                break
            self._buffer += data
            if len(data) < _READ_SIZE and not to_the_end:  # no second read to learn that
                break
        for message in take_messages(self._buffer):
            self._handle(message)
        if end_of_input and not self._ended:  # before Closed: the writer died
            self._end(clean=False)

    def _handle(self, message: object) -> None:
        assert self._session is not None and self._first is not None
        if not self._first.done():
            self._started = isinstance(message, Ready)
            self._first.set_result(message)
        elif type(message) is tuple:  # `plain_commit`
            self._session._committed(Commit(*message))
        elif isinstance(message, Commit):
            self._session._committed(message)
        elif isinstance(message, Failed):
            self._session._failed(CassetteError(message.message))
        elif isinstance(message, Closed):
            self._end(clean=True)

    def _end(self, clean: bool) -> None:
        """No more answers: the writer closed, or it died (reported once it is reaped)."""
        self.watch(False)
        self._ended = True
        os.close(self._answers)
        assert self._first is not None
        if not self._first.done():
            self._first.set_result(None)
        if clean or not self._started:  # a writer that never started: `start` says why
            self._closed.set()
        else:
            self._reaper = asyncio.get_running_loop().create_task(self._died())

    async def _died(self) -> None:
        assert self._process is not None and self._session is not None
        try:
            status = await self._process.wait()
            self._session._failed(CassetteError(
                f"{self._session.cassette_path}: the writer process exited "
                f"(status {status}); the recording is incomplete"))
        finally:
            self._closed.set()

    def deliver(self, items: list[Item], plain: bool) -> None:
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        if not stdin.is_closing():
            stdin.write(encode(items, plain=plain))

    async def close(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        await self._closed.wait()
        self._process.stdin.close()
        await self._process.wait()
        if self._exit_watch is not None:
            await self._exit_watch

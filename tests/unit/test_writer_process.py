"""The recorder's writer process (sse_recorder.record.child), exercised for real: the flows of
test_recorder.py through a child process, what a dead writer or a dead proxy leaves behind,
and secrets cut at every kind of boundary between proxy and writer (frame, batch, flush)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.errors import CassetteError
from sse_recorder.model import Outcome, RecordedRequest
from sse_recorder.record import session as session_module
from sse_recorder.record.child import PROXY_GONE
from sse_recorder.record.redact import MARKER, RedactionRules
from sse_recorder.record.session import (
    Recorded,
    RecorderConfig,
    RecordingSession,
    WriterMode,
)
from tests.unit.test_recorder import GET, SSE_HEAD, feed, read_back

ROOT = Path(__file__).resolve().parents[2]


async def test_a_recording_through_the_writer_process(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    reports: list[Recorded] = []
    session = RecordingSession(str(path), RecorderConfig(on_recorded=reports.append))
    assert session.config.writer is WriterMode.PROCESS  # what the proxy uses by default
    await session.start()
    first = session.begin(GET, 1.0)
    session.head(first, SSE_HEAD, 10)
    feed(session, first, [b"data: one\n\n", b"data: t", b"wo\n\n"])
    await session.flush()
    assert session.chunks_written == 3 and session.backlog_since_ns > 1 << 61
    second = session.begin(GET, 2.0)
    session.end(first, Outcome.CLEAN, 5000)
    await session.close()  # `second` is still open: stopped

    got = await read_back(path)
    assert [i.id for i in got.interactions] == [first, second] == [1, 2]
    assert [c.data for c in got.chunks[first]] == [b"data: one\n\n", b"data: t", b"wo\n\n"]
    assert [(e.data, e.first_chunk, e.last_chunk) for e in got.events[first]] == [
        ("one", 0, 0), ("two", 1, 2)]
    assert [(r.id, r.outcome, r.events, r.chunks) for r in reports] == [
        (first, Outcome.CLEAN, 2, 3), (second, Outcome.STOPPED, 0, 0)]


async def test_the_writer_process_ignores_a_checkout_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python -m` puts the working directory first on the path: started from a directory
    holding another checkout (here one whose writer would fail at once), the writer process
    must still be this installation's (it is started with -P)."""
    decoy = tmp_path / "checkout" / "sse_recorder" / "record"
    decoy.mkdir(parents=True)
    for package in (decoy.parent, decoy):
        (package / "__init__.py").write_text("")
    (decoy / "child.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(decoy.parents[1])
    session = RecordingSession(str(tmp_path / "rec.cassette"))
    await session.start()  # the decoy's writer would exit before saying Ready
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 10)
    feed(session, iid, [b"data: one\n\n", b"data: two\n\n"])
    await session.flush()
    assert session.chunks_written == 2 and session.failure is None  # stored by this writer
    await session.close()


def test_the_proxy_process_loads_none_of_the_store(tmp_path: Path) -> None:
    """The recording addon's imports stop at the session, and `sse-recorder record`'s (its
    runner, the CASSETTE it parses) at the store's location: SQLAlchemy, the migrations and
    aiosqlite are the writer process's alone (they were 0.4 s of the proxy's start-up)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            import sse_recorder.mitm.record_addon
            import sse_recorder.mitm.runner
            from sse_recorder.cli.app import CassetteTarget
            CassetteTarget().convert("cassettes/c.sqlite", None, None)
            store = ("sqlalchemy", "alembic", "aiosqlite", "sqlite3", "sse_recorder.store.")
            print(sorted(m for m in sys.modules if m.startswith(store)
                         and m != "sse_recorder.store.location"))
        """)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_appending_numbers_tokens_as_the_cassette_does(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    for started in (1.0, 2.0):
        session = RecordingSession(str(path))
        await session.start()
        iid = session.begin(GET, started)
        session.end(iid, Outcome.CLEAN, 10)
        await session.close()
    assert [i.id for i in (await read_back(path)).interactions] == [1, 2]
    assert iid == 2


async def test_a_cassette_the_writer_cannot_open_is_one_line(tmp_path: Path) -> None:
    session = RecordingSession(str(tmp_path))  # a directory
    with pytest.raises(CassetteError, match="is a directory") as info:
        await session.start()
    assert "\n" not in str(info.value)


def _children() -> set[int]:
    with open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children") as listing:
        return {int(pid) for pid in listing.read().split()}


async def test_a_writer_begun_early_boots_while_the_loop_is_blocked(tmp_path: Path) -> None:
    """`begin_start` spawns the writer at the loop's next turn, so it boots while the loop
    is then blocked (`sse-recorder record` importing mitmproxy), and `start` waits for what
    is left. A refusal begun early surfaces from `start` just the same."""
    before = _children()
    session = RecordingSession(str(tmp_path / "rec.cassette"))
    try:
        await session.begin_start()
        spawned = _children() - before
        assert len(spawned) == 1  # running before anything waited for it
        await session.begin_start()  # a second call starts nothing more
        await session.start()
        await session.start()  # and waiting twice is one start
        assert _children() - before == spawned
        iid = session.begin(GET, 1.0)
        session.end(iid, Outcome.CLEAN, 10)
    finally:
        await session.close()
    assert [i.id for i in (await read_back(tmp_path / "rec.cassette")).interactions] == [1]

    refused = RecordingSession(str(tmp_path))  # a directory
    await refused.begin_start()
    with pytest.raises(CassetteError, match="is a directory"):
        await refused.start()
    await refused.close()  # nothing to close: it never started

    abandoned = RecordingSession(str(tmp_path / "abandoned.cassette"))
    await abandoned.begin_start()
    await abandoned.close()  # begun, never waited for: closing waits for it, then closes
    assert _children() - before == set()  # its writer has exited
    assert not (tmp_path / "abandoned.cassette").exists()  # nothing recorded: no cassette


async def test_a_writer_process_that_dies_is_a_storage_failure(tmp_path: Path) -> None:
    failures: list[Exception] = []
    session = RecordingSession(str(tmp_path / "rec.cassette"), on_failure=failures.append)
    await session.start()
    iid = session.begin(GET, 1.0)
    await session.flush()
    process = session._channel._process  # type: ignore[attr-defined]
    process.kill()
    await process.wait()
    session.chunk(iid, 20, b"data: lost\n\n")
    await session.close()
    assert len(failures) == 1 and session.failure is failures[0]
    assert "writer process exited" in str(failures[0])


PROXY = textwrap.dedent("""
    import asyncio, os, signal, sys
    from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
    from sse_recorder.record.session import RecordingSession

    async def main() -> None:
        session = RecordingSession(sys.argv[1])
        await session.start()
        head = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),))
        iid = session.begin(RecordedRequest("GET", "https://api.example.com/s", ()), 1.0)
        session.head(iid, head, 1)
        for n in range(2000):
            session.chunk(iid, n + 2, b"data: %d\\n\\n" % n)
            if n % 100 == 99:
                session._send()  # the outbox goes out as a frame, as its timer would
        print(session._channel._process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the proxy dies with frames in flight

    asyncio.run(main())
""")


def test_what_the_proxy_handed_over_survives_its_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "rec.cassette"
    proxy = subprocess.run([sys.executable, "-c", PROXY, str(path)], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert proxy.returncode == -signal.SIGKILL, proxy.stderr
    writer_pid = int(proxy.stdout.split()[0])
    _wait_gone(writer_pid)  # the orphaned writer finishes the cassette and exits

    got = asyncio.run(read_back(path))
    (interaction,) = got.interactions
    assert [c.data for c in got.chunks[interaction.id]] == [
        b"data: %d\n\n" % n for n in range(2000)]
    assert interaction.outcome is Outcome.STOPPED and interaction.error == PROXY_GONE


async def test_a_commit_nobody_waits_for_is_read_when_the_proxy_needs_it(
    tmp_path: Path,
) -> None:
    """A frame of chunks only: its commit does not wake the proxy's loop (a wake-up per
    commit cost more CPU than the frame); the proxy reads it once the brake's deadline
    comes. A flush's answer, awaited, is read as it comes."""
    session = RecordingSession(str(tmp_path / "rec.cassette"))
    await session.start()
    channel = session._channel
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    await session.flush()  # awaited: read as it came
    assert not channel._watching  # type: ignore[attr-defined]
    forward = session.chunk_forwarder(iid, time.monotonic_ns(), lambda: None, [])
    forward(b"data: 1\n\n")
    session._send()
    frame = session._frame
    answers = channel._answers  # type: ignore[attr-defined]
    assert select.select([answers], [], [], 30)[0] == [answers]  # its commit is in the pipe
    for _ in range(5):  # turns of the loop: a watched pipe would be read in the first
        await asyncio.sleep(0)
    assert session._acked < frame and session.backlog_since_ns != session_module.NO_BACKLOG
    session.backlog_since_ns -= 2 * session_module.LAG_HIGH_NS  # the brake's deadline comes
    session._update_due()
    forward(b"data: 2\n\n")
    assert session._acked < frame  # asked for, read at the end of this loop turn
    await asyncio.sleep(0)
    assert session._acked == frame and not session.congested  # read, and not behind
    session.end(iid, Outcome.CLEAN, 10_000)
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    assert [c.data for c in got.chunks[iid]] == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_a_storage_failure_reaches_the_proxy_with_no_traffic(tmp_path: Path) -> None:
    """The writer says a storage failure and exits; the proxy, which reads answers only when
    it needs them, watches the writer's exit: the failure reaches it without another chunk
    (a proxy left idle would otherwise learn of it only with its next traffic)."""
    path = tmp_path / "rec.cassette"
    failed = asyncio.Event()
    failures: list[Exception] = []

    def on_failure(exc: Exception) -> None:
        failures.append(exc)
        failed.set()

    session = RecordingSession(str(path), on_failure=on_failure)
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    await session.flush()
    path.rename(tmp_path / "moved.cassette")  # the writer's next batch finds it gone
    forward = session.chunk_forwarder(iid, time.monotonic_ns(), lambda: None, [])
    forward(b"data: 1\n\n")
    session._send()  # chunks only: nobody waits on its answer
    await asyncio.wait_for(failed.wait(), 30)
    message = str(failures[0])
    assert message.startswith(f"{path}: the cassette was ") and "\n" not in message
    process = session._channel._process  # type: ignore[attr-defined]
    assert await process.wait() == 1  # it exited, with what it was handed unwritten
    await session.close()
    assert len(failures) == 1  # reported once


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Wait for a process that is not our child to exit (pidfd: no polling)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], timeout)[0], f"writer {pid} still running"
    finally:
        os.close(fd)


SECRET = "sk-live-0123456789abcdef"


@pytest.mark.parametrize("boundary", ["frame", "flush"])
@pytest.mark.parametrize("cut", [1, 8, 14, len(SECRET) - 1])
async def test_a_secret_cut_between_frames_never_reaches_the_disk(
    tmp_path: Path, boundary: str, cut: int
) -> None:
    """The secret's event is split across two frames (two loop turns) or two commits
    (a flush between), at several points inside the value: the writer redacts whole
    events, whatever the proxy's framing."""
    path = tmp_path / "rec.cassette"
    rules = RedactionRules.with_extra(values=[SECRET])
    session = RecordingSession(str(path), RecorderConfig(redaction=rules))
    await session.start()
    request = RecordedRequest("GET", "https://api.example.com/s", ())
    iid = session.begin(request, 1.0)
    session.head(iid, SSE_HEAD, 1)
    event = f'data: {{"newToken":"{SECRET}"}}\n'.encode()
    split = event.index(SECRET.encode()) + cut
    session.chunk(iid, 2, event[:split])
    if boundary == "flush":
        await session.flush()
    else:
        session._send()  # the frame goes now, as its timer would: the rest is in the next
    session.chunk(iid, 3, event[split:])
    await session.flush()
    session.chunk(iid, 4, b"\n")
    session.end(iid, Outcome.CLEAN, 5)
    await session.close()

    raw = path.read_bytes()
    assert SECRET.encode() not in raw
    if cut >= 8:  # the part the first frame carried is not on disk either
        assert SECRET[:cut].encode() not in raw
    got = await read_back(path)
    assert [e.data for e in got.events[iid]] == [f'{{"newToken":"{MARKER}"}}']


async def test_frames_of_chunks_go_as_marshal_and_the_rest_as_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood's frames hold chunks and acknowledgements only, and go by `marshal` (a quarter
    of pickle's CPU in the proxy); a frame with a request, head or end (objects marshal
    cannot carry) is pickled. The writer reads both into the same cassette."""
    path = tmp_path / "rec.cassette"
    session = RecordingSession(str(path))
    await session.start()
    sent: list[tuple[list[int], bool]] = []
    channel = session._channel
    deliver = channel.deliver

    def spy(items: list[tuple[object, ...]], plain: bool) -> None:
        sent.append(([int(str(item[0])) for item in items], plain))
        deliver(items, plain)

    monkeypatch.setattr(channel, "deliver", spy)
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 10)
    await session.flush()
    feed(session, iid, [b"data: one\n\n", b"data: t"])
    session.chunk(iid, 30, bytearray(b"wo\n\n"))  # type: ignore[arg-type]  # as h11 may hand it
    await session.flush()
    session.end(iid, Outcome.CLEAN, 5000)
    await session.close()

    assert [plain for _, plain in sent] == [False, True, False]
    got = await read_back(path)
    assert [c.data for c in got.chunks[iid]] == [b"data: one\n\n", b"data: t", b"wo\n\n"]
    assert [e.data for e in got.events[iid]] == ["one", "two"]
    assert got.interactions[0].complete


_PIECE = st.binary(max_size=12) | st.sampled_from(
    [b"data: a\n\n", b"\n", b"\r\n", b": ping\n", b"id: 7\n", SECRET.encode(), b"data: ",
     b"event: e\n"])
# (interaction 0 or 1, bytes, what follows: nothing, a frame cut, a flush)
_STEP = st.tuples(st.integers(0, 1), _PIECE, st.sampled_from(["", "", "frame", "flush"]))


async def _record(path: Path, mode: WriterMode, steps: list[tuple[int, bytes, str]]) -> None:
    config = RecorderConfig(redaction=RedactionRules.with_extra(values=[SECRET]), writer=mode)
    session = RecordingSession(str(path), config)
    await session.start()
    iids = [session.begin(GET, 1.0), session.begin(GET, 2.0)]
    for iid in iids:
        session.head(iid, SSE_HEAD, 1)
    for n, (which, piece, then) in enumerate(steps):
        session.chunk(iids[which], 10 + n, piece)
        if then == "frame":
            session._send()  # the frame goes now, as its timer would
        elif then == "flush":
            await session.flush()
    session.end(iids[0], Outcome.CLEAN, 10_000)
    await session.close()  # the other one is stopped


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_STEP, max_size=14))
def test_the_writer_process_stores_what_the_writer_task_does_however_framed(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bytes, str]]
) -> None:
    """Frames (marshalled chunks, pickled heads and ends), commits held back and merged, and
    a pipe between two processes change nothing: two interleaved streams cut into frames and
    flushes at random store, event for event, what the writer on the proxy's loop stores.
    No secret reaches either file."""
    folder = tmp_path_factory.mktemp("framed")
    paths = {mode: folder / f"{mode.value}.cassette" for mode in WriterMode}
    for mode, path in paths.items():  # a flush that never comes back fails, not hangs
        asyncio.run(asyncio.wait_for(_record(path, mode, steps), 60))
    process = asyncio.run(read_back(paths[WriterMode.PROCESS]))
    task = asyncio.run(read_back(paths[WriterMode.TASK]))
    assert [(i.id, i.outcome, i.chunk_count, i.event_count) for i in process.interactions] == [
        (i.id, i.outcome, i.chunk_count, i.event_count) for i in task.interactions]
    for iid in process.chunks:
        assert [(c.seq, c.offset_ns, c.data) for c in process.chunks[iid]] == [
            (c.seq, c.offset_ns, c.data) for c in task.chunks[iid]]
        assert process.events[iid] == task.events[iid]
    for path in paths.values():
        assert SECRET.encode() not in path.read_bytes()


async def test_congestion_is_judged_on_what_the_writer_said_not_on_what_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's commits can wait unread in the pipe while the proxy's loop is busy (in a
    flood, a median 66 ms and up to 380 ms): the proxy reads them before calling itself
    congested. A writer that has not answered still makes it congested, and its next commit
    wakes the congested proxy by itself (the answers are watched while it waits on them)."""
    monkeypatch.setattr(session_module, "LAG_HIGH_NS", 1_000_000)  # 1 ms: ages fast
    resumed = asyncio.Event()
    session = RecordingSession(str(tmp_path / "rec.cassette"),
                               on_congestion=lambda congested: congested or resumed.set())
    await session.start()
    iid = session.begin(GET, 1.0)
    session.head(iid, SSE_HEAD, 1)
    behind: list[bytes] = []
    sent = [b"data: %d\n\n" % n for n in range(1, 5)]
    chunks = iter(sent)

    def record() -> bool:
        """One chunk through the proxy's closure: whether it said the writer is behind."""
        count = len(behind)
        forward(next(chunks))
        return len(behind) > count

    forward = session.chunk_forwarder(iid, time.monotonic_ns(), lambda: behind.append(b""), [])
    assert record() is False
    session._send()  # the frame goes now, as its timer would
    answers = session._channel._answers  # type: ignore[attr-defined]
    # The loop stays busy (blocked here) until the writer's commit is in the pipe, unread.
    assert select.select([answers], [], [], 30)[0] == [answers]
    time.sleep(0.002)  # and the frame is older than LAG_HIGH_NS by now
    assert record() is False and not session.congested  # answers read at the turn's end
    await asyncio.sleep(0)  # read at the turn's end: the commit was there, not behind
    assert session._answers_read is None and not session.congested

    writer = session._channel._process  # type: ignore[attr-defined]
    writer.send_signal(signal.SIGSTOP)  # a writer that cannot answer
    try:
        session._send()
        time.sleep(0.002)
        session._answers_read_ns -= session_module.ANSWERS_GRACE_NS  # last read long ago
        assert record() is False  # asks for the answers to be read at the turn's end
        await asyncio.sleep(0)
        assert record() is True and session.congested
    finally:
        writer.send_signal(signal.SIGCONT)
    await asyncio.wait_for(resumed.wait(), 30)  # no chunk, no flush: the commit woke the loop
    assert not session.congested
    session.end(iid, Outcome.CLEAN, 10_000)
    await session.close()
    got = await read_back(tmp_path / "rec.cassette")
    assert [c.data for c in got.chunks[iid]] == sent

"""Damage SQLite cannot see, storage edges, and never a partial file (`sse_recorder.store`).

Every damage here is made to a real cassette with the stdlib sqlite3 module, then read back
through `Cassette` and through the real `sse-recorder` command: one line, exit 2, never a
traceback, and the file left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.errors import CassetteError
from sse_recorder.model import (
    Chunk,
    Interaction,
    Outcome,
    RecordedEvent,
    RecordedRequest,
    body_framing,
)
from sse_recorder.store import sqlite as store_sqlite
from sse_recorder.store.cassette import Cassette, EndUpdate, InteractionStart, WriteBatch
from sse_recorder.store.schema import Base
from sse_recorder.wire.probe import probe
from sse_recorder.wire.responses import head as wire_head
from tests.helpers import SSE_RECORDER, RecorderFactory, task_session
from tests.unit.test_cassette import as_v1, record_sample, side_files

# --------------------------------------------------------------------------------------------
# helpers


def run_sql(path: Path, *statements: str, loosen: tuple[str, ...] = ()) -> None:
    """Run statements on a cassette with the stdlib module, after `loosen`ing tables."""
    conn = sqlite3.connect(path)
    for table in loosen:
        loosen_table(conn, table)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def loosen_table(conn: sqlite3.Connection, table: str) -> None:
    """The same table without its constraints (CREATE TABLE AS keeps columns and affinity),
    so that any value, NULL included, can be put anywhere: what another tool could write."""
    conn.execute(f"CREATE TABLE loose AS SELECT * FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE loose RENAME TO {table}")


async def read_everything(path: Path) -> list[tuple[Interaction, list[Chunk], list[RecordedEvent]]]:
    """What `ls`, `show` and a replay read: every interaction, chunk and event."""
    async with await Cassette.open(path) as cassette:
        return [
            (i, [c async for c in cassette.chunks(i.id)], await cassette.events(i.id))
            for i in await cassette.interactions()
        ]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSE_RECORDER, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sse-recorder: "), done.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])


# --------------------------------------------------------------------------------------------
# reproductions: damage SQLite cannot see


# name: (statements, tables to loosen first, what the one-line error says)
DAMAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "headers-object": (("UPDATE interactions SET request_headers = '{\"a\": 1}' WHERE id = 1",),
                       (), "interaction 1: interactions.request_headers is not a JSON list"),
    "headers-not-pairs": (("UPDATE interactions SET response_headers = '[[\"a\"]]'",), (),
                          "interaction 1: interactions.response_headers is not a JSON list"),
    "headers-not-strings": (("UPDATE interactions SET request_headers = '[[\"a\", 1]]'",), (),
                            "interactions.request_headers is not a JSON list of [name, value]"),
    "headers-not-json": (("UPDATE interactions SET request_headers = 'a: b' WHERE id = 2",), (),
                         "interaction 2: interactions.request_headers is not JSON"),
    "header-splits-line": (
        ("UPDATE interactions SET response_headers = '[[\"x\", \"a\\r\\nSet-Cookie: s\"]]'",),
        (), "interactions.response_headers holds a CR, LF or NUL"),
    "header-not-latin-1": (("UPDATE interactions SET response_headers = '[[\"x\", \"Ω\"]]'",),
                           (), "interactions.response_headers is not latin-1"),
    "started-at-text": (("UPDATE interactions SET started_at = 'yesterday' WHERE id = 2",), (),
                        "interaction 2: interactions.started_at is text, not real or integer"),
    "started-at-infinite": (("UPDATE interactions SET started_at = 1e999",), (),
                            "interactions.started_at is inf"),
    "url-not-a-url": (("UPDATE interactions SET url = 'http://[::1/x' WHERE id = 2",), (),
                      "interaction 2: interactions.url is not a URL"),
    "body-text": (("UPDATE interactions SET request_body = 'text body' WHERE id = 1",), (),
                  "interaction 1: interactions.request_body is text, not blob"),
    "status-out-of-range": (("UPDATE interactions SET status = 42",), (),
                            "interactions.status is 42, below 100"),
    "flag-not-boolean": (("UPDATE interactions SET is_sse = 7",), (),
                         "interactions.is_sse is 7"),
    "end-reason-blob": (("UPDATE interactions SET end_reason = x'00' WHERE id = 2",), (),
                        "interaction 2: interactions.end_reason is blob, not text or null"),
    "method-null": (("UPDATE interactions SET method = NULL WHERE id = 2",), ("interactions",),
                    "interaction 2: interactions.method is null, not text"),
    "id-text": (("UPDATE interactions SET id = 'one' WHERE id = 1",), ("interactions",),
                "interaction 'one': interactions.id is text, not integer"),
    "chunk-text": (("UPDATE chunks SET data = 'llo' WHERE seq = 2",), (),
                   "interaction 1, chunk 2: chunks.data is text, not blob"),
    "block-text": (("UPDATE chunks SET data = 'data: hello' WHERE seq = 0",), (),
                   "interaction 1, chunk 0: chunks.data is text, not blob"),
    "block-count-one": (("UPDATE chunks SET count = 1 WHERE seq = 0",), (),
                        "interaction 1, chunk 0: chunks.count is 1, below 2"),
    "block-sizes-short": (("UPDATE chunks SET sizes = x'01000000' WHERE seq = 0",), (),
                          "interaction 1, chunk 0: chunks block: offsets or sizes do not hold"),
    "block-sizes-sum": (("UPDATE chunks SET sizes = x'0100000001000000' WHERE seq = 0",), (),
                        "interaction 1, chunk 0: chunks block: sizes add up to 2 bytes"),
    "block-offset-negative": (
        ("UPDATE chunks SET offsets = x'0000000000000000ffffffffffffffff' WHERE seq = 0",), (),
        "interaction 1, chunk 0: chunks block: an offset is negative"),
    "block-offsets-null": (("UPDATE chunks SET offsets = NULL WHERE seq = 0",), (),
                           "interaction 1, chunk 0: chunks block: count, offsets and sizes"),
    "single-with-sizes": (("UPDATE chunks SET sizes = x'00000000' WHERE seq = 3",), (),
                          "interaction 1, chunk 3: chunks block: count, offsets and sizes"),
    "chunk-data-null": (("UPDATE chunks SET data = NULL WHERE seq = 3",), ("chunks",),
                        "interaction 1, chunk 3: chunks.data is null, not blob"),
    "chunk-offset-negative": (("UPDATE chunks SET offset_ns = -5 WHERE seq = 2",), (),
                              "interaction 1, chunk 2: chunks.offset_ns is -5, below 0"),
    "chunk-offset-real": (("UPDATE chunks SET offset_ns = 1.5 WHERE seq = 2",), (),
                          "interaction 1, chunk 2: chunks.offset_ns is real, not integer"),
    "chunk-offset-null": (("UPDATE chunks SET offset_ns = NULL WHERE seq = 0",), ("chunks",),
                          "interaction 1, chunk 0: chunks.offset_ns is null, not integer"),
    "event-kind": (("UPDATE events SET kind = 'heartbeat' WHERE seq = 1",), (),
                   "interaction 1, event 1: events.kind is 'heartbeat', not one of event"),
    "event-retry-text": (("UPDATE events SET retry = 'soon' WHERE seq = 2",), (),
                         "interaction 1, event 2: events.retry is text, not integer or null"),
    "event-data-null": (("UPDATE events SET data = NULL WHERE seq = 0",), ("events",),
                        "interaction 1, event 0: events.data is null, not text"),
    "dropped-chunk-column": (("ALTER TABLE chunks DROP COLUMN data",), (),
                             "damaged cassette, table chunks has no column data"),
    "dropped-interaction-column": (("ALTER TABLE interactions DROP COLUMN end_reason",), (),
                                   "table interactions has no column end_reason"),
    "version-null": (("UPDATE cassette_meta SET value = NULL WHERE key = 'version'",),
                     ("cassette_meta",), "unreadable format version"),
}


V1_ONLY = {"event-kind", "event-retry-text", "event-data-null"}  # v2 writes no event rows


@pytest.fixture
def damaged(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    statements, loosen, message = DAMAGE[request.param]
    path = tmp_path / "damaged.sqlite"
    asyncio.run(record_sample(path))
    if request.param in V1_ONLY:
        as_v1(path)
    run_sql(path, *statements, loosen=loosen)
    yield path, message


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
async def test_damage_is_one_line_and_the_file_is_untouched(damaged: tuple[Path, str]) -> None:
    path, message = damaged
    before, listing = path.read_bytes(), side_files(path)
    with pytest.raises(CassetteError) as info:
        await read_everything(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text and "\r" not in text
    with pytest.raises(CassetteError) as appending:  # never appended to either
        await Cassette.open_for_recording(path)
    assert message in str(appending.value)
    assert path.read_bytes() == before
    assert side_files(path) == listing


# Each damage through one command (in turn), as a process of its own: every damage is read by
# every read path in `test_damage_is_one_line_and_the_file_is_untouched`; here the command line
# turns each into one line and exit 2, and each command meets a quarter of them, of every kind.
COMMANDS = (("ls",), ("show",), ("show", "--json"), ("replay", "--listen-port", "0"))


IN_TURN = [(name, COMMANDS[n % len(COMMANDS)]) for n, name in enumerate(DAMAGE)]


@pytest.mark.parametrize(("damaged", "command"), IN_TURN, indirect=["damaged"],
                         ids=[f"{name}-{'-'.join(command[:2])}" for name, command in IN_TURN])
def test_damage_on_the_command_line_is_one_line_exit_2(damaged: tuple[Path, str],
                                                       command: tuple[str, ...]) -> None:
    path, message = damaged
    done = subprocess.run([SSE_RECORDER, command[0], str(path), *command[1:]],
                          stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert_one_line_exit_2(done, message)
    assert done.stdout == ""  # nothing half-shown; a replay names no URL: nothing listens


@pytest.mark.parametrize("version", [2, 1])
async def test_damage_found_while_serving_names_the_row(tmp_path: Path, version: int) -> None:
    """A file changed under an open reader: the row read next is checked as it is read (v2:
    the events are derived from the damaged chunk; v1: read from their own rows)."""
    path = tmp_path / "c.sqlite"
    await record_sample(path)
    if version == 1:
        await asyncio.to_thread(as_v1, path)
    event_damage = (r"interaction 1, event 2: events\.offset_ns" if version == 1
                    else r"interaction 1, chunk 2: chunks\.data is text")
    async with await Cassette.open(path) as cassette:
        (first, _) = await cassette.interactions()
        run_sql(path, "UPDATE chunks SET data = 'x' WHERE seq = 2",
                "UPDATE events SET offset_ns = -1 WHERE seq = 2")
        with pytest.raises(CassetteError, match=r"interaction 1, chunk 2: chunks\.data is text"):
            [c async for c in cassette.chunks(first.id)]
        with pytest.raises(CassetteError, match=event_damage):
            await cassette.events(first.id)


async def test_unknown_end_reason_reads_as_closed_and_new_columns_are_ignored(
    tmp_path: Path,
) -> None:
    """Forward compatibility: what a newer release may add still reads."""
    path = tmp_path / "c.sqlite"
    expected = await record_sample(path)
    run_sql(path, "UPDATE interactions SET end_reason = 'upstream-goaway' WHERE id = 1",
            "ALTER TABLE interactions ADD COLUMN protocol TEXT DEFAULT 'h3'",
            "ALTER TABLE chunks ADD COLUMN flags INTEGER",
            "CREATE TABLE annotations (id INTEGER PRIMARY KEY, note TEXT)",
            "INSERT INTO cassette_meta VALUES ('feature', 'x')")
    read = await read_everything(path)
    assert [i for i, _, _ in read] == [
        Interaction(**{**_fields(expected[0]), "outcome": Outcome.CLOSED}), expected[1]]


def _fields(interaction: Interaction) -> dict[str, object]:
    return {name: getattr(interaction, name) for name in Interaction.__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# property: one random value of a valid cassette damaged in a random way

JUNK = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["[]", "{}", "[[\"a\"]]", "[[\"a\", \"b\", \"c\"]]", "[[1, 2]]", "null",
                     "[[\"\", \"v\"]]", "[[\"k\", \"\\u0100\"]]", "[" * 5000, "\"x\"",
                     "1e999", "-1", "clean", "upstream-reset", "event", "comment", "HTTP/1.1",
                     "http://[::1/x", "GET", "G ET"]),
)
COLUMNS = {name: [c.name for c in table.columns] for name, table in Base.metadata.tables.items()
           if name != "cassette_meta"}


@pytest.fixture(scope="module")
def sample_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """The sample as v2 writes it, and as a v1 release wrote it (where event rows are)."""
    import asyncio

    found = {}
    for version in (2, 1):
        path = tmp_path_factory.mktemp("sample") / "c.sqlite"
        asyncio.run(record_sample(path))
        if version == 1:
            as_v1(path)
        found[version] = path.read_bytes()
    return found


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.sampled_from(sorted(COLUMNS)), data=st.data(), value=JUNK,
       storage=st.sampled_from(["as-is", "text", "blob"]))
def test_any_damaged_value_reads_as_valid_values_or_a_cassette_error(
    sample_bytes: dict[int, bytes], table: str, data: st.DataObject, value: object, storage: str
) -> None:
    column = data.draw(st.sampled_from(COLUMNS[table]), label="column")
    conn_rows = {"interactions": 2, "chunks": 3, "events": 3}[table]  # v2 chunks: a block, 2
    row = data.draw(st.integers(0, conn_rows - 1), label="row")
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "c.sqlite"
        path.write_bytes(sample_bytes[1 if table == "events" else 2])
        conn = sqlite3.connect(path)
        loosen_table(conn, table)
        cast = {"as-is": "?", "text": "CAST(? AS TEXT)", "blob": "CAST(? AS BLOB)"}[storage]
        conn.execute(f"UPDATE {table} SET {column} = {cast} "
                     f"WHERE rowid = (SELECT rowid FROM {table} ORDER BY rowid LIMIT 1 OFFSET ?)",
                     (value, row))
        conn.commit()
        conn.close()
        try:
            read = asyncio.run(read_everything(path))
        except CassetteError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}: ")
            hypothesis.event("refused")
            return
    hypothesis.event("read")
    for interaction, chunks, events in read:
        assert_valid(interaction, chunks, events)


def assert_valid(i: Interaction, chunks: list[Chunk], events: list[RecordedEvent]) -> None:
    """Values every consumer can use as they are: shown, matched, written to the wire."""
    assert type(i.id) is int and i.id >= 1
    assert type(i.started_at) is float
    datetime.fromtimestamp(i.started_at).astimezone().isoformat()
    assert type(i.request.method) is str and i.request.method.strip() == i.request.method != ""
    urlsplit(i.request.url)
    assert type(i.request.body) is bytes and type(i.request.http_version) is str
    for name, text in i.request.headers:
        assert type(name) is str and type(text) is str
        f"{name}: {text}".encode("latin-1")
    if i.response is not None:
        assert type(i.response.status) is int and 100 <= i.response.status <= 999
        assert type(i.response.http_version) is str
        wire = wire_head(i.response, "Content-Length: 0")  # as a replay writes it
        assert wire.endswith(b"\r\n\r\n") and wire.count(b"\r\n\r\n") == 1
        body_framing(i.response, i.request.method)
    for offset in (i.head_offset_ns, i.end_offset_ns):
        assert offset is None or (type(offset) is int and offset >= 0)
    assert type(i.is_sse) is bool and type(i.complete) is bool
    assert isinstance(i.outcome, Outcome)
    assert i.error is None or type(i.error) is str
    for chunk in chunks:
        assert type(chunk.seq) is int and type(chunk.offset_ns) is int and chunk.offset_ns >= 0
        assert type(chunk.data) is bytes
    for event in events:
        assert event.kind in ("event", "comment") and type(event.data) is str
        assert event.type is None or type(event.type) is str
        assert event.id is None or type(event.id) is str
        assert event.retry is None or (type(event.retry) is int and event.retry >= 0)
        assert all(type(n) is int and n >= 0
                   for n in (event.seq, event.offset_ns, event.first_chunk, event.last_chunk))


# --------------------------------------------------------------------------------------------
# record never appends to a file that fails PRAGMA integrity_check


def _index_out_of_step(path: Path) -> None:
    """An index whose entries no longer match its table: every query still runs, only
    `PRAGMA integrity_check` (not even quick_check) sees it."""
    run_sql(path, "CREATE INDEX chunk_offsets ON chunks(offset_ns)")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX chunk_offsets ON chunks(seq)' "
                 "WHERE name = 'chunk_offsets'")
    conn.commit()
    conn.close()


def _page_overwritten(path: Path) -> None:
    """A b-tree page of the chunks table overwritten with garbage on disk."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE filler (x BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(900),) for _ in range(40)])
    conn.executemany("INSERT INTO chunks (interaction_id, seq, offset_ns, data)"
                     " VALUES (2, ?, ?, ?)", [(seq, seq, os.urandom(300)) for seq in range(200)])
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    pages = [n for n in range(1, len(data) // page_size) if data[n * page_size] == 0x0D]
    victim = pages[len(pages) // 2] * page_size
    data[victim + 8: victim + page_size] = b"\xa5" * (page_size - 8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_index_out_of_step, _page_overwritten],
                         ids=["index-out-of-step", "page-overwritten"])
async def test_record_refuses_a_file_failing_integrity_check(
    tmp_path: Path, corrupt: Callable[[Path], None]
) -> None:
    path = tmp_path / "c.sqlite"
    await record_sample(path)
    corrupt(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    conn.close()
    before, listing = path.read_bytes(), side_files(path)
    with pytest.raises(CassetteError) as info:
        await Cassette.open_for_recording(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert "integrity check" in str(info.value) or "malformed" in str(info.value)
    assert path.read_bytes() == before and side_files(path) == listing

    done = cli("record", "--cassette", str(path), "--listen-port", "0",
               "--confdir", str(tmp_path / "mitm"))
    assert_one_line_exit_2(done, str(path))
    assert path.read_bytes() == before and side_files(path) == listing


# --------------------------------------------------------------------------------------------
# storage edges


def test_record_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a directory\n")
    for path in (blocker / "c.sqlite", blocker / "deeper" / "c.sqlite"):
        done = cli("record", "--cassette", str(path), "--listen-port", "0",
                   "--confdir", str(tmp_path / "mitm"))
        assert_one_line_exit_2(done, f"{blocker} is not a directory")
    assert blocker.read_text() == "a file, not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _unprivileged() -> list[str]:
    """A command prefix under which directory modes hold: root with every capability
    dropped (owner permissions still apply), nothing for another user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: directory modes do not hold for root")
    return [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


@pytest.fixture
def read_only_dir() -> Iterator[tuple[Path, list[str]]]:
    """A directory of mode 0o555 (outside pytest's 0o700 temp root), and the prefix under
    which it is really read-only; skipped if it is not."""
    prefix = _unprivileged()
    where = Path(tempfile.mkdtemp(prefix="sse-ro-"))
    try:
        where.chmod(0o555)
        probe = subprocess.run([*prefix, "touch", str(where / "probe")], capture_output=True)
        if probe.returncode == 0:
            pytest.skip("a 0o555 directory does not stop this user from writing")
        yield where, prefix
    finally:
        where.chmod(0o755)
        shutil.rmtree(where)


def test_record_into_a_read_only_directory_is_one_line(
    read_only_dir: tuple[Path, list[str]], tmp_path: Path
) -> None:
    where, prefix = read_only_dir
    path = where / "c.sqlite"
    done = subprocess.run(
        [*prefix, SSE_RECORDER, "record", "--cassette", str(path), "--listen-port", "0",
         "--confdir", str(tmp_path / "mitm")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert_one_line_exit_2(done, f"{where} is not writable")
    assert list(where.iterdir()) == []


async def _one_interaction(cassette: Cassette, url: str = "http://h/") -> None:
    iid = cassette.allocate_id()
    await cassette.write(WriteBatch(
        starts=[InteractionStart(iid, 1.0, RecordedRequest("GET", url, ()))],
        chunks=[(iid, 0, 5, b"data: 1\n\n")],
        ends=[EndUpdate(iid, True, Outcome.CLEAN, 6, None)],
    ))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_cassette_deleted_or_replaced_while_recording_fails_loudly(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "c.sqlite"
    cassette = await Cassette.open_for_recording(path)
    try:
        await _one_interaction(cassette)
        path.unlink()
        if how == "replaced":
            path.write_bytes(b"someone else's file")
        with pytest.raises(CassetteError, match=f"the cassette was {how} while recording"):
            await _one_interaction(cassette)
        with pytest.raises(CassetteError, match=f"the cassette was {how} while recording"):
            await cassette.finish_recording()
    finally:
        await cassette.close()
    if how == "replaced":  # never touched, never removed
        assert path.read_bytes() == b"someone else's file"
    else:
        assert not path.exists()


async def test_session_stops_on_a_deleted_cassette(tmp_path: Path) -> None:
    """The recorder's failure path: the write raises, `on_failure` hears it once."""
    path = tmp_path / "c.sqlite"
    failures: list[Exception] = []
    session = task_session(str(path), on_failure=failures.append)
    await session.start()
    first = session.begin(RecordedRequest("GET", "http://h/1", ()), 1.0)
    session.end(first, Outcome.PROXY_ERROR, 1, "x")
    path.unlink()
    second = session.begin(RecordedRequest("GET", "http://h/2", ()), 2.0)
    session.end(second, Outcome.PROXY_ERROR, 1, "x")
    await session.close()
    assert len(failures) == 1 and isinstance(failures[0], CassetteError)
    assert "deleted while recording" in str(failures[0])


async def test_record_stops_loudly_when_its_cassette_is_deleted(
    demo_upstream: str, recorder: RecorderFactory, tmp_path: Path
) -> None:
    """The real command: deleted under it, `record` says so and exits non-zero, instead of
    recording into a file nobody will see and exiting 0."""
    path = tmp_path / "c.sqlite"
    proxy = recorder("--upstream", demo_upstream, cassette=path)
    path.unlink()
    with contextlib.suppress(OSError, ValueError):  # it may stop while answering
        await probe(f"{proxy.url}/ticks?n=2&interval_ms=0")
    code = await asyncio.to_thread(proxy.popen.wait, 30)
    stderr = proxy.stderr()
    assert code != 0, stderr
    assert "the cassette was deleted while recording" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not path.exists()


# --------------------------------------------------------------------------------------------
# a reader holding the file while recording stops


async def test_finish_waits_for_a_reader_that_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle reader blocks leaving WAL mode; once it closes, the retry folds the file."""
    path = tmp_path / "c.sqlite"
    cassette = await Cassette.open_for_recording(path)
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM interactions").fetchone() == (0,)
    attempts: list[bool] = []
    real_fold = store_sqlite._fold

    async def reader_leaves_after_a_try(conn: object) -> bool:
        folded = await real_fold(conn)  # type: ignore[arg-type]
        attempts.append(folded)
        reader.close()
        return folded

    monkeypatch.setattr(store_sqlite, "_fold", reader_leaves_after_a_try)
    try:
        await _one_interaction(cassette)
        await cassette.finish_recording()
    finally:
        await cassette.close()
    assert attempts == [False, True]  # the first try met the reader, the retry folded
    assert path.read_bytes()[18:20] == b"\x01\x01"  # rollback journal: not WAL any more
    assert side_files(path) == []


async def _record_stranded(path: Path) -> None:
    cassette = await Cassette.open_for_recording(path)
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    reader.execute("SELECT 1 FROM interactions").fetchall()
    try:
        await _one_interaction(cassette, "http://h/stranded")
        started = time.monotonic()
        await cassette.finish_recording()
        assert time.monotonic() - started < 3 * store_sqlite.FOLD_PATIENCE  # a bounded stop
    finally:
        await cassette.close()
        reader.close()


@pytest.fixture
def stranded(tmp_path: Path) -> Path:
    """A cassette whose recorder stopped while a reader held it for good: left in WAL mode."""
    path = tmp_path / "c.sqlite"
    asyncio.run(_record_stranded(path))
    assert path.read_bytes()[18:20] == b"\x02\x02"  # still WAL: the reader never let go
    return path


async def test_stranded_wal_file_opens_where_no_shm_can_be_made(
    stranded: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    copy = alone / "c.sqlite"
    shutil.copyfile(stranded, copy)  # the .sqlite alone, as a user would copy it
    (alone / "c.sqlite-shm").mkdir()  # in the way of the -shm, whoever runs this
    (interaction,) = [i for i, _, _ in await read_everything(copy)]
    assert interaction.request.url == "http://h/stranded"


def test_stranded_wal_file_lists_from_a_read_only_location(
    stranded: Path, read_only_dir: tuple[Path, list[str]]
) -> None:
    where, prefix = read_only_dir
    where.chmod(0o755)
    shutil.copyfile(stranded, where / "c.sqlite")
    where.chmod(0o555)
    done = subprocess.run([*prefix, SSE_RECORDER, "ls", str(where / "c.sqlite")],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "http://h/stranded" in done.stdout
    assert sorted(p.name for p in where.iterdir()) == ["c.sqlite"]


# --------------------------------------------------------------------------------------------
# never a partial file


async def test_created_cassette_with_nothing_recorded_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "c.sqlite"
    cassette = await Cassette.open_for_recording(path)
    assert path.exists()
    try:
        cassette.allocate_id()  # an id handed out, nothing written
        await cassette.finish_recording()
    finally:
        await cassette.close()
    assert list(tmp_path.iterdir()) == []  # the directories made for it went too


async def test_created_cassette_removed_without_finish(tmp_path: Path) -> None:
    """The path after a failed start or a failed write: close alone cleans up."""
    path = tmp_path / "c.sqlite"
    await (await Cassette.open_for_recording(path)).close()
    assert list(tmp_path.iterdir()) == []


async def test_created_cassette_with_an_interaction_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "new" / "c.sqlite"
    cassette = await Cassette.open_for_recording(path)
    try:
        await _one_interaction(cassette)
        await cassette.finish_recording()
    finally:
        await cassette.close()
    assert [i.request.url for i, _, _ in await read_everything(path)] == ["http://h/"]


async def test_existing_cassette_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cassette = await Cassette.open_for_recording(path, keep_if_empty=True)
    try:
        await cassette.finish_recording()
    finally:
        await cassette.close()
    assert await read_everything(path) == []  # kept when asked for
    appending = await Cassette.open_for_recording(path)  # appends, records nothing
    try:
        await appending.finish_recording()
    finally:
        await appending.close()
    assert path.exists() and await read_everything(path) == []


async def test_existing_dirs_are_kept_when_the_cassette_goes(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "other.txt").write_text("x")
    await (await Cassette.open_for_recording(tmp_path / "mine" / "c.sqlite")).close()
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["other.txt"]


async def test_session_that_recorded_nothing_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    session = task_session(str(path))
    await session.start()
    assert path.exists()
    await session.close()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_record_failing_to_start_leaves_no_cassette(tmp_path: Path) -> None:
    """A port in use: whatever `record` says, the cassette it created is gone."""
    path = tmp_path / "c.sqlite"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("record", "--cassette", str(path), "--listen-port", str(port),
                   "--confdir", str(tmp_path / "mitm"))
    assert done.returncode != 0, done.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("c.sqlite")], done.stderr


async def test_recording_with_the_upstream_down_leaves_no_cassette(
    recorder: RecorderFactory, tmp_path: Path
) -> None:
    """Issue 10 item 10: a `once` run whose upstream was unreachable must not leave an
    empty cassette behind for the next `once` run to replay instead of recording."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        path = tmp_path / "c.sqlite"
        proxy = recorder("--upstream", f"http://127.0.0.1:{port}", cassette=path)
        assert path.exists()  # created at start, before any traffic
        with contextlib.suppress(OSError, ValueError):
            await probe(f"{proxy.url}/v1/chat/completions")
        proxy.stop()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("c.sqlite")]

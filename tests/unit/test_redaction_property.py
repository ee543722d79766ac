"""No secret reaches the cassette: a property over whole recordings.

Streams with secrets at random places (JSON fields of every credential shape, objects,
escaped JSON, values wrapped over `data:` lines, comments, ids, a secret given only by value,
its base64 form, an echo of the request's credentials, a gzip body), cut at random points
into chunks, and the chunks grouped into writer batches at random points (`flush` puts a
batch boundary exactly there). Afterwards the secret is in no table, and in no byte of the
file, its `-wal` or its `-shm` (checked while recording, when they exist), in clear, in
base64 or inside any gzip stream.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sqlite3
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.record.redact import RedactionRules, value_forms
from sse_recorder.record.session import RecorderConfig, RecordingSession
from sse_recorder.sse import Event, parse
from sse_recorder.store.cassette import Cassette
from tests.helpers import task_session

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

SSE = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),))
NAMES = ["token", "newToken", "access_token", "api_key", "apiKey", "client_secret",
         "password", "secret", "x-auth-token"]


@dataclass
class Case:
    secret: str  # by name (and learned from the request)
    by_value: str  # only known through --redact-value
    request: RecordedRequest
    stream: bytes
    json_body: bytes  # a gzip response body


def _place(draw: st.DrawFn, secret: str, value_secret: str) -> str:
    """One event's data with the secret somewhere in it."""
    name = draw(st.sampled_from(NAMES))
    shape = draw(st.sampled_from(["field", "object", "array", "escaped", "query", "value",
                                  "base64", "echo"]))
    pad = draw(st.text("abc ", max_size=5))
    if shape == "field":
        return json.dumps({"a": pad, name: secret, "z": 1}, indent=draw(st.sampled_from([None,
                                                                                       2])))
    if shape == "object":
        return json.dumps({name: {"inner": {"v": secret}}, "n": pad}, indent=2)
    if shape == "array":
        return json.dumps({name: [pad, secret]})
    if shape == "escaped":
        return json.dumps({"arguments": json.dumps({name: secret, "x": pad})})
    if shape == "query":
        sep = draw(st.sampled_from(["?", "&", ";"]))
        return json.dumps({"url": f"https://h/p?x=1{sep}api_key={secret}&y={pad}"})
    if shape == "value":
        return f"{pad}{value_secret}{pad}"
    if shape == "base64":
        prefix = draw(st.binary(max_size=4))
        return base64.b64encode(prefix + value_secret.encode() + b"tail").decode()
    return json.dumps({"echoed": f"Bearer {secret}"})  # learned from the request


@st.composite
def cases(draw: st.DrawFn) -> Case:
    secret = "SeKr" + draw(st.text("123456789ABCDEFGHJK", min_size=10, max_size=18))
    by_value = "VaLu" + draw(st.text("123456789ABCDEFGHJK", min_size=10, max_size=18))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        data = _place(draw, secret, by_value)
        if draw(st.booleans()):  # wrap a line in the middle of the secret
            for needle in (secret, by_value):
                at = data.find(needle)
                if at >= 0:
                    cut = at + draw(st.integers(1, len(needle) - 1))
                    data = data[:cut] + "\n" + data[cut:]
                    break
        block = [f"data: {part}" for part in data.split("\n")]
        if draw(st.booleans()):
            block.insert(0, f": note {by_value}")
        if draw(st.booleans()):
            block.insert(0, f"id: {by_value}")
        lines += [*block, ""]
        if draw(st.booleans()):
            lines += [": ping", ""]
    stream = (newline.join(lines) + newline).encode()
    request = RecordedRequest(
        "POST", f"https://api.example.com/v1/stream;token={secret}?api_key={secret}&m=1",
        (("Authorization", f"Bearer {secret}"), ("X-Custom-Auth", secret),
         ("Referer", f"https://app/?api_key={secret}"), ("Content-Type", "application/json")),
        json.dumps({"password": {"v": secret}, "token": secret, "text": "hello"}).encode(),
    )
    body = json.dumps({"access_token": secret, "echo": by_value, "n": 1}).encode()
    return Case(secret, by_value, request, stream, body)


def _forms(secret: str) -> list[bytes]:
    """The secret in clear and in base64 (every alignment, both alphabets)."""
    return sorted(value_forms(secret) | {secret.encode()}, key=len)


def _gzip_members(blob: bytes) -> list[bytes]:
    """What every gzip stream starting anywhere in `blob` decodes to (as far as it goes)."""
    out = []
    start = blob.find(b"\x1f\x8b")
    while start >= 0:
        decoder = zlib.decompressobj(31)
        try:
            out.append(decoder.decompress(blob[start:], 1 << 20))
        except zlib.error:
            pass
        start = blob.find(b"\x1f\x8b", start + 1)
    return out


def _assert_absent(blob: bytes, case: Case, where: str) -> None:
    for secret in (case.secret, case.by_value):
        for form in [*_forms(secret), secret[4:12].encode()]:
            assert form not in blob, f"{form!r} in {where}"
        for member in _gzip_members(blob):
            assert secret[4:12].encode() not in member, f"gzip in {where}"


def _tables(path: Path) -> bytes:
    """Every value of every table, as bytes."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = bytearray()
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 - our own names
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
                    out += b"\0"
        return bytes(out)
    finally:
        con.close()


async def _record(case: Case, path: Path, cuts: list[int], batch_after: set[int]) -> None:
    rules = RedactionRules.with_extra(values=[case.by_value])
    session = task_session(str(path), RecorderConfig(redaction=rules))
    await session.start()
    try:
        await _feed(session, case, path, cuts, batch_after)
    finally:
        await session.close()


async def _feed(session: RecordingSession, case: Case, path: Path, cuts: list[int],
                batch_after: set[int]) -> None:
    iid = session.begin(case.request, 1.0)
    session.head(iid, SSE, 1)
    bounds = [0, *sorted(cuts), len(case.stream)]
    chunks = [case.stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    for n, chunk in enumerate(chunks):
        session.chunk(iid, n + 10, chunk)
        if n in batch_after:
            await session.flush()  # the next chunk goes into a later writer batch
    session.end(iid, Outcome.CLEAN, 1000)
    zipped = session.begin(RecordedRequest("GET", "https://api.example.com/token", ()), 2.0)
    session.head(zipped, ResponseHead(200, "OK", (("Content-Type", "application/json"),
                                                  ("Content-Encoding", "gzip"))), 1)
    session.chunk(zipped, 5, gzip.compress(case.json_body))
    session.end(zipped, Outcome.CLEAN, 6)
    await session.flush()
    for suffix in ("-wal", "-shm"):  # they exist while recording
        side = path.with_name(path.name + suffix)
        assert side.exists()
        _assert_absent(side.read_bytes(), case, suffix)
    _assert_absent(_tables(path), case, "tables (while recording)")


@SETTINGS
@given(case=cases(), data=st.data())
def test_no_secret_reaches_the_cassette(case: Case, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(case.stream)), max_size=12), label="cuts")
    batch_after = set(data.draw(st.lists(st.integers(0, len(cuts)), max_size=6),
                                label="batch boundaries after chunk"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.cassette"
        asyncio.run(_record(case, path, cuts, batch_after))
        _assert_absent(path.read_bytes(), case, "the file")
        _assert_absent(_tables(path), case, "tables")
        # the recording is still whole: every event stored, as many as were sent, counted
        # by the writer and derived again by a reader
        counted, derived = asyncio.run(_event_counts(path))
        sent = sum(isinstance(item, Event) for item in parse(case.stream))
        assert counted == derived == sent


async def _event_counts(path: Path) -> tuple[int, int]:
    async with await Cassette.open(path) as cassette:
        interaction = (await cassette.interactions())[0]  # the event stream
        events = await cassette.events(interaction.id)
        return interaction.event_count, sum(e.kind == "event" for e in events)

"""The replay server: serves a cassette back over HTTP/1.1 with the recorded timing.

Rules:
- requests are read by the one reader (`wire/requests.py`: llhttp's and RFC 9112's
  rejections, head and body timeouts, a server-wide cap on buffered request bytes);
  responses are written by hand, so the wire shows exactly what was recorded
  (`replay/play.py`, `wire/responses.py`);
- each request is matched, answered (unmatched: 404/409 with an explanation, in the
  vendor's error shape for a vendor call, see `vendors.py`; a fault may answer instead; else
  the recording, maybe faulted) and reported as one `Served` record;
- a request's body is dropped once it is matched: a long stream never holds it;
- a connection carries the next request only after a clean, framed response when the
  client lets it persist (HTTP/1.1 without `Connection: close`, HTTP/1.0 with
  `keep-alive`); every response to a client that will not get another says
  `Connection: close`; an HTTP/1.0 client never gets a chunked body (it is sent
  close-delimited);
- a malformed request gets a 4xx and the close; anything that goes wrong while answering
  (a damaged cassette, a bug) is a 500 with a one-line explanation, or, once the head is
  out, the response cut short; either way one `Served` record says why, and the server goes
  on serving. No traceback ever reaches the log;
- `served` keeps the last `ReplayOptions.served_kept` records (a ring: memory stays flat in
  a long-running server), `counts` every answer by kind;
- faults are drawn per response number, so the same requests in the same order meet the
  same faults;
- CORS (`cors.py`, off unless `--cors`) answers preflights before matching and sets the
  Access-Control fields of every answer; a page that could not read an answer gets a note
  in its record naming the `--cors` that would let it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import logging
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sse_recorder.errors import ConfigError, SSERecorderError
from sse_recorder.faults import NO_FAULTS, FaultPlan, FaultRun
from sse_recorder.model import Headers, Interaction, Outcome, header_value
from sse_recorder.replay import vendors
from sse_recorder.replay.cors import Cors, Preflight
from sse_recorder.replay.matching import (
    SCHEME_FIELD,
    IncomingRequest,
    MatchConfig,
    Matcher,
    Miss,
    host_of,
    split_url,
)
from sse_recorder.replay.play import WRITE_BUFFER_HIGH, Interrupted, Load, Player, writer_for
from sse_recorder.replay.records import Answer, Served
from sse_recorder.replay.schedule import Timing
from sse_recorder.replay.sources import Bodies
from sse_recorder.routes import host_and_path
from sse_recorder.store.cassette import Cassette
from sse_recorder.wire import responses
from sse_recorder.wire.connections import (
    base_url,
    close_after_error,
    keeps_alive,
    reset,
    stop_serving,
)
from sse_recorder.wire.endings import until_closed
from sse_recorder.wire.listening import BACKLOG, listen
from sse_recorder.wire.requests import (
    MAX_BUFFERED,
    BadRequest,
    Budget,
    Limits,
    Request,
    RequestReader,
)
from sse_recorder.wire.responses import BodyWriter

__all__ = ["LOOPS", "SERVED_KEPT", "ReplayOptions", "ReplayServer", "loop_factory"]

log = logging.getLogger("sse_recorder.replay")

# `served` keeps this many records: far more than one test makes (the pytest plugin reads
# them per test), a few MB at most however long the server runs.
SERVED_KEPT = 10_000
UNMATCHED: dict[bool, int] = {False: 404, True: 409}  # by Miss.exhausted


@dataclass(frozen=True)
class ReplayOptions:
    timing: Timing = field(default_factory=Timing)
    match: MatchConfig = field(default_factory=MatchConfig)
    faults: FaultPlan = field(default_factory=FaultPlan)
    fault_log: Path | None = None  # JSON lines: one per response, with the faults that fired
    limits: Limits = field(default_factory=Limits)  # request timeouts and body cap
    max_buffered: int = MAX_BUFFERED  # request body bytes being received, all connections
    linger: float = 2.0  # after an error answer: seconds to read what the client still sends
    served_kept: int = SERVED_KEPT  # records `ReplayServer.served` keeps
    cors: Cors = field(default_factory=Cors)  # off: which pages may read (replay/cors.py)
    worker: int | None = None  # `--workers`: this process's number (1..N), in its records


class ReplayServer:
    """Serve one cassette. `await start()`, then clients use `base_url`; `await close()`."""

    def __init__(
        self,
        cassette: Cassette,
        interactions: list[Interaction],
        options: ReplayOptions | None = None,
        on_served: Callable[[Served], None] | None = None,
    ) -> None:
        self.cassette = cassette
        self.options = options or ReplayOptions()
        self.matcher = Matcher(interactions, self.options.match)
        self.on_served = on_served
        self.served: collections.deque[Served] = collections.deque(
            maxlen=self.options.served_kept)
        self.counts: collections.Counter[Answer] = collections.Counter()  # every answer
        self.load = Load()
        self.player = Player(Bodies(cassette), self.options.timing, self.load)
        self.budget = Budget(self.options.max_buffered)
        self._servers: list[asyncio.Server] = []  # one per listening socket
        self._tasks: set[asyncio.Task[None]] = set()
        self._responses = 0  # numbers responses for fault seeding: same order, same faults
        self.faults = self.options.faults  # in play now: the control API replaces the plan
        self._fault_log: IO[bytes] | None = None
        # the body writer of a recording for a client's HTTP version: its framing read once
        self._writers: dict[tuple[int, str], BodyWriter] = {}

    @classmethod
    async def open(
        cls,
        path: str,
        options: ReplayOptions | None = None,
        on_served: Callable[[Served], None] | None = None,
    ) -> ReplayServer:
        cassette = await Cassette.open(path)
        try:
            interactions = await cassette.interactions()
        except BaseException:
            await cassette.close()
            raise
        return cls(cassette, interactions, options, on_served)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0,
        sockets: Sequence[socket.socket] = (),
    ) -> ReplayServer:
        """Listen on `host:port` (every address it names, on one port: `wire.listening`), or
        serve `sockets`, listening already (a worker's: one per address)."""
        if self.options.fault_log is not None and self._fault_log is None:
            # unbuffered append: a line is one write(2), whole even when workers share the file
            self._fault_log = open(self.options.fault_log, "ab", buffering=0)  # noqa: SIM115
        owned = not sockets
        if owned:
            sockets = listen(host, port, 1).sockets
        try:
            for sock in sockets:
                self._servers.append(await asyncio.start_server(self._connection, sock=sock,
                                                                backlog=BACKLOG))
        except BaseException:
            for sock in sockets if owned else ():
                sock.close()
            raise
        return self

    @property
    def listening(self) -> bool:
        return bool(self._servers)

    @property
    def port(self) -> int:
        assert self._servers
        return int(self._servers[0].sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        assert self._servers
        return str(self._servers[0].sockets[0].getsockname()[0])

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def active_streams(self) -> int:
        """Responses being answered right now."""
        return self.load.streams

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        await stop_serving(servers, self._tasks)
        if self._fault_log is not None:
            self._fault_log.close()
            self._fault_log = None
        await self.cassette.close()

    async def __aenter__(self) -> ReplayServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections -----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # TCP_NODELAY is on already: asyncio and uvloop set it on every TCP transport
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        requests = RequestReader()
        try:
            while True:
                try:
                    request = await requests.read(reader, self.options.limits, self.budget,
                                                  writer)
                except BadRequest as exc:
                    writer.write(responses.bad_request(exc.status, str(exc)))
                    self._record(Served(exc.method or "?", exc.target or "?", None,
                                        exc.status, Outcome.CLEAN,
                                        Answer.BAD_REQUEST, str(exc), time=time.time(),
                                        worker=self.options.worker))
                    await close_after_error(reader, writer, self.options.linger)
                    break
                if request is None:
                    break
                incoming = _incoming(request)
                persist = keeps_alive(request.http_version, request.headers)
                version = request.http_version
                del request
                found = self._match(incoming)
                if incoming.body:  # not needed once matched: a long stream never holds it
                    incoming = dataclasses.replace(incoming, body=b"")
                served, keep_alive = await self._guarded(incoming, found, persist, version,
                                                         reader, writer)
                self._served(served)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # the last resort: one record, no traceback
            self._record(Served("?", "?", None, 0, Outcome.CLOSED, Answer.ERROR,
                                _internal("serving a connection", exc), time=time.time(),
                                worker=self.options.worker))
        finally:
            requests.close()
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    def _record(self, served: Served) -> None:
        self.served.append(served)
        self.counts[served.answer] += 1
        if self.on_served is not None:
            self.on_served(served)

    def _served(self, served: Served) -> None:
        served = served.ended_at(time.time(), self.options.worker)
        self._record(served)
        if self._fault_log is not None:
            try:
                self._fault_log.write((served.json_line() + "\n").encode())
            except OSError as exc:  # a full disk: the replay goes on without its fault log
                log.warning("fault log stopped: %s", exc)
                self._fault_log = None

    # -- dispatch --------------------------------------------------------------------------

    def _match(self, request: IncomingRequest) -> Interaction | Miss | Preflight | Exception:
        """The recording for `request`, or why none matches, or (CORS on) the answer to a
        preflight, never matched; what matching raised is returned, for `_guarded`."""
        try:
            preflight = self.options.cors.preflight(request.method, request.headers)
            if preflight is not None:
                return preflight
            return self.matcher.match(request)
        except Exception as exc:  # answered by the guard
            return exc

    async def _guarded(
        self, request: IncomingRequest, found: Interaction | Miss | Preflight | Exception,
        persist: bool,
        version: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> tuple[Served, bool]:
        """Answer one request whatever happens: what goes wrong becomes a 500 with a
        one-line explanation (or, once the head is out, a response cut short) and a record.
        Returns the record and whether the connection can carry another request."""
        number = self._responses
        self._responses += 1
        try:
            if isinstance(found, Exception):
                raise found
            return await self._respond(request, found, persist, version, number, reader,
                                       writer)
        except Interrupted as exc:  # the head went out: all that is left is to cut it short
            writer.close()
            why = _why(request, exc.cause)
            return Served(request.method, request.target, exc.interaction, exc.status,
                          Outcome.CLOSED, Answer.ERROR, why, number), False
        except ConnectionError:
            raise
        except Exception as exc:  # the guard: a 500, never a lost request
            why = _why(request, exc)
            headers, body = vendors.explanation(500, why, split_url(request.target)[2],
                                                request.headers, ())
            writer.write(responses.whole(500, "Internal Server Error",
                                         self.options.cors.response_headers(request.headers,
                                                                            headers), body,
                                         "Connection: close", request.method == "HEAD"))
            await close_after_error(reader, writer, self.options.linger)
            return Served(request.method, request.target, None, 500, Outcome.CLEAN,
                          Answer.ERROR, why, number), False

    async def _respond(
        self, request: IncomingRequest, found: Interaction | Miss | Preflight, persist: bool,
        version: str,
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> tuple[Served, bool]:
        """Answer one matched (or unmatched) request; the record, and whether the
        connection can carry another request."""
        path = split_url(request.target)[2]
        cors = self.options.cors
        if isinstance(found, Preflight):  # CORS on: answered by the policy, never matched
            writer.write(responses.whole(found.status, responses.reason_of(found.status),
                                         found.headers, found.body,
                                         responses.connection_field(persist, version)))
            await writer.drain()
            return Served(request.method, request.target, None, found.status, Outcome.CLEAN,
                          Answer.RECORDED if found.status < 300 else Answer.UNMATCHED,
                          found.explanation, number), persist
        note = cors.note(request.method, request.headers, found.response.headers
                         if isinstance(found, Interaction) and found.response else ())
        if isinstance(found, Miss):
            explanation = found.explain(request) + (f"  {note}\n" if note else "")
            status = UNMATCHED[found.exhausted]
            headers, body = vendors.explanation(status, explanation, path, request.headers,
                                                (("X-SSE-Recorder", "unmatched"),))
            writer.write(responses.whole(status, responses.reason_of(status),
                                         cors.response_headers(request.headers, headers), body,
                                         responses.connection_field(persist, version),
                                         request.method == "HEAD"))
            await writer.drain()
            return Served(request.method, request.target, None, status, Outcome.CLEAN,
                          Answer.UNMATCHED, explanation, number), persist
        last_event_id = _last_event_id(request)
        body_writer = self._writers.get((found.id, version))
        if body_writer is None:
            body_writer = self._writers[found.id, version] = writer_for(found, version)
        run = NO_FAULTS if not self.faults.faults else self.faults.for_connection(
            number, request.method, host_and_path(found.request.url)[0], path,  # routes name
            last_event_id is not None, _closing_end(found, body_writer))  # the recorded host
        if cors.enabled and found.response is not None:  # the recorded CORS fields replaced
            found = dataclasses.replace(found, response=dataclasses.replace(
                found.response,
                headers=cors.response_headers(request.headers, found.response.headers)))
        self.load.streams += 1
        try:
            status, answer, outcome, keep_alive = await self._answer(
                found, body_writer, last_event_id, persist, version, reader, writer, run,
                request.headers)
        finally:
            self.load.streams -= 1
        return Served(request.method, request.target, found.id, status, outcome, answer, note,
                      number=number, faults=tuple(run.log)), keep_alive

    async def _answer(
        self, interaction: Interaction, body_writer: BodyWriter, last_event_id: str | None,
        persist: bool, version: str, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, run: FaultRun, request_headers: Headers = (),
    ) -> tuple[int, Answer, Outcome, bool]:
        """Faults that replace the response, else the recorded response (maybe faulted)."""
        assert interaction.response is not None
        if run.chosen:
            persist = persist and not run.closes_late()  # slow_close: the connection ends
            instead = await self._instead(interaction, persist, version, reader, writer, run,
                                          request_headers)
            if instead is not None:
                return instead
        outcome = await self.player.play(interaction, body_writer, last_event_id, reader,
                                         writer, run, persist, version)
        if outcome is Outcome.CLEAN and not body_writer.closes and run.chosen:
            await _close_late(run)
        keep_alive = persist and outcome is Outcome.CLEAN and not body_writer.closes
        return interaction.response.status, Answer.RECORDED, outcome, keep_alive

    async def _instead(
        self, interaction: Interaction, persist: bool, version: str,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: FaultRun,
        request_headers: Headers,
    ) -> tuple[int, Answer, Outcome, bool] | None:
        """A fault that answers instead of the recording (a reset, no head, an HTTP
        error), or None: the recording is played."""
        if run.refuse():
            reset(writer)
            return 0, Answer.FAULT, Outcome.RESET, False
        if run.no_head():
            await until_closed(reader)
            return 0, Answer.FAULT, Outcome.STALLED, False
        error = run.http_error()
        if error is None:
            return None
        headers = self.options.cors.response_headers(request_headers, error.headers)
        writer.write(responses.whole(error.status, error.reason, headers, error.body,
                                     responses.connection_field(persist, version),
                                     interaction.request.method == "HEAD"))
        await writer.drain()
        await _close_late(run)
        return error.status, Answer.FAULT, Outcome.CLEAN, persist


async def _close_late(run: FaultRun) -> None:
    """slow_close after a response its framing ended: the connection stays open and silent
    for the delay, then closes (a close the body makes itself is delayed by the faults)."""
    delay = run.late_close()
    if delay is not None:
        await asyncio.sleep(delay)


def _incoming(request: Request) -> IncomingRequest:
    """What matching compares: the scheme a proxy rerouted from (SCHEME_FIELD, taken off
    the headers), else unknown."""
    headers = request.headers
    scheme = header_value(headers, SCHEME_FIELD)
    if scheme is not None:
        field_name = SCHEME_FIELD.lower()
        headers = tuple((n, v) for n, v in headers if n.lower() != field_name)
    return IncomingRequest(request.method, request.target, headers, request.body,
                           scheme=(scheme or "").strip().lower(),
                           host=host_of(header_value(headers, "host") or ""))


def _closing_end(interaction: Interaction, body_writer: BodyWriter) -> Outcome | None:
    """The close that ends the recorded body on this connection, which slow_close delays:
    a recorded FIN or RST, or a close-delimited body's close; None when framing ends it."""
    if interaction.outcome is not Outcome.CLEAN:
        return interaction.outcome.as_replayed
    return Outcome.CLOSED if body_writer.closes else None


def _last_event_id(request: IncomingRequest) -> str | None:
    """The Last-Event-ID the client sent, read as UTF-8 (what browsers send; header bytes
    arrive as latin-1), else as it came."""
    value = header_value(request.headers, "last-event-id")
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _why(request: IncomingRequest, exc: BaseException) -> str:
    """One line saying why `request` could not be answered."""
    if isinstance(exc, SSERecorderError):  # a damaged cassette: its own one-line message
        return f"sse-recorder: cannot answer {request.method} {request.target}: {exc}"
    return _internal(f"answering {request.method} {request.target}", exc)


def _internal(doing: str, exc: BaseException) -> str:
    """A bug, in one line: the exception and where it was raised, not a traceback dump."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    message = " ".join(str(exc).split())[:200]
    return f"sse-recorder: internal error {doing}: {type(exc).__name__}{where}: {message}"


FULL_COLLECTION_EVERY = 1000  # young collections between full ones (CPython's default: 10)


def settle_for_serving() -> None:
    """Keep the garbage collector's full passes out of the streams' schedule.

    A full pass walks every live object: with 5,000 open streams it stalls every one of them
    for about 100 ms, which measured as the largest part of p99 lateness under load. What
    was loaded to start (modules, the cassette's index) is frozen out of every pass, and full
    passes come 100 times less often; the young generations, which collect what a stream
    leaves behind, run as before. Only for a process that does nothing but serve."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str = "asyncio") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to replay on, for `asyncio.Runner(loop_factory=...)`.

    uvloop is optional (not a dependency): it is imported only when asked for. None means
    asyncio's own loop."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("the uvloop event loop needs uvloop: pip install uvloop") from None
        return uvloop.new_event_loop
    raise ConfigError(f"unknown event loop {name!r}: choose one of {', '.join(LOOPS)}")

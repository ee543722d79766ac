"""Reading HTTP/1.1 requests off a connection: the one reader of the replay server and its
control API (the demo upstreams stand in for ordinary servers and read with h11, which
also writes their responses: `demo/http11.py`).

Requests are parsed by llhttp (Node's parser, through httptools): strict by default (no
bare LF, no obsolete line folding, no Content-Length beside Transfer-Encoding, RFC 9112's
chunk sizes only), and about ten times cheaper per request than h11, which this reader
used until replay workers made the cost of a request count.

Rules:
- a request comes back whole (head and body) or not at all;
- the client closing an idle connection (nothing of a next request received), or staying
  silent past `Limits.idle`, is a clean end: None, not an error;
- anything llhttp rejects, and what RFC 9112 says to reject beyond it (an HTTP/1.1 request
  without exactly one Host, §3.2; a transfer coding other than chunked, §6.1, a 501; a head
  over MAX_HEAD, a 431; a method llhttp does not know, a 501 when it is a token), raises
  `BadRequest` with the status to answer; the caller answers it and closes the connection;
- time is bounded: the head must arrive whole within `Limits.head` of its first byte, and
  a body may not stall longer than `Limits.body_idle` between reads;
- memory is bounded: a body over `Limits.max_body` is a 413 (before it is read, when its
  Content-Length says so), and every reader of a server shares one `Budget` of body bytes
  being received, a 503 for the request that would go over it (a declared length is
  reserved whole when the head arrives, so concurrent uploads are refused before they are
  read); a request gives its share back once complete, a connection when it ends (`close`);
- `Expect: 100-continue` is answered with `100 Continue` before the body is read;
- pipelined requests: what one read brings past a request is parsed with it and served
  next, in order (llhttp parses all it is given);
- bytes over 0x7F in a request line (curl's raw UTF-8 query) are percent-encoded before
  llhttp sees them, which refuses them otherwise.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import httptools

from sse_recorder.model import Headers
from sse_recorder.wire.connections import call_at_monotonic

MAX_REQUEST_BODY = 64 << 20
# All request bodies being received at once: one of MAX_REQUEST_BODY fits, two do not.
MAX_BUFFERED = 96 << 20
MAX_HEAD = 64 * 1024  # a request head over this many bytes is a 431
_HEAD_TOO_LARGE = f"request head over {MAX_HEAD} bytes"
READ_SIZE = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A request line whose method is a token (RFC 9110 §5.6.2) that llhttp does not know
_UNKNOWN_METHOD = re.compile(rb"(?:\r\n)*([!#$%&'*+\-.^_`|~0-9A-Za-z]+) [^ \r\n]+ HTTP/\d\.\d\r\n")
_OWS = b" \t"
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
_BUSY = "too many request body bytes buffered by this server right now; retry later"


@dataclass(frozen=True, slots=True)
class Limits:
    """How long and how much one request may take. Seconds; None: no limit."""

    head: float | None = 10.0  # the whole head, from its first byte
    body_idle: float | None = 30.0  # longest silence while a body is being received
    idle: float | None = 75.0  # a kept-alive connection waiting for its next request
    max_body: int = MAX_REQUEST_BODY


@dataclass(frozen=True, slots=True)
class Request:
    """A request as received: header names lower-case, bytes decoded as latin-1."""

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"


class BadRequest(Exception):
    """The client sent something that is not an acceptable HTTP/1.1 request."""

    def __init__(self, message: str, status: int = 400, method: str = "") -> None:
        super().__init__(message)
        self.status = status  # the status to answer with
        # what the request line said, as far as it was read (for the record; "" unknown)
        self.method = method
        self.target = ""


class Budget:
    """Request body bytes buffered by every reader of one server, capped as a whole: the
    per-request cap alone lets N concurrent uploads take N times as much."""

    def __init__(self, limit: int = MAX_BUFFERED) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Message:
    """One request as llhttp's callbacks bring it."""

    __slots__ = ("body", "declared", "expects_continue", "fields", "head_bytes",
                 "head_done", "head_due", "held", "method", "size", "target", "version")

    def __init__(self, head_due: float | None) -> None:
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.method = self.version = ""
        self.head_done = self.expects_continue = False
        self.head_bytes = self.size = self.held = self.declared = 0
        self.head_due = head_due  # time.monotonic() deadline for the whole head

    def request(self) -> Request:
        return Request(self.method, self.target.decode("latin-1"),
                       tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.fields),
                       b"".join(self.body), self.version)


class RequestReader:
    """The requests of one connection, one `read` at a time. `close` when the connection
    ends: a request cut short gives back its share of the budget."""

    __slots__ = ("_armed", "_budget", "_due", "_eof", "_expired", "_failed", "_fresh", "_limits",
                 "_parser", "_parsing", "_ready", "_timer", "_waiting")

    def __init__(self) -> None:
        # made for a request's first bytes, dropped between requests: a parser weighs about
        # 1 KiB (it holds this reader's callbacks), and an open stream keeps its reader
        self._parser: httptools.HttpRequestParser | None = None
        self._fresh = True  # no request ended yet in the bytes being parsed
        self._parsing: _Message | None = None  # begun, not complete
        self._ready: list[_Message] = []  # complete, unread (a list: lighter than a deque)
        self._eof = False
        self._failed: BadRequest | None = None  # raised once the requests before it are read
        self._limits = Limits()
        self._budget: Budget | None = None
        # The read deadline: one timer per connection, armed by a read and moved only when
        # it fires early (a read sets `_due`, a float): a timer per read cost about 6 us a
        # request, a tenth of a request's CPU.
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # time.monotonic() deadline of the read under way
        self._armed = 0.0  # the deadline the timer is set for (it may be earlier than _due)
        self._waiting: asyncio.Task[object] | None = None  # the task reading, until it returns
        self._expired = False  # the timer cancelled `_waiting`

    async def read(
        self,
        reader: asyncio.StreamReader,
        limits: Limits = Limits(),
        budget: Budget | None = None,
        writer: asyncio.StreamWriter | None = None,
    ) -> Request | None:
        """The next request with its whole body, or None once the client has closed (or left
        an idle connection silent past `limits.idle`). With `writer`, a client waiting for
        `100 Continue` gets it."""
        self._limits, self._budget = limits, budget
        started = self._parsing
        if started is not None and not started.head_done and limits.head:
            # a pipelined head begun during the last request: its time runs from now
            started.head_due = time.monotonic() + limits.head
        try:
            return await self._next(reader, limits, writer)
        except BadRequest as exc:
            message = self._parsing
            if message is not None:  # what its request line said, for the record
                exc.method = exc.method or message.method
                exc.target = exc.target or message.target.decode("latin-1")
            self._give_back()
            raise
        except BaseException:  # the connection ends: what the request took is given back
            self._give_back()
            raise

    async def _next(self, reader: asyncio.StreamReader, limits: Limits,
                    writer: asyncio.StreamWriter | None) -> Request | None:
        while not self._ready:
            if self._failed is not None:
                raise self._failed
            if self._eof:
                if self._parsing is not None:
                    raise BadRequest("the client closed the connection in the middle of a "
                                     "request")
                return None
            message = self._parsing
            if message is not None and message.expects_continue and writer is not None:
                message.expects_continue = False  # once, before the body's first read
                writer.write(CONTINUE)
            data = await self._read(reader, message, limits)
            if data is None:
                return None  # idle past the limit: a clean end, like a close
            if not data:
                self._eof = True
                continue
            try:
                self._feed(data)
            except BadRequest as exc:
                if not self._ready:
                    raise
                self._failed = exc  # the requests that came before it are answered first
        if self._parsing is None and self._failed is None:
            self._parser = None  # between requests: the next bytes get a new one
        return self._ready.pop(0).request()

    def close(self) -> None:
        """Give back what a request cut short holds of the budget; stop the read timer."""
        self._give_back()
        self._parser = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _read(self, reader: asyncio.StreamReader, message: _Message | None,
                    limits: Limits) -> bytes | None:
        """The next bytes, within the time the request's stage allows; None: idle too long."""
        if message is None:
            deadline, why = _after(limits.idle), ""
        elif message.head_done:
            deadline = _after(limits.body_idle)
            why = f"no request body bytes for {limits.body_idle} s"
        else:
            deadline, why = message.head_due, f"request head not complete within {limits.head} s"
        if deadline is None:
            return await reader.read(READ_SIZE)
        task = asyncio.current_task()
        assert task is not None
        self._due = deadline
        if self._timer is None or deadline < self._armed:  # moved earlier: a head's limit
            self._arm(deadline)
        cancelling = task.cancelling()
        self._waiting = task
        try:
            return await reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if not self._expired or task.uncancel() > cancelling:
                raise  # cancelled by someone else too: that one wins
            if not why:
                return None
            raise BadRequest(why, 408) from None
        finally:
            self._waiting = None
            self._expired = False

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = call_at_monotonic(deadline, self._ring)
        self._armed = deadline

    def _ring(self) -> None:
        """The read timer: cancel a read past its deadline; early (a read moved it), armed
        again; no read under way, left unarmed until the next one."""
        self._timer = None
        task = self._waiting
        if task is None:
            return
        if time.monotonic() < self._due:
            self._arm(self._due)
            return
        self._expired = True
        task.cancel()

    def _give_back(self) -> None:
        if self._parsing is not None and self._budget is not None:
            self._budget.give(self._parsing.held)
            self._parsing.held = 0

    def _feed(self, data: bytes) -> None:
        if self._parser is None:
            self._parser = httptools.HttpRequestParser(self)
        if self._parsing is None:
            data = _percent_encoded_line(data)
        self._fresh = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # served as a plain request; what
            rest = data[upgrade.args[0]:]  # follows is read as the next one
            self._parser = httptools.HttpRequestParser(self)
            if rest:
                self._feed(rest)
            return
        except httptools.HttpParserCallbackError as exc:  # one of ours, raised in a callback
            if isinstance(exc.__context__, BadRequest):
                raise exc.__context__ from None
            raise
        except httptools.HttpParserInvalidMethodError as exc:
            # the request line is at the start of these bytes when its request began there
            began_here = (self._fresh and self._parsing is not None
                          and not self._parsing.head_bytes)
            line = _UNKNOWN_METHOD.match(data) if began_here else None
            if line is not None:  # RFC 9110 §9.1: a method the server does not know
                raise BadRequest(f"method {line[1].decode()} is not supported", 501,
                                 line[1].decode()) from None
            raise BadRequest(str(exc)) from None
        except httptools.HttpParserError as exc:
            raise BadRequest(str(exc)) from None
        message = self._parsing
        if message is not None and not message.head_done:
            message.head_bytes += len(data)
            if message.head_bytes > MAX_HEAD:
                raise BadRequest(_HEAD_TOO_LARGE, 431)

    # -- llhttp's callbacks (httptools calls them by name) ---------------------------------

    def on_message_begin(self) -> None:
        head = self._limits.head
        self._parsing = _Message(time.monotonic() + head if head else None)

    def on_url(self, url: bytes) -> None:
        assert self._parsing is not None
        self._parsing.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._parsing
        assert message is not None
        if not message.head_done:  # after the head: a chunked body's trailer, not kept
            message.fields.append((name.lower(), value.rstrip(_OWS)))

    def on_headers_complete(self) -> None:
        message = self._parsing
        assert message is not None
        message.head_done = True
        assert self._parser is not None
        message.method = self._parser.get_method().decode("ascii")
        message.version = self._parser.get_http_version()
        _check_head(message, self._limits)
        if self._budget is not None and message.declared:  # reserved whole, before it comes
            if not self._budget.take(message.declared):
                raise BadRequest(_BUSY, 503)
            message.held = message.declared

    def on_body(self, data: bytes) -> None:
        message = self._parsing
        assert message is not None
        message.size += len(data)
        message.expects_continue = False  # the client did not wait for it
        if message.size > self._limits.max_body:
            raise BadRequest(f"request body over {self._limits.max_body} bytes", 413)
        if self._budget is not None and message.size > message.held:  # chunked: as it comes
            if not self._budget.take(message.size - message.held):
                raise BadRequest(_BUSY, 503)
            message.held = message.size
        message.body.append(data)

    def on_message_complete(self) -> None:
        message = self._parsing
        assert message is not None
        if self._budget is not None:
            self._budget.give(message.held)
            message.held = 0
        self._ready.append(message)
        self._parsing = None
        self._fresh = False


def _after(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def _percent_encoded_line(data: bytes) -> bytes:
    """`data` with the bytes over 0x7F of the request line it starts with percent-encoded.

    curl sends a query as typed (`?q=한국어`, raw UTF-8; it encodes only the path), mitmproxy
    records it, and llhttp refuses it: encoded, it is the same query to the matcher, which
    decodes both. Only a request line that arrives whole at the start of a read is looked
    at: one split across reads, or pipelined behind another request, is parsed as sent."""
    end = data.find(b"\n")
    if end < 0 or data.isascii() or data[:end].isascii():
        return data
    return _HIGH_BYTE.sub(lambda byte: b"%%%02X" % byte[0][0], data[:end]) + data[end:]


def _check_head(message: _Message, limits: Limits) -> None:
    """What RFC 9112 says to reject that llhttp accepts, and a body declared too large;
    notes the declared Content-Length and whether the client waits for 100 Continue."""
    # A head that completed within one read was never counted as it came (`_feed`): its
    # size, as its parts give it (optional whitespace aside), is held to the same limit.
    size = (len(message.method) + len(message.target) + len(b"  HTTP/1.1\r\n\r\n")
            + sum(len(name) + len(value) + len(b": \r\n") for name, value in message.fields))
    if size > MAX_HEAD:
        raise BadRequest(_HEAD_TOO_LARGE, 431)
    if message.version not in ("1.0", "1.1"):  # llhttp reads any HTTP/x.y
        raise BadRequest(f"HTTP/{message.version} is not supported: this server speaks "
                         "HTTP/1.1 (and 1.0)", 505)
    hosts = 0
    for name, value in message.fields:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding" and value.lower() != b"chunked":
            raise BadRequest("Only Transfer-Encoding: chunked is supported", 501)
        elif name == b"content-length":
            message.declared = int(value)  # llhttp checked it: digits, one value
        elif name == b"expect" and value.lower() == b"100-continue":
            message.expects_continue = message.version == "1.1"
    if hosts > 1 or (hosts == 0 and message.version == "1.1"):
        raise BadRequest("an HTTP/1.1 request needs exactly one Host field (RFC 9112 §3.2)")
    if message.declared > limits.max_body:
        raise BadRequest(f"request body over {limits.max_body} bytes", 413)

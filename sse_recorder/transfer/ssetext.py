"""The `.sse` text format: a cassette a person writes and reviews (cassettes/SSE-FORMAT.md).

An interaction is written as it went over the wire: the request line and headers, the
response head, then the stream's lines exactly as sent, with `@` directives between them
for time (`@wait`, `@at`, `@pace`), chunk boundaries (`@chunk`), bytes a line cannot show
(`@raw`, `@no-newline`, `@line-ending`) and the ending (`@end`). One clock runs per
interaction from the moment the request was sent: the head and every chunk arrive at the
clock's time, and the timing directives move it.

`load` reads a file (every syntax error names its line and column); `dump` writes any
cassette's exchanges so that `load` gives back the same bytes, chunks, offsets (to the
nanosecond) and endings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import NoReturn
from urllib.parse import urlsplit

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.transfer import TransferError
from sse_recorder.transfer.exchange import Exchange, Imported

LATEST_TIME = 253402214400.0  # 9999-12-31 UTC: a cassette's start times end there
MAX_CLOCK_NS = (1 << 63) - 1  # offsets are stored as SQLite's 64-bit integers
MAGIC = "# sse-recorder stream file (format: cassettes/SSE-FORMAT.md)"
LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
# How `@end` names an outcome: the wire's words for the three a hand-written file wants,
# and every outcome's own name (a cassette's other endings round-trip).
ENDINGS: dict[str, Outcome] = {"fin": Outcome.CLOSED, "rst": Outcome.RESET,
                               **{outcome.value: outcome for outcome in Outcome}}
ENDING_NAMES = {Outcome.CLOSED: "fin", Outcome.RESET: "rst"}
DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                  "m": 60_000_000_000, "": 1_000_000}  # a bare number is milliseconds
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([a-zµ]*)")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) +(\S.*?)(?: +(HTTP/\S+))? *")
_STATUS_LINE = re.compile(r"(HTTP/[0-9.]+) +(\d{3})(?: (.*))?")
_HEADER = re.compile(rf"({_TOKEN})[ \t]*:[ \t]*(.*?)[ \t]*")
_DIRECTIVE = re.compile(r"@(#|[a-z][a-z-]*)")
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", '"': b'"', "\\": b"\\"}
_WRITE_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", '"': '\\"',
                  "\\": "\\\\"}
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029\ud800-\udfff]")
# What a head (status line, header) cannot hold: control characters but the tab, which
# RFC 9112 allows in a reason phrase and a field value.
_HEAD_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")


class State(Enum):
    OUTSIDE = "between interactions"
    REQUEST = "in the request head"
    REQUEST_BODY = "in the request body"
    HEAD_PENDING = "before the response head"
    RESPONSE = "in the response head"
    BODY = "in the response body"


_BEFORE_HEAD = (State.REQUEST, State.REQUEST_BODY, State.HEAD_PENDING)


# -- reading --------------------------------------------------------------------------------


@dataclass
class _Draft:
    """An interaction being read."""

    method: str
    url: str
    version: str
    started_at: float
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_lines: list[str] = field(default_factory=list)
    body: bytes | None = None  # from @body
    clock: int = 0  # ns since the request was sent
    response: ResponseHead | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    status: tuple[str, int, str] | None = None
    head_ns: int = 0
    line_ending: bytes = b"\n"
    chunks: list[tuple[int, bytearray]] = field(default_factory=list)
    open_chunk: bytearray | None = None
    last_line: tuple[bytearray, int] | None = None  # the chunk and ending of the last line
    pace: int | None = None
    event_start: bool = True  # the next non-empty line begins an event
    timed: bool = False  # a timing directive since the last piece

    def piece(self, data: bytes) -> bytearray:
        if self.open_chunk is None:
            self.open_chunk = bytearray()
            self.chunks.append((self.clock, self.open_chunk))
        self.open_chunk += data
        self.timed = False
        return self.open_chunk

    def new_chunk(self) -> None:
        self.open_chunk = None
        self.last_line = None
        self.timed = True


class _Reader:
    def __init__(self, text: str, name: str, now: float) -> None:
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()  # the file's last line ending ends its last line
        self.name = name
        self.now = now
        self.lineno = 0
        self.state = State.OUTSIDE
        self.draft: _Draft | None = None
        self.done: list[Exchange] = []
        self.directives: dict[str, tuple[Callable[[list[_Token]], None], tuple[State, ...]]] = {
            "#": (lambda _: None, tuple(State)),
            "started": (self._started, (State.REQUEST,)),
            "header": (self._header, (State.REQUEST, State.RESPONSE)),
            "body": (self._body, (State.REQUEST, State.REQUEST_BODY)),
            "wait": (self._wait, (*_BEFORE_HEAD, State.BODY)),
            "at": (self._at, (*_BEFORE_HEAD, State.BODY)),
            "chunk": (self._chunk, (State.BODY,)),
            "pace": (self._pace, (State.BODY,)),
            "raw": (self._raw, (State.BODY,)),
            "no-newline": (self._no_newline, (State.BODY,)),
            "line-ending": (self._line_ending, (State.RESPONSE, State.BODY)),
            "end": (self._end, (*_BEFORE_HEAD, State.RESPONSE, State.BODY)),
        }

    def fail(self, message: str, column: int = 1) -> NoReturn:
        raise TransferError(f"{self.name}:{self.lineno}:{column}: {message}")

    def read(self) -> list[Exchange]:
        for index, line in enumerate(self.lines):
            self.lineno = index + 1
            self.line(line[:-1] if line.endswith("\r") else line)
        self.lineno = len(self.lines)
        if self.state in _BEFORE_HEAD:
            self.fail("the file ends before the response: write its status line "
                      "(HTTP/1.1 200 OK), or `@end proxy-error` for none")
        if self.state is not State.OUTSIDE:  # as `@end clean`: the end at the clock's time
            assert self.draft is not None
            self._finish(Outcome.CLEAN, self.draft.clock, None)
        if not self.done:
            raise TransferError(f"{self.name}: no interaction in the file (it starts with a "
                                "request line such as `GET http://127.0.0.1/stream`)")
        return self.done

    def line(self, line: str) -> None:
        if line.startswith("@"):
            self.directive(line)
            return
        state, draft = self.state, self.draft
        if state is State.OUTSIDE:
            if line.strip() and not line.startswith("#"):
                self.request_line(line)
            return
        assert draft is not None
        if state is State.BODY:
            self.body_line(draft, line)
        elif line.startswith("HTTP/") and state in _BEFORE_HEAD:
            self.status_line(draft, line)
        elif state is State.REQUEST:
            if not line.strip():
                self.state = State.REQUEST_BODY
            else:
                draft.headers.append(self.header_line(line))
        elif state is State.REQUEST_BODY:
            if draft.body is None:
                draft.body_lines.append(line)
            elif line.strip():
                self.fail("the request body was given by @body: no body line may follow it")
        elif state is State.HEAD_PENDING:
            if line.strip():
                self.fail("expected the status line (HTTP/1.1 200 OK) or @end after a "
                          "timing directive")
        elif state is State.RESPONSE:
            if not line.strip():
                self.state = State.BODY
            else:
                draft.response_headers.append(self.header_line(line))

    def request_line(self, line: str) -> None:
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            self.fail("expected a request line such as `GET http://127.0.0.1:8080/stream` "
                      "(a comment line starts with #)")
        method, url, version = match.groups()
        if not re.match(r"https?://[^/?#\s]", url, re.IGNORECASE):
            self.fail(f"the URL must be absolute, http://host/path: {url[:60]!r}",
                      match.start(2) + 1)
        try:
            urlsplit(url).port  # noqa: B018 - unpaired brackets, a bad port: ValueError
        except ValueError as exc:
            self.fail(f"the URL's host or port is malformed ({exc}): {url[:60]!r}",
                      match.start(2) + 1)
        self.draft = _Draft(method, url, version or "HTTP/1.1", self.now)
        self.state = State.REQUEST

    def status_line(self, draft: _Draft, line: str) -> None:
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            self.fail("expected a status line such as `HTTP/1.1 200 OK`")
        version, status, reason = match.groups()
        if not 100 <= int(status) <= 999:
            self.fail(f"status {status} is not from 100 to 999", match.start(2) + 1)
        draft.status = (version, int(status), self.head_text(reason or "", match.start(3) + 1))
        draft.head_ns = draft.clock
        self.state = State.RESPONSE

    def header_line(self, line: str) -> tuple[str, str]:
        match = _HEADER.fullmatch(line)
        if match is None:
            self.fail("expected a header (Name: value), or a blank line to end the head")
        return match.group(1), self.head_text(match.group(2), match.start(2) + 1)

    def head_text(self, value: str, column: int) -> str:
        """A head value as the wire carries it: its UTF-8 bytes, latin-1 decoded."""
        bad = _HEAD_CONTROL.search(value)
        if bad:
            self.fail("a control character cannot be in a head (use @header with \\x escapes "
                      "only for bytes the wire allows)", column + bad.start())
        return value.encode("utf-8", "surrogateescape").decode("latin-1")

    def body_line(self, draft: _Draft, line: str) -> None:
        if draft.pace is not None and draft.event_start and line and not draft.timed:
            draft.clock += draft.pace
            draft.new_chunk()
        ending = draft.line_ending
        chunk = draft.piece(line.encode("utf-8", "surrogateescape") + ending)
        draft.last_line = (chunk, len(ending))
        draft.event_start = not line

    # -- directives -----------------------------------------------------------------------

    def directive(self, line: str) -> None:
        match = _DIRECTIVE.match(line)
        name = match.group(1) if match else ""
        if match is None or name not in self.directives:
            known = ", ".join(f"@{d}" for d in self.directives)
            self.fail(f"unknown directive {line.split()[0][:30]!r} (known: {known}; a stream "
                      'line starting with @ is written @raw "...")')
        handler, states = self.directives[name]
        if self.state not in states:
            self.fail(f"@{name} cannot be used {self.state.value}")
        if name == "#":
            return
        handler(_tokens(line, match.end(), self))

    def _args(self, tokens: list[_Token], name: str, count: int) -> list[_Token]:
        if len(tokens) != count:
            column = tokens[count].column if len(tokens) > count else len(
                self.lines[self.lineno - 1]) + 1
            self.fail(f"@{name} takes {count} argument{'s' if count != 1 else ''}", column)
        return tokens

    def _started(self, tokens: list[_Token]) -> None:
        (token,) = self._args(tokens, "started", 1)
        assert self.draft is not None
        self.draft.started_at = self.timestamp(token)

    def timestamp(self, token: _Token) -> float:
        if re.fullmatch(r"\d+(?:\.\d+)?", token.text):
            seconds = float(token.text)
        else:
            try:
                moment = datetime.fromisoformat(token.text)
            except ValueError:
                self.fail("expected a time: ISO 8601 (2026-01-15T10:30:00Z) or seconds since "
                          "the epoch", token.column)
            seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        if not 0 <= seconds < LATEST_TIME:
            self.fail("the time must be from 1970 to 9999", token.column)
        return seconds

    def _header(self, tokens: list[_Token]) -> None:
        name, value = self._args(tokens, "header", 2)
        if not re.fullmatch(_TOKEN, name.text):
            self.fail("a header name is a token (letters, digits, !#$%&'*+-.^_`|~)",
                      name.column)
        if re.search(rb"[\r\n\0]", value.data):
            self.fail("a header value cannot hold CR, LF or NUL", value.column)
        assert self.draft is not None
        pair = (name.text, value.data.decode("latin-1"))
        if self.state is State.REQUEST:
            self.draft.headers.append(pair)
        else:
            self.draft.response_headers.append(pair)

    def _body(self, tokens: list[_Token]) -> None:
        (token,) = self._args(tokens, "body", 1)
        assert self.draft is not None
        if self.draft.body is not None or any(self.draft.body_lines):
            self.fail("the request body is given twice (lines and @body)")
        self.draft.body = token.data
        self.state = State.REQUEST_BODY

    def duration(self, token: _Token) -> int:
        match = _DURATION.fullmatch(token.text)
        if match is None or match.group(2) not in DURATION_UNITS:
            self.fail(f"expected a duration such as 250ms, 1.5s, 30s, 100us: {token.text!r}",
                      token.column)
        ns = Decimal(match.group(1)) * DURATION_UNITS[match.group(2)]
        if ns != ns.to_integral_value():
            self.fail("a duration is kept to the nanosecond: this one is finer", token.column)
        return int(ns)

    def _timed(self, tokens: list[_Token], name: str, relative: bool) -> None:
        (token,) = self._args(tokens, name, 1)
        draft = self.draft
        assert draft is not None
        clock = (draft.clock if relative else 0) + self.duration(token)
        if clock > MAX_CLOCK_NS:
            self.fail("the clock would pass 292 years, more than a cassette holds (offsets "
                      "are 64-bit nanoseconds)", token.column)
        draft.clock = clock
        if self.state is State.BODY:
            draft.new_chunk()
        else:
            self.state = State.HEAD_PENDING

    def _wait(self, tokens: list[_Token]) -> None:
        self._timed(tokens, "wait", True)

    def _at(self, tokens: list[_Token]) -> None:
        self._timed(tokens, "at", False)

    def _chunk(self, tokens: list[_Token]) -> None:
        self._args(tokens, "chunk", 0)
        assert self.draft is not None
        self.draft.new_chunk()

    def _pace(self, tokens: list[_Token]) -> None:
        (token,) = self._args(tokens, "pace", 1)
        assert self.draft is not None
        self.draft.pace = None if token.text == "off" else self.duration(token)

    def _raw(self, tokens: list[_Token]) -> None:
        (token,) = self._args(tokens, "raw", 1)
        if not token.quoted:
            self.fail('@raw takes a quoted string: @raw "data: hel"', token.column)
        assert self.draft is not None
        self.draft.piece(token.data)
        self.draft.last_line = None
        self.draft.event_start = False

    def _no_newline(self, tokens: list[_Token]) -> None:
        self._args(tokens, "no-newline", 0)
        draft = self.draft
        assert draft is not None
        if draft.last_line is None:
            self.fail("@no-newline must follow a stream line (it takes that line's ending "
                      "away)")
        chunk, ending = draft.last_line
        del chunk[len(chunk) - ending:]
        draft.last_line = None
        draft.event_start = False

    def _line_ending(self, tokens: list[_Token]) -> None:
        (token,) = self._args(tokens, "line-ending", 1)
        if token.text not in LINE_ENDINGS:
            self.fail(f"@line-ending takes {', '.join(LINE_ENDINGS)}", token.column)
        assert self.draft is not None
        self.draft.line_ending = LINE_ENDINGS[token.text]

    def _end(self, tokens: list[_Token]) -> None:
        """`@end [OUTCOME] [wait D | at T | at none] [error "TEXT"]`"""
        draft = self.draft
        assert draft is not None
        outcome = Outcome.CLEAN
        rest = tokens
        if rest and not rest[0].quoted and rest[0].text not in ("wait", "at", "error"):
            if rest[0].text not in ENDINGS:
                self.fail(f"unknown ending {rest[0].text!r} (one of {', '.join(ENDINGS)})",
                          rest[0].column)
            outcome = ENDINGS[rest[0].text]
            rest = rest[1:]
        end: int | None = draft.clock
        error = None
        while rest:
            word = rest[0]
            if word.text not in ("wait", "at", "error") or word.quoted or len(rest) < 2:
                self.fail("@end takes an ending, then `wait DURATION`, `at TIME` or "
                          '`at none`, then `error "TEXT"`', word.column)
            value = rest[1]
            if word.text == "error":
                error = value.data.decode("utf-8", "replace")
            elif word.text == "at" and value.text == "none":
                end = None
            else:
                end = (draft.clock if word.text == "wait" else 0) + self.duration(value)
            rest = rest[2:]
        self._finish(outcome, end, error)

    def _finish(self, outcome: Outcome, end: int | None, error: str | None) -> None:
        draft = self.draft
        assert draft is not None
        if draft.body is not None:
            body = draft.body
        else:
            lines = list(draft.body_lines)
            while lines and not lines[-1].strip():
                lines.pop()
            body = "\n".join(lines).encode("utf-8", "surrogateescape")
        request = RecordedRequest(draft.method, draft.url, tuple(draft.headers), body,
                                  draft.version)
        response = None
        if draft.status is not None:
            version, status, reason = draft.status
            response = ResponseHead(status, reason, tuple(draft.response_headers), version)
        self.done.append(Exchange(
            request=request, started_at=draft.started_at, response=response,
            head_offset_ns=draft.head_ns if response is not None else None,
            chunks=tuple((ns, bytes(data)) for ns, data in draft.chunks),
            outcome=outcome, end_offset_ns=end, error=error,
        ))
        self.draft = None
        self.state = State.OUTSIDE


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # as written (a quoted string: its text unescaped, bytes as U+DC80...)
    data: bytes  # the bytes it stands for
    column: int
    quoted: bool


_TOKENS = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)("?)|(\S+))')


def _tokens(line: str, start: int, reader: _Reader) -> list[_Token]:
    """A directive's arguments: bare words and quoted strings (escapes: \\n \\r \\t \\0
    \\" \\\\ and \\xHH for any byte)."""
    tokens: list[_Token] = []
    pos = start
    if pos < len(line) and not line[pos].isspace():
        reader.fail("expected a space after the directive's name", pos + 1)
    while pos < len(line) and line[pos:].strip():
        match = _TOKENS.match(line, pos)
        assert match is not None
        column = match.start(1 if match.group(3) is None else 3) + 1
        if match.group(3) is not None:
            word = match.group(3)
            tokens.append(_Token(word, word.encode("utf-8", "surrogateescape"), column, False))
        else:
            if not match.group(2):
                reader.fail("this quoted string has no closing quote", column - 1)
            data = _unescape(match.group(1), column, reader)
            tokens.append(_Token(data.decode("utf-8", "surrogateescape"), data, column - 1, True))
        pos = match.end()
    return tokens


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")


def _unescape(text: str, column: int, reader: _Reader) -> bytes:
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += text[pos:match.start()].encode("utf-8", "surrogateescape")
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _ESCAPES:
            out += _ESCAPES[code]
        else:
            reader.fail(f"unknown escape \\{code[0]} (known: \\n \\r \\t \\0 \\\" \\\\ \\xHH)",
                        column + match.start())
        pos = match.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def load(data: bytes, name: str, now: float | None = None) -> Imported:
    """The exchanges of a `.sse` file; `now` (default: the time of reading) is the start
    time of those without @started."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TransferError(f"{name}:{line}:{column}: not UTF-8 text (write bytes that are "
                            'not as @raw "\\xHH")') from None
    reader = _Reader(text.removeprefix("\ufeff"), name, time.time() if now is None else now)
    return Imported(reader.read())


# -- writing --------------------------------------------------------------------------------


def quote(data: bytes) -> str:
    """Bytes as a quoted string `load` reads back exactly."""
    out = []
    for char in data.decode("utf-8", "surrogateescape"):
        if char in _WRITE_ESCAPES:
            out.append(_WRITE_ESCAPES[char])
        elif "\udc80" <= char <= "\udcff":
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif _UNSAFE.match(char):
            out.append("".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def duration(ns: int) -> str:
    """The shortest exact spelling: 1.5s, 250ms, 12.000345ms."""
    if ns >= 1_000_000_000 and ns % 1_000_000 == 0:
        return _decimal(Decimal(ns) / 1_000_000_000) + "s"
    return _decimal(Decimal(ns) / 1_000_000) + "ms"


def _decimal(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plain(data: bytes) -> str | None:
    """`data` as the text of a stream line, if a line shows it exactly."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith("@") or _UNSAFE.search(text):
        return None
    return text


def _head_value(value: str) -> str | None:
    """A head value as written after `Name: `, if that reads back exactly."""
    try:
        text = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    if text != text.strip(" \t") or re.search(r"[\x00-\x1f\x7f]", text):
        return None
    return text


def _reason(reason: str) -> str:
    """The reason as the status line shows it (all of the line after the status: spaces
    and tabs kept); one no line can show (any other control character) is left out."""
    try:
        text = reason.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return ""
    return "" if _HEAD_CONTROL.search(text) else text


def _headers(headers: Sequence[tuple[str, str]]) -> list[str]:
    lines = []
    for name, value in headers:
        shown = _head_value(value) if re.fullmatch(_TOKEN, name) else None
        if shown is None:
            lines.append(f"@header {quote(name.encode('latin-1'))} "
                         f"{quote(value.encode('latin-1'))}")
        else:
            lines.append(f"{name}: {shown}")
    return lines


def _time(clock: int, ns: int, relative: str = "wait") -> str:
    return f"{relative} {duration(ns - clock)}" if ns >= clock else f"at {duration(ns)}"


def _request_body(body: bytes) -> list[str]:
    """Lines after a blank one where they read back exactly (UTF-8, no line taken for a
    directive or a status line, a last line that is not blank), else `@body "..."`."""
    if not body:
        return []
    try:
        lines = body.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = [""]
    if lines[-1].strip() and not any(line.startswith(("@", "HTTP/")) or _UNSAFE.search(line)
                                     for line in lines):
        return ["", *lines]
    return [f"@body {quote(body)}"]


def _body(exchange: Exchange, clock: int) -> tuple[list[str], int]:
    """The stream's lines and directives: a timing directive before every chunk."""
    pieces = [[m.group() for m in _LINE.finditer(data) if m.group()] or [b""]
              for _, data in exchange.chunks]
    counts: dict[bytes, int] = {}
    for piece in (p for chunk in pieces for p in chunk):
        for ending in (b"\r\n", b"\n", b"\r"):
            if piece.endswith(ending):
                counts[ending] = counts.get(ending, 0) + 1
                break
    newline = max(counts, key=lambda e: counts[e]) if counts else b"\n"
    out = [] if newline == b"\n" else [
        f"@line-ending {next(k for k, v in LINE_ENDINGS.items() if v == newline)}"]
    for (offset, _), chunk in zip(exchange.chunks, pieces, strict=True):
        out.append("@chunk" if offset == clock else f"@{_time(clock, offset)}")
        clock = offset
        for piece in chunk:
            content = piece[:-len(newline)] if piece.endswith(newline) else piece
            ending = piece[len(content):]
            text = _plain(content) if piece else None
            if text is not None and ending == newline:
                out.append(text)
            elif text is not None and not ending and text and not content.endswith(b"\r"):
                out += [text, "@no-newline"]
            else:
                out.append(f"@raw {quote(piece)}")
    return out, clock


def dump(exchanges: Sequence[Exchange]) -> bytes:
    """`.sse` text for `exchanges`; `load` reads back the same bytes, chunks and times."""
    out = [MAGIC]
    for exchange in exchanges:
        request = exchange.request
        started = datetime.fromtimestamp(exchange.started_at, UTC)
        out += ["", f"{request.method} {request.url} {request.http_version}",
                f"@started {started.isoformat(timespec='microseconds').replace('+00:00', 'Z')}",
                *_headers(request.headers), *_request_body(request.body)]
        out.append("")
        clock = 0
        if exchange.response is not None:
            head = exchange.head_offset_ns or 0
            if head:
                out.append(f"@{_time(clock, head)}")
                clock = head
            response = exchange.response
            status = f"{response.http_version} {response.status}"
            reason = _reason(response.reason)
            out += [f"{status} {reason}" if reason else status,
                    *_headers(response.headers), ""]
            lines, clock = _body(exchange, clock) if exchange.chunks else ([], clock)
            out += lines
        end = exchange.outcome
        line = f"@end {ENDING_NAMES.get(end, end.value)}"
        if exchange.end_offset_ns is None:
            line += " at none"
        elif exchange.end_offset_ns != clock:
            line += f" {_time(clock, exchange.end_offset_ns)}"
        if exchange.error is not None:
            line += f" error {quote(exchange.error.encode('utf-8', 'surrogateescape'))}"
        out.append(line)
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")

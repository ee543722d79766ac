"""Keep credentials out of cassettes: the one redaction step between parsing and writing.

Two kinds of rule, both applied to every text the recorder stores (URL, headers, request
and response bodies, SSE chunks, events, error texts):
- by name: a header, query/form parameter or JSON key whose name has a credential's shape
  (`token`, `*_token`, `*Token`, `*_key`, `secret`, `password`..., see `NAME_RULES`) has its
  value replaced by `MARKER`, whatever its JSON type (an object or array becomes the marker;
  `null` is kept). JSON is matched textually, also inside JSON strings (`\\"api_key\\"`), so
  the rule works on bodies cut into chunks and on SSE events wrapped over `data:` lines;
- by value: the values given with `--redact-value`/`--redact-env`, and every value the
  name rules took out of an interaction's request (an upstream may echo it), are replaced
  wherever they appear, also percent-, JSON- or base64-encoded.
Redacted values are replaced by one fixed marker so the shape of what was sent stays visible.
Compressed bodies are decoded to be redacted (`decode_body`, `StreamDecoder`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from urllib.parse import quote, quote_plus, unquote_plus

from sse_recorder.model import Headers, RecordedRequest, content_codings_named

try:  # brings nothing new: mitmproxy depends on Google's Brotli bindings
    import brotli
except ImportError:  # pragma: no cover - recording without mitmproxy's dependencies
    brotli = None

MARKER = "[REDACTED]"
_MARK = MARKER.encode()
MAX_HELD = 1 << 20  # an SSE event longer than this is released (and redacted) before its end
# Such a release leaves this much of the event held (a secret across the cut is seen whole),
# and the event's last CARRY bytes released are kept (raw, in the writer's memory only) to
# redact the rest with: a key on one side, its value on the other, is still found.
LOOKAHEAD = 64 << 10
CARRY = 64 << 10
# A body of another type (a log, chunked JSON) is stored a run of whole lines at a time; the
# next run is redacted after this much of the last (pretty-printed JSON: a key, its value on
# the next line).
LINE_CARRY = 4 << 10
MAX_DECODED = 64 << 20  # a compressed body decoding to more than this is stored as received
MIN_LEARNED = 6  # shorter values taken out by name are not scrubbed elsewhere ("true", "1")

Span = tuple[int, int, bytes]  # (start, end, replacement)

# -- names ----------------------------------------------------------------------------------
# What a credential's name looks like. A name matches when it ends with a CORE word (any
# prefix: accessToken, client_secret, x-api-key's "apikey"...), ends with a BOUNDED word
# after a separator or a camel-case step (api_key, apiKey, X-Custom-Auth, set-cookie; not
# "monkey"), or starts with password/passwd/secret (password_confirmation).
_CH = rb'[^"\\\s:=&;?#/,{}\[\]]'
_BOUNDARY = rb"(?:(?<=[_\-. ])|(?<=[a-z0-9])(?=[A-Z]))"
_CORE = rb"token|secret|password|passwd|apikey|credentials?|authorization|authentication"
NAME_RULES = (
    rb"(?:" + _CH + rb"*?(?i:" + _CORE + rb")"
    rb"|" + _CH + rb"*?" + _BOUNDARY + rb"(?i:key)"
    rb"|(?:" + _CH + rb"*?" + _BOUNDARY + rb")?(?i:auth|cookie)"
    rb"|(?i:password|passwd|secret)" + _CH + rb"*)"
)
# Query and form parameters also count a bare `key` (Google's ?key=) and signatures.
_PARAM_EXTRA = rb"|(?:" + _CH + rb"*?" + _BOUNDARY + rb")?(?i:key|sig|signature)"
# Case-insensitive words one of which every match contains: a fast first test of a text.
_WORDS = ("token", "secret", "passw", "apikey", "credential", "auth", "key", "cookie")

DEFAULT_HEADERS = frozenset({"proxy-authorization", "set-cookie", "private-token"})


def _alternatives(names: Iterable[str], *, ignore_case: bool) -> bytes:
    escaped = sorted((re.escape(n.encode()) for n in names if n), key=len, reverse=True)
    if not escaped:
        return b""
    body = b"|".join(escaped)
    return b"|(?i:" + body + b")" if ignore_case else b"|(?:" + body + b")"


def _json_pattern(names: bytes, multiline: bool) -> re.Pattern[bytes]:
    """`"name": value` (also `\\"name\\": \\"value\\"` inside a JSON string). Single-line
    patterns are for raw SSE lines: nothing may cross a line end there."""
    if multiline:
        space, string = rb"\s*", rb'"(?:[^"\\]|\\.)*"?'
        escaped = rb'(?P=q)"(?:.*?(?<!\\)(?P=q)"|.*)'
    else:
        space, string = rb"[ \t]*", rb'"(?:[^"\\\r\n]|\\[^\r\n])*"?'
        escaped = rb'(?P=q)"(?:[^\r\n]*?(?<!\\)(?P=q)"|[^\r\n]*)'
    number = rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
    return re.compile(
        rb'(?P<q>\\*)"(?:' + names + rb')(?P=q)"' + space + rb":" + space
        + rb"(?P<v>" + string + rb"|" + escaped + rb"|" + number
        + rb"|true|false|(?P<open>[\[{]))",
        re.DOTALL if multiline else 0,
    )


_STRINGISH = re.compile(rb'\\*"|[\[\]{}]|[\r\n]')


def _container_end(data: bytes, start: int, quote_len: int, multiline: bool) -> int:
    """End of the JSON object/array opening at `start` (strings skipped); an unclosed one
    runs to the end of the line (single-line) or of the text."""
    depth = 0
    pos = start
    limit = len(data)
    while True:
        m = _STRINGISH.search(data, pos, limit)
        if m is None:
            return limit
        token = m.group()
        if token in (b"\r", b"\n"):
            if not multiline:
                return m.start()
            pos = m.end()
        elif token.endswith(b'"'):
            if len(token) - 1 != quote_len:  # an escaped quote of another depth: content
                pos = m.end()
                continue
            # skip the string: up to the same quote not preceded by a backslash
            close = re.compile(rb"(?<!\\)" + re.escape(token)) if quote_len else _CLOSE_QUOTE
            end = close.search(data, m.end(), limit)
            if end is None:
                return limit
            pos = end.end()
        else:
            depth += 1 if token in (b"[", b"{") else -1
            pos = m.end()
            if depth == 0:
                return pos


_CLOSE_QUOTE = re.compile(rb'(?:[^"\\]|\\.)*"', re.DOTALL)


# -- values ---------------------------------------------------------------------------------


def value_forms(value: str) -> set[bytes]:
    """A value as it may appear in a body: raw, percent-, JSON- and base64-encoded (each of
    the 3 alignments inside a longer base64 text, standard and URL-safe alphabets)."""
    raw = value.encode()
    forms = {raw, quote(value, safe="").encode(), quote_plus(value, safe="").encode(),
             json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode()}
    if len(raw) >= 6:
        for shift in range(3):
            padded = base64.b64encode(b"\0" * shift + raw + b"\0\0")
            # only the characters fully determined by the value's own bits
            core = padded[(8 * shift + 5) // 6 : (8 * (shift + len(raw))) // 6]
            if len(core) >= 8:  # shorter ones turn up by chance in any base64 text
                forms.add(core)
                forms.add(core.translate(_URLSAFE))
    return {f for f in forms if f}


_URLSAFE = bytes.maketrans(b"+/", b"-_")
# JSON's two-character escapes (RFC 8259 §7); `\/` is what PHP and others write for `/`
_JSON_SHORT = {'"': b'\\"', "\\": b"\\\\", "/": b"\\/", "\b": b"\\b", "\f": b"\\f",
               "\n": b"\\n", "\r": b"\\r", "\t": b"\\t"}


def _hex(number: int, digits: int) -> bytes:
    """`number` in hex as a regex matching either case (`2[fF]`)."""
    return b"".join(b"[%s%s]" % (d.lower(), d.upper()) if d.isalpha() else d
                    for d in (bytes([c]) for c in b"%0*X" % (digits, number)))


def spelled(value: str) -> bytes:
    """A regex for `value` with each character in any of the spellings a body or URL may
    use: raw, percent-encoded (either hex case, `+` for a space), or JSON-escaped (`\\uXXXX`
    in either case, a surrogate pair beyond the BMP, `\\/` and the other short escapes).
    Mixed spellings match too: what encoders agree on is the characters, not the form
    (Go writes `\\u003c`, PHP `\\/`, browsers `%2f` or `%2F`)."""
    parts = []
    for char in value:
        raw = char.encode()
        alternatives = {re.escape(raw), b"".join(b"%" + _hex(byte, 2) for byte in raw)}
        units = char.encode("utf-16-be")
        alternatives.add(b"".join(b"\\\\u" + _hex(int.from_bytes(units[i:i + 2], "big"), 4)
                                  for i in range(0, len(units), 2)))
        if char == " ":
            alternatives.add(b"\\+")
        if char in _JSON_SHORT:
            alternatives.add(re.escape(_JSON_SHORT[char]))
        parts.append(b"(?:" + b"|".join(sorted(alternatives)) + b")")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Needles:
    """The secret values as two patterns that find the same spans in a text without escape
    characters: `literal` (raw, whole-value encodings, base64: a literal alternation) and
    `spelled` (any character escaped, mixed), which costs twice as much per byte and is
    used only on a text holding one of `escapes` (270-byte events of a stream with a
    learned credential: 1.8 us each literal, 4.1 us spelled, 2.5 us with this choice)."""

    literal: re.Pattern[bytes]
    spelled: re.Pattern[bytes]
    escapes: tuple[bytes, ...]  # % and backslash, and + when a value holds a space

    def pattern_for(self, data: bytes) -> re.Pattern[bytes]:
        return self.spelled if any(e in data for e in self.escapes) else self.literal


def _needles(values: Iterable[str]) -> _Needles | None:
    """Every value in any spelling (`spelled`), and in base64 (`value_forms`)."""
    values = sorted({v for v in values if v}, key=len, reverse=True)
    if not values:
        return None
    literal = [re.escape(f) for f in sorted({form for value in values
                                             for form in value_forms(value)},
                                            key=len, reverse=True)]
    escapes = (b"%", b"\\") + ((b"+",) if any(" " in v for v in values) else ())
    return _Needles(re.compile(b"|".join(literal)),
                    re.compile(b"|".join([spelled(value) for value in values] + literal)),
                    escapes)


class SecretOptionError(ValueError):
    """A secret value option that cannot work; `option` says which ("values" or "env"),
    so the CLI and the addon can name it in their own spelling."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def secret_values(values: Iterable[str], env_names: Iterable[str]) -> list[str]:
    """The values never to store: given ones, and those of environment variables. An empty
    value, or a variable unset or empty (most likely a typo: there would be nothing to
    redact), is an error."""
    given = list(values)
    if "" in given:
        raise SecretOptionError("values", "an empty value cannot be redacted")
    for name in env_names:
        value = os.environ.get(name, "")
        if not value:
            raise SecretOptionError("env", f"{name} is not set in the environment (or is empty)")
        given.append(value)
    return given


# -- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedactionRules:
    """What to redact: the name rules plus the user's extra names, and secret values.
    Extra header and query names match case-insensitively, extra JSON keys exactly."""

    headers: frozenset[str] = frozenset()
    query_params: frozenset[str] = frozenset()
    json_fields: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()
    _compiled: _Compiled = field(init=False, repr=False, compare=False)

    @classmethod
    def with_extra(
        cls,
        headers: Iterable[str] = (),
        query_params: Iterable[str] = (),
        json_fields: Iterable[str] = (),
        values: Iterable[str] = (),
    ) -> RedactionRules:
        """The name rules plus the user's own names and values."""
        return cls(frozenset(headers), frozenset(query_params), frozenset(json_fields),
                   tuple(v for v in values if v))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", _Compiled(self))

    def scrubber(self, learned: Iterable[str] = ()) -> Scrubber:
        """The redactor of one interaction: these rules, plus values learned from its request."""
        return self._compiled.base.learn(learned)


class _Compiled:
    """The rules' patterns, compiled once per `RedactionRules`."""

    def __init__(self, rules: RedactionRules) -> None:
        json_names = NAME_RULES + _alternatives(rules.json_fields, ignore_case=False)
        param_names = NAME_RULES[:-1] + _PARAM_EXTRA + b")" + _alternatives(
            rules.query_params, ignore_case=True)
        self.json_multi = _json_pattern(json_names, multiline=True)
        self.json_line = _json_pattern(json_names, multiline=False)
        self.pairs = re.compile(
            rb"(?<![\w\-.%])(?:" + param_names + rb")=(?P<v>[^&;#\s\"'<>\\]+)"
        )
        self.param_name = re.compile(param_names)
        # a path segment after one of these is a credential: /token/S, /api_key/S
        self.path_name = re.compile(
            _CH + rb"*?(?i:" + _CORE + rb")|(?:" + _CH + rb"*?" + _BOUNDARY + rb")?(?i:key)"
        )
        self.header_name = re.compile(
            NAME_RULES + _alternatives(rules.headers | DEFAULT_HEADERS, ignore_case=True)
        )
        words = {*_WORDS, *(
            n.lower() for n in (*rules.headers, *rules.query_params, *rules.json_fields)
        )}
        # a word holding another adds nothing to the prefilter ("apikey" holds "key")
        self.words = tuple(w.encode() for w in sorted(words)
                           if not any(o != w and o in w for o in words))
        self.base = Scrubber(self, rules.values)


class Scrubber:
    """Redacts the texts of one interaction (the rules and the values to scrub)."""

    def __init__(self, compiled: _Compiled, values: tuple[str, ...]) -> None:
        self._c = compiled
        self.values = values
        self.needles = _needles(values)

    def _may_name(self, data: bytes) -> bool:
        """Whether `data` may hold a credential's name: a cheap prefilter (a substring
        search per word) that spares most texts the name patterns."""
        low = data.lower()
        return any(word in low for word in self._c.words)

    # -- spans ---------------------------------------------------------------------------

    def name_spans(self, data: bytes, multiline: bool = True, base: int = 0) -> list[Span]:
        """Values of credential-named JSON keys and parameters in `data`."""
        if not self._may_name(data):
            return []
        spans: list[Span] = []
        pattern = self._c.json_multi if multiline else self._c.json_line
        for m in pattern.finditer(data):
            start = m.start("v")
            if m.group("open") is not None:
                end = _container_end(data, start, len(m.group("q")), multiline)
            else:
                end = m.end("v")
            q = m.group("q")
            spans.append((base + start, base + end, q + b'"' + _MARK + q + b'"'))
        for m in self._c.pairs.finditer(data):
            spans.append((base + m.start("v"), base + m.end("v"), _MARK))
        return spans

    def value_spans(self, data: bytes, base: int = 0) -> list[Span]:
        if self.needles is None:
            return []
        return [(base + m.start(), base + m.end(), _MARK)
                for m in self.needles.pattern_for(data).finditer(data)]

    def spans(self, data: bytes) -> list[Span]:
        """Everything to redact in a whole text (a body, a header value)."""
        return _merge(self.name_spans(data) + self.value_spans(data))

    def stream_spans(self, region: bytes) -> list[Span]:
        """Everything to redact in a run of whole SSE blocks. Each event's data (its `data:`
        lines joined, as a client sees it) is redacted as one text, so a value wrapped over
        two lines is found; other lines one by one. Line ends are never replaced."""
        spans: list[Span] = []
        names = self._may_name(region)
        if names or self.needles is not None:
            pos = 0
            values: list[tuple[int, int]] = []  # raw (start, end) of the block's data values
            for line in region.splitlines(True):
                content = line.rstrip(b"\r\n")
                at = pos + (3 if content.startswith(b"\xef\xbb\xbf") else 0)
                text = region[at:pos + len(content)]
                if not text:
                    spans += self._data_spans(region, values, names)
                    values = []
                elif text.startswith(b"data") and (len(text) == 4 or text[4] == 0x3A):
                    value_at = at + (6 if text[5:6] == b" " else 5)
                    values.append((min(value_at, pos + len(content)), pos + len(content)))
                elif names:
                    spans += self.name_spans(text, multiline=False, base=at)
                pos += len(line)
            spans += self._data_spans(region, values, names)
        spans += self.value_spans(region)
        return _keep_line_ends(_merge(spans), region)

    def _data_spans(self, region: bytes, values: list[tuple[int, int]], names: bool
                    ) -> list[Span]:
        """Spans in one event's data lines (raw `values` ranges): the name rules over the
        lines joined with LF, as a client reads them; secret values over the lines joined
        with nothing, so a value wrapped over two lines is found too."""
        if not values:
            return []
        if len(values) == 1:
            start, end = values[0]
            return self.name_spans(region[start:end], base=start) if names else []
        pieces = [region[a:b] for a, b in values]
        spans: list[Span] = []
        if names:
            spans += _onto_lines(self.name_spans(b"\n".join(pieces)), values, 1)
        if self.needles is not None:
            spans += _onto_lines(self.value_spans(b"".join(pieces)), values, 0)
        return spans

    # -- whole values --------------------------------------------------------------------

    def text(self, data: bytes) -> bytes:
        return apply(data, self.spans(data))

    def string(self, value: str) -> str:
        raw = value.encode("utf-8", "surrogateescape")
        spans = self.spans(raw)
        return apply(raw, spans).decode("utf-8", "surrogateescape") if spans else value

    def headers(self, headers: Headers, learned: list[str] | None = None) -> Headers:
        out = []
        for name, value in headers:
            if self._c.header_name.fullmatch(name.encode("latin-1", "replace")):
                if learned is not None:  # "Bearer S": S may be echoed without its scheme
                    learned.append(value)
                    learned.append(value.split()[-1] if value.split() else value)
                out.append((name, MARKER))
            else:
                raw = value.encode("latin-1", "replace")
                spans = self.spans(raw)
                if learned is not None:
                    learned.extend(_originals(raw, spans))
                out.append((name, apply(raw, spans).decode("latin-1") if spans else value))
        return tuple(out)

    def url(self, url: str, learned: list[str] | None = None) -> str:
        """Userinfo password, secret query/fragment parameters (`&` or `;` separated), path
        parameters and path segments after a credential-named one; then secret values."""
        head, sep, rest = url.partition("://")
        if not sep:
            head, rest = "", url
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        if at and ":" in userinfo:
            user, _, password = userinfo.partition(":")
            if learned is not None:
                learned.append(unquote_plus(password))
            authority = f"{user}:{MARKER}@{host}"
        out = (head + sep if sep else "") + authority + slash + self._path(path, learned)
        raw = out.encode("utf-8", "surrogateescape")
        spans = self.value_spans(raw)
        return apply(raw, spans).decode("utf-8", "surrogateescape") if spans else out

    def _path(self, path: str, learned: list[str] | None) -> str:
        segments = path.split("/")
        for i in range(1, len(segments)):
            before = segments[i - 1].split("?", 1)[0]
            if (segments[i] and "?" not in before and "#" not in before
                    and self._c.path_name.fullmatch(unquote_plus(before).encode())):
                if learned is not None:
                    learned.append(unquote_plus(segments[i].split("?", 1)[0]))
                tail = segments[i].partition("?")
                segments[i] = MARKER + tail[1] + tail[2]
        path = "/".join(segments)
        parts = re.split(r"([?&;#])", path)
        in_query = False
        for i in range(2, len(parts), 2):  # every "name=value" after a separator
            in_query = in_query or parts[i - 1] in "?#"
            name, eq, value = parts[i].partition("=")
            # a path parameter (/p;api_key=S/x) ends at the next segment
            value, slash, rest = (value, "", "") if in_query else value.partition("/")
            if eq and value and self._c.param_name.fullmatch(
                unquote_plus(name).encode("utf-8", "surrogateescape")
            ):
                if learned is not None:
                    learned.append(unquote_plus(value))
                parts[i] = f"{name}={MARKER}{slash}{rest}"
        return "".join(parts)

    def request(self, request: RecordedRequest, decoded_body: bytes | None = None
                ) -> tuple[RecordedRequest, Scrubber]:
        """The request redacted, and the scrubber for the rest of its interaction: it also
        knows every value the names took out, so an echo of them is found anywhere."""
        learned: list[str] = []
        headers = self.headers(request.headers, learned)
        url = self.url(request.url, learned)
        body = request.body if decoded_body is None else decoded_body
        spans = self.name_spans(body)
        learned.extend(_originals(body, spans))
        body = apply(body, _merge(spans))
        scrub = self.learn(learned)
        if scrub.needles is not None:  # the values, wherever else they are in the request
            headers = tuple((n, v if v == MARKER else scrub.string(v)) for n, v in headers)
            url = scrub.url(url)
            body = scrub.text(body)
        return RecordedRequest(request.method, url, headers, body, request.http_version), scrub

    def learn(self, learned: Iterable[str]) -> Scrubber:
        """This scrubber plus more values to scrub (too short ones are left out)."""
        known = set(self.values)
        fresh = tuple(dict.fromkeys(
            v for v in (v.strip() for v in learned)
            if len(v) >= MIN_LEARNED and MARKER not in v and v not in known
        ))
        return Scrubber(self._c, self.values + fresh) if fresh else self


def _onto_lines(found: list[Span], values: list[tuple[int, int]], gap: int) -> list[Span]:
    """Map spans of the data lines' values joined (with `gap` bytes between them) back
    onto the lines: the first part takes the replacement, the others are emptied."""
    if not found:
        return []
    starts: list[int] = []
    offset = 0
    for a, b in values:
        starts.append(offset)
        offset += b - a + gap
    spans: list[Span] = []
    for s, e, replacement in _merge(found):
        first = True
        for (a, b), t in zip(values, starts, strict=True):
            lo, hi = max(s, t), min(e, t + b - a)
            if lo < hi:
                spans.append((a + lo - t, a + hi - t, replacement if first else b""))
                first = False
    return spans


def _originals(data: bytes, spans: list[Span]) -> list[str]:
    """The plain values that spans took out (strings unquoted), to be scrubbed elsewhere."""
    out = []
    for start, end, _ in spans:
        value = data[start:end].strip(b'"\\')
        if value[:1] not in (b"{", b"["):
            out.append(value.decode("utf-8", "replace"))
            if b"%" in value or b"+" in value:
                out.append(unquote_plus(value.decode("utf-8", "replace")))
    return out


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, non-overlapping spans (overlapping ones become one)."""
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s[0], -s[1]))
    out = [spans[0]]
    for span in spans[1:]:
        last = out[-1]
        if span[0] < last[1]:
            if span[1] > last[1]:
                out[-1] = (last[0], span[1], last[2] or span[2])
        else:
            out.append(span)
    return out


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _keep_line_ends(spans: list[Span], region: bytes) -> list[Span]:
    """A span over several lines replaces each line's part, keeping the line ends (so the
    stream keeps its events); a line that had text keeps some."""
    out: list[Span] = []
    for start, end, replacement in spans:
        if not _LINE_END.search(region, start, end):
            out.append((start, end, replacement))
            continue
        pos = start
        for m in _LINE_END.finditer(region, start, end):
            if m.start() > pos:
                out.append((pos, m.start(), replacement if pos == start else _MARK))
            pos = m.end()
        if end > pos:
            out.append((pos, end, _MARK))
    return out


def apply(data: bytes, spans: list[Span]) -> bytes:
    if not spans:
        return data
    out = bytearray()
    cut = 0
    for start, end, replacement in spans:
        out += data[cut:start]
        out += replacement
        cut = end
    out += data[cut:]
    return bytes(out)


def split_like(datas: list[bytes], spans: list[Span]) -> list[bytes]:
    """Apply spans to the concatenation of chunks, keeping the chunk count (so their times
    stay theirs): a boundary inside a replaced span moves in proportion within the
    replacement."""
    if not spans:
        return datas
    region = datas[0] if len(datas) == 1 else b"".join(datas)
    boundaries: list[int] = []
    span_iter = iter(spans)
    span = next(span_iter, None)
    shift = 0
    for end in accumulate(map(len, datas[:-1])):
        while span is not None and span[1] <= end:
            shift += len(span[2]) - (span[1] - span[0])
            span = next(span_iter, None)
        if span is not None and span[0] < end < span[1]:
            fraction = (end - span[0]) / (span[1] - span[0])
            boundaries.append(span[0] + shift + round(fraction * len(span[2])))
        else:
            boundaries.append(end + shift)
    out = apply(region, spans)
    return [out[a:b] for a, b in zip([0, *boundaries], [*boundaries, len(out)], strict=True)]


# -- content codings ------------------------------------------------------------------------


class _Zlib:
    """gzip (every member) or deflate (zlib-wrapped, or raw as some servers send it)."""

    def __init__(self, wbits: int) -> None:
        self.wbits = wbits
        self.obj: zlib._Decompress | None = None

    def process(self, data: bytes, limit: int) -> bytes:
        out = bytearray()
        while data:
            if self.obj is None:
                wbits = self.wbits
                if wbits == zlib.MAX_WBITS and (data[0] & 0x0F) != 8:
                    wbits = -zlib.MAX_WBITS  # raw deflate
                self.obj = zlib.decompressobj(wbits)
            out += self.obj.decompress(data, max(limit - len(out), 1))
            if len(out) >= limit:
                raise ValueError("decoded body too large")
            if self.obj.eof:  # a gzip member ended: another may follow
                data = self.obj.unused_data
                self.obj = None
            else:
                data = self.obj.unconsumed_tail
        return bytes(out)


class _Brotli:
    def __init__(self) -> None:
        assert brotli is not None
        self.obj = brotli.Decompressor()

    def process(self, data: bytes, limit: int) -> bytes:
        out: bytes = self.obj.process(data, output_buffer_limit=limit)
        if not self.obj.can_accept_more_data() and data:
            raise ValueError("decoded body too large")
        return out


_CODINGS: dict[str, Callable[[], _Zlib | _Brotli]] = {
    "gzip": lambda: _Zlib(31),
    "x-gzip": lambda: _Zlib(31),
    "deflate": lambda: _Zlib(zlib.MAX_WBITS),
}
if brotli is not None:
    _CODINGS["br"] = _Brotli


def content_codings(headers: Headers) -> list[str] | None:
    """The body's content codings in the order applied ([] for identity); None when one of
    them cannot be decoded here."""
    codings = content_codings_named(headers)
    return codings if all(c in _CODINGS for c in codings) else None


class StreamDecoder:
    """Decodes a body chunk by chunk (codings undone in reverse order)."""

    def __init__(self, codings: list[str]) -> None:
        self.steps = [_CODINGS[c]() for c in reversed(codings)]
        self.failed = False

    def decode(self, data: bytes) -> bytes:
        if self.failed:
            return b""
        limit = MAX_DECODED
        try:
            for step in self.steps:
                data = step.process(data, limit)
        except Exception:  # noqa: BLE001 - zlib.error, brotli.error, too large
            self.failed = True
            return b""
        return data


def decode_body(data: bytes, codings: list[str]) -> bytes | None:
    """A whole body decoded, or None if it is damaged or decodes to more than MAX_DECODED."""
    decoder = StreamDecoder(codings)
    out = decoder.decode(data)
    return None if decoder.failed else out


def without_coding(headers: Headers, size: int | None) -> Headers:
    """Headers of a body now stored decoded: no Content-Encoding; a Content-Length, if any,
    set to `size` (None: dropped)."""
    out = []
    for name, value in headers:
        low = name.lower()
        if low == "content-encoding":
            continue
        if low == "content-length":
            if size is None:
                continue
            value = str(size)
        out.append((name, value))
    return tuple(out)

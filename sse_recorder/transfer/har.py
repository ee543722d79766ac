"""HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) in and out.

Written: the standard fields a HAR viewer shows (request, response, body text, timings),
plus one custom field per entry, `_sseRecorder`, holding what HAR has no field for: the
exact start time, the chunk boundaries with their offsets in ns, the head offset and the
ending. A HAR with that field reads back losslessly.

Read without it (browsers, mitmproxy's `hardump`): one chunk per body, arriving when the
entry's `timings` say the response was received (`send + wait + receive`), the head at
`send + wait`; the body text is the decoded one, so a `Content-Encoding` header is dropped
and `Content-Length` set to the body's size; HTTP/2 pseudo-headers (`:path`) are dropped.
An entry without its body (an event stream with no text: hardump keeps no streamed body,
browsers none of an event stream) is imported with its head only, as a body cut short
(`closed`), with a warning.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

from sse_recorder import __version__
from sse_recorder.model import (
    Outcome,
    RecordedRequest,
    ResponseHead,
    header_value,
    is_event_stream,
)
from sse_recorder.record.redact import without_coding
from sse_recorder.transfer import TransferError
from sse_recorder.transfer.exchange import Exchange, Imported, head_text

CUSTOM = "_sseRecorder"
CUSTOM_VERSION = 1
_VERSIONS = {"h2": "HTTP/2.0", "h3": "HTTP/3", "": "HTTP/1.1"}  # browsers' spellings


def _ms(ns: int) -> float:
    return ns / 1e6


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _text(data: bytes) -> dict[str, str]:
    """A body as HAR carries it: the text, or base64 where it is not UTF-8."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def _pairs(headers: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in headers]


def _entry(exchange: Exchange) -> dict[str, Any]:
    request, response = exchange.request, exchange.response
    head = exchange.head_offset_ns or 0
    end = exchange.end_offset_ns if exchange.end_offset_ns is not None else (
        exchange.chunks[-1][0] if exchange.chunks else head)
    body = exchange.body
    har_request: dict[str, Any] = {
        "method": request.method, "url": request.url, "httpVersion": request.http_version,
        "cookies": [], "headers": _pairs(request.headers),
        "queryString": [{"name": n, "value": v} for n, v in
                        parse_qsl(urlsplit(request.url).query, keep_blank_values=True)],
        "headersSize": -1, "bodySize": len(request.body),
    }
    if request.body:
        text = _text(request.body)
        har_request["postData"] = {
            "mimeType": header_value(request.headers, "content-type") or "",
            "text": text["text"], **({"_encoding": "base64"} if "encoding" in text else {})}
    if response is None:
        har_response: dict[str, Any] = {
            "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
            "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1,
            "bodySize": -1, "_error": exchange.error}
    else:
        har_response = {
            "status": response.status, "statusText": response.reason,
            "httpVersion": response.http_version, "cookies": [],
            "headers": _pairs(response.headers),
            "content": {"size": len(body),
                        "mimeType": header_value(response.headers, "content-type") or "",
                        **_text(body)},
            "redirectURL": header_value(response.headers, "location") or "",
            "headersSize": -1, "bodySize": len(body)}
    return {
        "startedDateTime": _iso(exchange.started_at),
        "time": _ms(max(end, head)),
        "request": har_request,
        "response": har_response,
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0,
                    "wait": _ms(head), "receive": _ms(max(end - head, 0))},
        CUSTOM: {
            "version": CUSTOM_VERSION,
            "startedAt": exchange.started_at,
            "headOffsetNs": exchange.head_offset_ns,
            "chunks": [[offset, len(data)] for offset, data in exchange.chunks],
            "outcome": exchange.outcome.value,
            "endOffsetNs": exchange.end_offset_ns,
            "error": exchange.error,
        },
    }


def dump(exchanges: Sequence[Exchange]) -> bytes:
    document = {"log": {
        "version": "1.2",
        "creator": {"name": "sse-recorder", "version": __version__},
        "pages": [],
        "entries": [_entry(exchange) for exchange in exchanges],
    }}
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- reading --------------------------------------------------------------------------------


class _Place:
    """Where in the document a value is, for the one-line error that names it."""

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path

    def at(self, key: str | int) -> _Place:
        return _Place(self.name, f"{self.path}[{key}]" if isinstance(key, int)
                      else f"{self.path}.{key}")

    def fail(self, message: str) -> NoReturn:
        raise TransferError(f"{self.name}: {self.path}: {message}")

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
            default: Any = ...) -> Any:
        value = obj.get(key, default)
        if value is ...:
            self.at(key).fail("missing")
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            self.at(key).fail(f"is {type(value).__name__}, not {_KINDS.get(names, names)}")
        return value


_KINDS = {"str": "a string", "dict": "an object", "list": "a list", "int": "an integer",
          "int or float": "a number"}
_NUMBER = (int, float)


def _headers(place: _Place, entries: list[Any], foreign: bool) -> tuple[tuple[str, str], ...]:
    pairs = []
    for index, item in enumerate(entries):
        where = place.at(index)
        if not isinstance(item, dict):
            where.fail("is not an object with name and value")
        name, value = where.get(item, "name", str), where.get(item, "value", str)
        if foreign and name.startswith(":"):
            continue  # HTTP/2 pseudo-headers: the method, URL and status say them already
        if not name or any(c in name + value for c in "\r\n\0"):
            where.fail("a header holds an empty name, or a CR, LF or NUL")
        pairs.append((head_text(name), head_text(value)))
    return tuple(pairs)


def _version(text: str) -> str:
    return _VERSIONS.get(text.lower(), text.upper())


def _decode(place: _Place, text: str, base64_encoded: bool) -> bytes:
    if not base64_encoded:
        return text.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        place.fail("is not base64")


def _ns(ms: float) -> int:
    return max(round(ms * 1e6), 0)


def _read_entry(place: _Place, entry: Any) -> tuple[Exchange, str | None]:
    if not isinstance(entry, dict):
        place.fail("is not an object")
    custom = entry.get(CUSTOM)
    foreign = not isinstance(custom, dict)
    har_request = place.get(entry, "request", dict)
    har_response = place.get(entry, "response", dict)
    where_request, where_response = place.at("request"), place.at("response")
    method = where_request.get(har_request, "method", str)
    if not method or any(c.isspace() or not c.isprintable() for c in method):
        where_request.at("method").fail(f"is not an HTTP method: {method[:20]!r}")
    url = where_request.get(har_request, "url", str)
    headers = _headers(where_request.at("headers"),
                       where_request.get(har_request, "headers", list), foreign)
    body = b""
    post = where_request.get(har_request, "postData", dict, None)
    if post is not None:
        where = where_request.at("postData")
        body = _decode(where.at("text"), where.get(post, "text", str, ""),
                       "base64" in (post.get("_encoding"), post.get("encoding")))
    request = RecordedRequest(method, url, headers, body,
                              _version(where_request.get(har_request, "httpVersion", str, "")))
    started = place.get(entry, "startedDateTime", str)
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        place.at("startedDateTime").fail(f"is not an ISO 8601 time: {started[:40]!r}")
    started_at = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if started_at < 0:
        place.at("startedDateTime").fail(f"is before 1970: {started}")
    status = where_response.get(har_response, "status", int)
    content = where_response.get(har_response, "content", dict, {})
    where_content = where_response.at("content")
    text = where_content.get(content, "text", str, None)
    data = b"" if text is None else _decode(where_content.at("text"), text,
                                            content.get("encoding") == "base64")
    response = None
    if status:
        if not 100 <= status <= 999:
            where_response.at("status").fail(f"is {status}, not from 100 to 999")
        response = ResponseHead(
            status, head_text(where_response.get(har_response, "statusText", str, "")),
            _headers(where_response.at("headers"),
                     where_response.get(har_response, "headers", list), foreign),
            _version(where_response.get(har_response, "httpVersion", str, "")))
    if isinstance(custom, dict):
        return _lossless(place.at(CUSTOM), custom, request, response, data), None
    return _foreign(place, entry, request, response, started_at, data, text is None,
                    content.get("size"))


def _lossless(place: _Place, custom: dict[str, Any], request: RecordedRequest,
              response: ResponseHead | None, data: bytes) -> Exchange:
    if custom.get("version") != CUSTOM_VERSION:
        place.at("version").fail(f"is {custom.get('version')!r}: this sse-recorder reads "
                                 f"version {CUSTOM_VERSION}")
    chunks = []
    position = 0
    for index, item in enumerate(place.get(custom, "chunks", list)):
        if (not isinstance(item, list) or len(item) != 2 or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in item)):
            place.at("chunks").at(index).fail("is not [offset_ns, size]")
        chunks.append((item[0], data[position:position + item[1]]))
        position += item[1]
    if position != len(data):
        place.at("chunks").fail(f"cover {position} bytes, but the body has {len(data)}")
    outcome_name = place.get(custom, "outcome", str)
    try:
        outcome = Outcome(outcome_name)
    except ValueError:
        place.at("outcome").fail(f"is {outcome_name!r}, not one of "
                                 f"{', '.join(o.value for o in Outcome)}")
    started_at = place.get(custom, "startedAt", _NUMBER)
    head = place.get(custom, "headOffsetNs", int, None)
    end = place.get(custom, "endOffsetNs", int, None)
    for key, value in (("startedAt", started_at), ("headOffsetNs", head),
                       ("endOffsetNs", end)):
        if value is not None and value < 0:
            place.at(key).fail(f"is {value}, below 0")
    return Exchange(request, float(started_at), response, head, tuple(chunks), outcome, end,
                    place.get(custom, "error", str, None))


def _foreign(place: _Place, entry: dict[str, Any], request: RecordedRequest,
             response: ResponseHead | None, started_at: float, data: bytes, no_text: bool,
             size: Any) -> tuple[Exchange, str | None]:
    timings = place.get(entry, "timings", dict, {})
    where = place.at("timings")
    send, wait, receive = (max(where.get(timings, key, _NUMBER, 0), 0)
                           for key in ("send", "wait", "receive"))
    head = _ns(send + wait)
    end = _ns(send + wait + receive)
    if response is None:
        error = entry.get("response", {}).get("_error")
        return Exchange(request, started_at, None, None, (), Outcome.PROXY_ERROR, end,
                        error if isinstance(error, str) else "no response"), None
    if header_value(response.headers, "content-encoding") is not None:  # text is decoded
        response = ResponseHead(response.status, response.reason,
                                without_coding(response.headers, len(data)),
                                response.http_version)
    if (no_text and isinstance(size, int) and size > 0) or (
            not data and is_event_stream(response.headers)):
        note = ("the HAR holds no body for this response (mitmproxy's hardump keeps no "
                "streamed body, browsers none of an event stream): imported with its head "
                "only, as a body cut short")
        return (Exchange(request, started_at, response, head, (), Outcome.CLOSED, end, note),
                f"{place.path} ({request.method} {request.url}): {note}")
    chunks = ((end, data),) if data else ()
    return Exchange(request, started_at, response, head, chunks, Outcome.CLEAN, end), None


def load(data: bytes, name: str) -> Imported:
    """The exchanges of a HAR file (zlib-compressed `.zhar` too, as mitmproxy writes)."""
    if data[:1] == b"\x78":
        try:
            data = zlib.decompress(data)
        except zlib.error:
            raise TransferError(f"{name}: not a HAR file (not JSON, and not a zlib-compressed "
                                "one)") from None
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise TransferError(f"{name}: not a HAR file: byte {exc.start} is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise TransferError(f"{name}: line {exc.lineno}, column {exc.colno}: not JSON "
                            f"({exc.msg}): a HAR file is one JSON document") from None
    root = _Place(name, "log")
    if not isinstance(document, dict) or not isinstance(document.get("log"), dict):
        raise TransferError(f"{name}: not a HAR file: no top-level \"log\" object")
    entries = root.get(document["log"], "entries", list)
    imported = Imported()
    for index, entry in enumerate(entries):
        exchange, warning = _read_entry(root.at("entries").at(index), entry)
        imported.exchanges.append(exchange)
        if warning:
            imported.warnings.append(warning)
    return imported

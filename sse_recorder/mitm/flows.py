"""mitmproxy flow files in and out, through mitmproxy's own `io` (FlowReader/FlowWriter).

Written: one HTTP flow per interaction, with the request, the response (its body the
chunks joined) and mitmproxy's timestamps, so mitmproxy's UI shows it as recorded; an
ending other than clean is the flow's error. What a flow has no field for (the chunk
boundaries and offsets in ns, the head offset, the ending, the exact URL) is in
`flow.metadata["sse-recorder"]`, which mitmproxy keeps in the file: such a file reads back
losslessly.

Read without it (a `mitmdump -w` recording): one chunk per body, arriving at the response's
`timestamp_end`, the head at its `timestamp_start` (both from the request's start). A
streamed body (`stream_large_bodies`, or an addon setting `flow.response.stream`) is not
stored by mitmproxy unless `store_streamed_bodies` is set: such a flow is imported with its
head only, as a body cut short (`closed`), with a warning saying so. Flows that are not HTTP
(TCP, UDP, DNS) and WebSocket messages are left out, with a warning.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, exceptions, http
from mitmproxy import flow as mflow
from mitmproxy.io import FlowReader, FlowWriter

from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
from sse_recorder.transfer import TransferError
from sse_recorder.transfer.exchange import Exchange, Imported

KEY = "sse-recorder"
VERSION = 1
NOT_STORED = ("mitmproxy did not store this streamed body (it keeps streamed bodies only "
              "with --set store_streamed_bodies=true): imported with its head only, as a "
              "body cut short")


def _fields(headers: tuple[tuple[str, str], ...]) -> http.Headers:
    return http.Headers([(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers])


def _flow(exchange: Exchange) -> http.HTTPFlow:
    request, response = exchange.request, exchange.response
    parts = urlsplit(request.url)
    scheme = (parts.scheme or "http").lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 443 if scheme == "https" else 80
    host = parts.hostname or ""
    start = exchange.started_at
    client = connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0),
                               timestamp_start=start)
    flow = http.HTTPFlow(client, connection.Server(address=(host, port)))
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    flow.request = http.Request(
        host, port, request.method.encode("latin-1"), scheme.encode(), b"",
        path.encode("utf-8", "surrogateescape"), request.http_version.encode("latin-1"),
        _fields(request.headers), request.body, None, start, start)
    if response is not None:
        head = start + (exchange.head_offset_ns or 0) / 1e9
        end = exchange.end_offset_ns if exchange.end_offset_ns is not None else (
            exchange.chunks[-1][0] if exchange.chunks else None)
        flow.response = http.Response(
            response.http_version.encode("latin-1"), response.status,
            response.reason.encode("latin-1"), _fields(response.headers), exchange.body, None,
            head, None if end is None else start + end / 1e9)
    if exchange.outcome is not Outcome.CLEAN:
        flow.error = mflow.Error(exchange.error or exchange.outcome.value,
                                 start + (exchange.end_offset_ns or 0) / 1e9)
    flow.metadata[KEY] = {
        "version": VERSION,
        "url": request.url,
        "started_at": exchange.started_at,
        "head_offset_ns": exchange.head_offset_ns,
        "chunks": [[offset, len(data)] for offset, data in exchange.chunks],
        "outcome": exchange.outcome.value,
        "end_offset_ns": exchange.end_offset_ns,
        "error": exchange.error,
    }
    return flow


def dump(exchanges: Sequence[Exchange]) -> bytes:
    out = io.BytesIO()
    writer = FlowWriter(out)
    for exchange in exchanges:
        writer.add(_flow(exchange))
    return out.getvalue()


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _pairs(headers: http.Headers) -> tuple[tuple[str, str], ...]:
    return tuple((_text(n), _text(v)) for n, v in headers.fields)


def _ns(seconds: float) -> int:
    return max(round(seconds * 1e9), 0)


def _exchange(flow: http.HTTPFlow, where: str) -> tuple[Exchange, str | None]:
    req, resp = flow.request, flow.response
    saved: Any = flow.metadata.get(KEY)
    lossless = isinstance(saved, dict) and saved.get("version") == VERSION
    request = RecordedRequest(req.method, saved["url"] if lossless else req.url,
                              _pairs(req.headers), req.raw_content or b"", req.http_version)
    response = None if resp is None else ResponseHead(
        resp.status_code, resp.reason, _pairs(resp.headers), resp.http_version)
    body = (resp.raw_content if resp is not None else None) or b""
    if lossless:
        chunks, position = [], 0
        for offset, size in saved["chunks"]:
            chunks.append((offset, body[position:position + size]))
            position += size
        if position != len(body):
            raise TransferError(f"{where}: its sse-recorder metadata covers {position} bytes, "
                                f"but the body has {len(body)}")
        return Exchange(request, saved["started_at"], response, saved["head_offset_ns"],
                        tuple(chunks), Outcome(saved["outcome"]), saved["end_offset_ns"],
                        saved["error"]), None
    start = req.timestamp_start
    error = flow.error.msg if flow.error is not None else None
    if resp is None:
        end = _ns(flow.error.timestamp - start) if flow.error is not None else None
        return Exchange(request, start, None, None, (), Outcome.PROXY_ERROR, end,
                        error or "no response"), None
    head = _ns(resp.timestamp_start - start)
    end = _ns((resp.timestamp_end or resp.timestamp_start) - start)
    if resp.raw_content is None:
        # no body kept: the upstream failed on the way (its error says so), or a streamed
        # body was not stored
        why = f"{error}: imported with its head only" if error is not None else NOT_STORED
        return (Exchange(request, start, response, head, (), Outcome.CLOSED, end, why),
                f"{where} ({request.method} {request.url}): {why}")
    outcome = Outcome.CLEAN if error is None else Outcome.CLOSED
    return Exchange(request, start, response, head, ((end, body),) if body else (), outcome,
                    end, error), None


def load(data: bytes, name: str) -> Imported:
    stream = io.BytesIO(data)
    imported = Imported()
    read = 0
    flows = iter(FlowReader(stream).stream())
    while True:
        at = stream.tell()
        try:
            flow = next(flows, None)
        except (exceptions.FlowReadException, ValueError, TypeError, KeyError) as exc:
            raise TransferError(f"{name}: flow {read + 1} (from byte {at}): not a readable "
                                f"mitmproxy flow, truncated or damaged "
                                f"({str(exc)[:100] or type(exc).__name__})") from None
        if flow is None:
            break
        read += 1
        where = f"{name}: flow {read}"
        if not isinstance(flow, http.HTTPFlow):
            imported.warnings.append(f"{where}: a {flow.type} flow, not HTTP: left out")
            continue
        if flow.websocket is not None:
            imported.warnings.append(f"{where}: its WebSocket messages are left out")
        try:
            exchange, warning = _exchange(flow, where)
        except (KeyError, TypeError, ValueError) as exc:
            raise TransferError(f"{where}: damaged sse-recorder metadata ({exc})") from None
        imported.exchanges.append(exchange)
        if warning:
            imported.warnings.append(warning)
    if not imported.exchanges and not imported.warnings:
        raise TransferError(f"{name}: holds no flow")
    return imported

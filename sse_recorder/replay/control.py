"""The control API: a running replay server's faults and records over HTTP/JSON, as
Toxiproxy's API drives its toxics, so a test in any language can run an experiment step by
step.

Rules:
- off unless `replay --control-port`; its own listener, on a loopback address unless forced
  (`check_host`): whoever reaches it decides what every client of the replay gets. A
  request with an `Origin` (a web page's) or a `Host` that is not a loopback name is
  refused, so no page a browser visits can drive it (cross-site or by DNS rebinding);
- faults are added in the spec language through the same parser as `--fault` (a spec as
  the body, or JSON: `{"spec": ...}` or a `[[fault]]`-style table), so the errors are the
  same one line, answered as a 400; each fault has an id, and is removed by it;
- a change applies to responses that start after it: the server draws a response's faults
  from the plan in play when it starts (a stream under way keeps the faults it had);
- the served records (`records.py`) are read with a cursor: `seq` numbers every record the
  server made, `since=N` returns those from N on, and `wait=T` holds the request until one
  arrives (at most T), so a client never sleeps to find out;
- every answer is JSON; whatever is wrong with a request is a 4xx whose `error` says what.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from sse_recorder.errors import ConfigError
from sse_recorder.faults.spec import Fault, parse_spec, parse_table
from sse_recorder.model import header_value
from sse_recorder.replay.matching import host_of, split_url
from sse_recorder.replay.records import Served
from sse_recorder.replay.server import ReplayServer
from sse_recorder.units import parse_duration
from sse_recorder.wire import responses
from sse_recorder.wire.connections import base_url, close_after_error, keeps_alive, stop_serving
from sse_recorder.wire.requests import BadRequest, Limits, Request, RequestReader

__all__ = ["ControlServer", "check_host"]

LIMITS = Limits(head=10.0, body_idle=10.0, idle=75.0, max_body=1 << 20)
MAX_WAIT = 300.0  # seconds a `wait=` may hold a request
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
JSON_TYPE = ("Content-Type", "application/json")
ADD_HELP = ("POST /faults takes a fault: a spec as the body (drop:after_event=3), or JSON, "
            '{"spec": "drop:after_event=3"} or {"type": "drop", "after_event": 3}')


class Refused(Exception):
    """A request the API answers with a 4xx and `error`."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) can only be reached from this machine."""
    name = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name.lower() in LOOPBACK_NAMES


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse to serve the control API beyond this machine unless told to."""
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"--control-host {host} is not a loopback address: whoever reaches the control "
            "API decides the faults every client gets (add --control-allow-remote to serve "
            "it there anyway)")


@dataclass(frozen=True)
class Call:
    """One request to the API, parsed: the path's fault id, the query, the body."""

    request: Request
    query: dict[str, str]
    fault_id: int | None = None


Reply = tuple[int, Any]  # status, JSON document
Handler = Callable[["ControlServer", Call], Awaitable[Reply]]


class ControlServer:
    """The control API of one `ReplayServer`. `await start()`, then `url`; `await close()`."""

    def __init__(self, replay: ReplayServer, allow_remote: bool = False) -> None:
        self.replay = replay
        self.allow_remote = allow_remote
        self._next_id = max(replay.faults.ids, default=0) + 1
        self._arrived = asyncio.Event()  # set (and replaced) when a record arrives
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        logged = replay.on_served

        def on_served(served: Served) -> None:
            if logged is not None:
                logged(served)
            self._arrived.set()
            self._arrived = asyncio.Event()

        replay.on_served = on_served

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ControlServer:
        check_host(host, self.allow_remote)
        self._server = await asyncio.start_server(self._connection, host, port)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return base_url(str(host), int(port))

    async def close(self) -> None:
        if self._server is not None:
            await stop_serving([self._server], self._tasks)
            self._server = None

    # -- HTTP ------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        requests = RequestReader()
        try:
            while True:
                try:
                    request = await requests.read(reader, LIMITS, None, writer)
                except BadRequest as exc:
                    writer.write(responses.bad_request(exc.status, str(exc)))
                    await close_after_error(reader, writer, 1.0)
                    return
                if request is None:
                    return
                status, document, headers = await self._answer(request)
                persist = keeps_alive(request.http_version, request.headers)
                body = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
                writer.write(responses.whole(
                    status, responses.reason_of(status), [JSON_TYPE, *headers], body,
                    responses.connection_field(persist, request.http_version),
                    request.method == "HEAD"))
                await writer.drain()
                if not persist:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            requests.close()
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(self, request: Request) -> tuple[int, Any, tuple[tuple[str, str], ...]]:
        """The status, JSON document and extra header fields answering `request`."""
        try:
            self._guard(request)
            handler, call = self._route(request)
            status, document = await handler(self, call)
            return status, document, ()
        except Refused as exc:
            return exc.status, {"error": str(exc)}, exc.headers
        except Exception as exc:  # a bug: one line, never a traceback, the API goes on
            return 500, {"error": f"sse-recorder: internal error: {type(exc).__name__}: "
                                  + " ".join(str(exc).split())[:200]}, ()

    def _guard(self, request: Request) -> None:
        """No web page may drive the API: not cross-site, not through DNS rebinding."""
        if header_value(request.headers, "origin") is not None:
            raise Refused(403, "the control API does not answer web pages (the request "
                               "has an Origin)")
        host = host_of(header_value(request.headers, "host") or "")
        if not self.allow_remote and not is_loopback(host):
            raise Refused(403, f"Host {host or '(none)'} is not a loopback name: use the "
                               "address the control API printed")

    def _route(self, request: Request) -> tuple[Handler, Call]:
        _, _, path, query = split_url(request.target)
        parts = [part for part in path.split("/") if part]
        fault_id = None
        if len(parts) == 2 and parts[0] == "faults":
            if not parts[1].isdigit():
                raise Refused(404, f"no fault {parts[1]!r}: faults are named by their id, "
                                   "a number (GET /faults lists them)")
            fault_id, parts = int(parts[1]), ["faults", "{id}"]
        path = "/" + "/".join(parts)
        methods = ROUTES.get(path)
        if methods is None:
            raise Refused(404, f"no such endpoint {path}; the API has "
                               + ", ".join(f"{m} {p}" for p, ms in ROUTES.items() for m in ms))
        method = "GET" if request.method == "HEAD" else request.method
        if method not in methods:
            allowed = ", ".join(methods)
            raise Refused(405, f"{path} takes {allowed}, not {request.method}",
                          (("Allow", allowed),))
        values = {key: items[-1] for key, items in parse_qs(query).items()}
        return methods[method], Call(request, values, fault_id)

    # -- endpoints -------------------------------------------------------------------------

    async def index(self, call: Call) -> Reply:
        return 200, {  # (with --proxy, the replay starts listening a moment later)
            "replay": self.replay.base_url if self.replay.listening else None,
            "faults": len(self.replay.faults.faults),
            "served": self._total(), "active_streams": self.replay.active_streams,
            "endpoints": {f"{method} {path}": ENDPOINT_HELP[(method, path)]
                          for path, methods in ROUTES.items() for method in methods},
        }

    async def list_faults(self, call: Call) -> Reply:
        plan = self.replay.faults
        return 200, {"seed": plan.seed, "faults": [
            _entry(i, f) for i, f in zip(plan.ids, plan.faults, strict=True)]}

    async def add_fault(self, call: Call) -> Reply:
        fault = read_fault(call.request.body)
        fault_id, self._next_id = self._next_id, self._next_id + 1
        self.replay.faults = self.replay.faults.adding(fault, fault_id)
        one = type(self.replay.faults)((fault,))
        warnings = one.unreachable(self.replay.matcher.interactions)
        return 201, {**_entry(fault_id, fault), "warnings": warnings}

    async def get_fault(self, call: Call) -> Reply:
        return 200, _entry(call.fault_id, self._fault(call.fault_id))

    async def remove_fault(self, call: Call) -> Reply:
        fault = self._fault(call.fault_id)
        self.replay.faults = self.replay.faults.removing(call.fault_id or 0)
        return 200, {"removed": _entry(call.fault_id, fault)}

    async def clear_faults(self, call: Call) -> Reply:
        plan = self.replay.faults
        self.replay.faults = type(plan)((), plan.seed)
        return 200, {"removed": [_entry(i, f) for i, f in zip(plan.ids, plan.faults,
                                                               strict=True)]}

    async def served(self, call: Call) -> Reply:
        since = _number(call.query, "since", 0)
        limit = _number(call.query, "limit", 1000)
        wait = _duration(call.query.get("wait", "0"))
        deadline = time.monotonic() + wait
        while self._total() <= since and time.monotonic() < deadline:
            arrived = self._arrived
            try:
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        total = self._total()
        kept = list(self.replay.served)
        first = total - len(kept)  # the seq of the oldest record still kept
        start = max(since, first)
        records = [{"seq": first + index, **served.record()}
                   for index, served in enumerate(kept[start - first:][:limit], start - first)]
        return 200, {"records": records, "next": start + len(records),
                     "missed": max(0, min(first, total) - since)}

    def _total(self) -> int:
        """Records the server has made (every answer is counted, kept or not)."""
        return sum(self.replay.counts.values())

    def _fault(self, fault_id: int | None) -> Fault:
        plan = self.replay.faults
        for i, fault in zip(plan.ids, plan.faults, strict=True):
            if i == fault_id:
                return fault
        ids = ", ".join(map(str, plan.ids)) or "none"
        raise Refused(404, f"no fault {fault_id} (the faults in play: {ids})")


def _entry(fault_id: int | None, fault: Fault) -> dict[str, Any]:
    """A fault as the API shows it."""
    return {"id": fault_id, "spec": fault.spec, "type": fault.type,
            "route": None if fault.route is None else str(fault.route),
            "p": fault.probability, "per": "event" if fault.per_event else "connection",
            "on_resume": fault.on_resume}


def read_fault(body: bytes) -> Fault:
    """A fault from a POST body: a spec, or JSON holding one (see `ADD_HELP`)."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Refused(400, f"the body is not UTF-8 text; {ADD_HELP}") from None
    if not text:
        raise Refused(400, f"no fault given; {ADD_HELP}")
    try:
        if not text.startswith(("{", "[", '"')):  # a spec never starts so
            return parse_spec(text)
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise Refused(400, f"the body is not valid JSON ({exc}); {ADD_HELP}") from None
        if isinstance(value, str):
            return parse_spec(value)
        if isinstance(value, dict) and set(value) == {"spec"} and isinstance(value["spec"],
                                                                             str):
            return parse_spec(value["spec"])
        if isinstance(value, dict) and "type" in value and "spec" not in value:
            return parse_table(value)
        raise Refused(400, f"a JSON body is {{\"spec\": ...}} or a fault table with a type; "
                           f"{ADD_HELP}")
    except ConfigError as exc:
        raise Refused(400, str(exc)) from None


def _number(query: dict[str, str], key: str, default: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    if not text.isdigit():
        raise Refused(400, f"{key}= is a whole number >= 0, not {text!r}")
    return int(text)


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text, "wait=")
    except ConfigError as exc:
        raise Refused(400, str(exc)) from None
    if seconds > MAX_WAIT:
        raise Refused(400, f"wait= is at most {MAX_WAIT:g}s")
    return seconds


# path -> method -> handler; the id in /faults/{id} is a number
ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": ControlServer.index},
    "/faults": {"GET": ControlServer.list_faults, "POST": ControlServer.add_fault,
                "DELETE": ControlServer.clear_faults},
    "/faults/{id}": {"GET": ControlServer.get_fault, "DELETE": ControlServer.remove_fault},
    "/served": {"GET": ControlServer.served},
}
ENDPOINT_HELP = {
    ("GET", "/"): "this summary",
    ("GET", "/faults"): "the faults in play, with their ids, and the seed",
    ("POST", "/faults"): "add a fault (applies to responses that start from now on); "
                         + ADD_HELP.partition(" takes ")[2],
    ("DELETE", "/faults"): "remove every fault",
    ("GET", "/faults/{id}"): "one fault",
    ("DELETE", "/faults/{id}"): "remove one fault (responses under way keep it)",
    ("GET", "/served"): "served records from ?since=SEQ (default 0), at most ?limit=N "
                        "(1000); ?wait=2s holds the request until one arrives",
}

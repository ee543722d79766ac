"""CORS for the replay server: which web pages may read replayed responses (pure: a request
head in, response headers out).

Off by default: a replayer on 127.0.0.1 must not be readable by every site a developer
visits. `--cors ORIGIN` (repeatable, `*` for any) turns it on. Then:
- a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is answered here,
  never matched against recordings: 204 with the requested method and headers allowed, or a
  403 saying which `--cors` would allow the origin;
- every answer (recorded, faulted, unmatched) to an allowed origin carries
  `Access-Control-Allow-Origin` (the origin itself, with `Allow-Credentials`, when it was
  named; `*` otherwise) and exposes every header it has that a page cannot read by default
  (`Retry-After`, rate-limit headers...);
- the recorded `Access-Control-*` headers are dropped first (they name the recorded page's
  origin, which would conflict), and `Vary: Origin` is added when the answer depends on it.
With CORS off, recorded headers are served as recorded (a proxy-mode replay of a
cross-origin page works as it was recorded), and a cross-origin request the recording does
not admit gets its response with a note saying which `--cors` would let the browser read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sse_recorder.errors import ConfigError
from sse_recorder.model import Headers, header_value
from sse_recorder.wire.connections import HOP_BY_HOP

ANY = "*"
MAX_AGE = 600  # seconds a browser may cache a preflight answer
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Response headers a page reads without being told (the Fetch standard's CORS-safelisted
# response header names), and those it never may: neither needs exposing.
SAFELISTED = frozenset({"cache-control", "content-language", "content-length", "content-type",
                        "expires", "last-modified", "pragma"})
FORBIDDEN = frozenset({"set-cookie", "set-cookie2"})
WILDCARD_WARNING = ("--cors '*' lets every web page your browser opens read this replay "
                    "(without credentials); name the page's origin instead where you can")


def normalise_origin(text: str) -> str:
    """An `--cors` value as a browser sends it in `Origin`: lower-case scheme and host, no
    default port, no trailing slash; `*` and `null` as they are. ConfigError if it is not an
    origin (a path, a query, credentials)."""
    text = text.strip()
    if text in (ANY, "null"):
        return text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--cors {text}: bad port") from None
    if (not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query
            or parts.fragment or "@" in parts.netloc or text.endswith("?")):
        raise ConfigError(f"--cors {text}: not an origin; use scheme://host[:port] as the "
                          "page's address bar shows it (e.g. http://localhost:3000), or '*'")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    scheme = parts.scheme.lower()
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        host += f":{port}"
    return f"{scheme}://{host}"


def is_preflight(method: str, headers: Headers) -> bool:
    """A CORS preflight: OPTIONS with an Origin and the method the page wants to use."""
    return (method == "OPTIONS" and header_value(headers, "origin") is not None
            and header_value(headers, "access-control-request-method") is not None)


@dataclass(frozen=True, slots=True)
class Preflight:
    """The answer to a preflight: status, headers, a body explaining a refusal."""

    origin: str
    status: int
    headers: Headers
    explanation: str  # what was allowed, or (a second line) which --cors would allow it

    @property
    def body(self) -> bytes:
        return b"" if self.status < 300 else (self.explanation + "\n").encode()


@dataclass(frozen=True)
class Cors:
    """The CORS policy of one replay server: no origins means off."""

    origins: frozenset[str] = frozenset()
    max_age: int = MAX_AGE

    @classmethod
    def parse(cls, values: Iterable[str]) -> Cors:
        return cls(frozenset(normalise_origin(value) for value in values))

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    @property
    def warnings(self) -> list[str]:
        return [WILDCARD_WARNING] if ANY in self.origins else []

    def allows(self, origin: str) -> bool:
        return ANY in self.origins or origin in self.origins

    def _allow(self, origin: str) -> list[tuple[str, str]]:
        """The Allow-Origin fields for an allowed origin: itself with credentials when it
        was named, else `*` (the spec forbids credentials with `*`)."""
        if origin in self.origins:
            return [("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")]
        return [("Access-Control-Allow-Origin", ANY)]

    def preflight(self, method: str, headers: Headers) -> Preflight | None:
        """The answer to `method headers` if it is a preflight and CORS is on, else None
        (a request for the recordings)."""
        if not self.enabled or not is_preflight(method, headers):
            return None
        origin = header_value(headers, "origin") or ""
        wanted = (header_value(headers, "access-control-request-method") or "").strip()
        if not self.allows(origin):
            return Preflight(origin, 403, (("Content-Type", "text/plain; charset=utf-8"),),
                             f"sse-recorder: CORS preflight for {wanted} from Origin {origin} "
                             f"refused\n{self._add_hint(origin)}")
        fields = self._allow(origin)
        fields.append(("Access-Control-Allow-Methods", wanted))
        asked = header_value(headers, "access-control-request-headers")
        if asked:
            fields.append(("Access-Control-Allow-Headers", asked))
        if (header_value(headers, "access-control-request-private-network") or "") == "true":
            fields.append(("Access-Control-Allow-Private-Network", "true"))
        fields.append(("Access-Control-Max-Age", str(self.max_age)))
        return Preflight(origin, 204, tuple(fields),
                         f"CORS preflight for {wanted} from Origin {origin} allowed by --cors")

    def response_headers(self, request: Headers, response: Iterable[tuple[str, str]]) -> Headers:
        """The head fields to send for `response` to a request with `request`'s headers:
        as recorded with CORS off; with it on, the recorded Access-Control-* fields replaced
        by this policy's (none when the request has no allowed Origin)."""
        fields = tuple(response)
        if not self.enabled:
            return fields
        kept = [(k, v) for k, v in fields if not k.lower().startswith("access-control-")]
        origin = header_value(request, "origin")
        if origin is None or not self.allows(origin):
            return tuple(kept)
        allow = self._allow(origin)
        if any(k.lower() == "vary" and "origin" in v.lower() for k, v in kept):
            allow = [(k, v) for k, v in allow if k != "Vary"]
        exposed = _exposable(kept)
        if exposed:
            allow.append(("Access-Control-Expose-Headers", ", ".join(exposed)))
        return tuple(kept + allow)

    def note(self, method: str, request: Headers, response: Headers = ()) -> str:
        """Why a browser at the request's Origin cannot read the answer, naming the `--cors`
        that would let it; empty when it can (same origin, allowed, or allowed as
        recorded) or when the request is not from a page (no Origin)."""
        origin = header_value(request, "origin")
        if origin is None or _same_origin(origin, header_value(request, "host") or ""):
            return ""
        what = "answer this CORS preflight" if is_preflight(method, request) else "read this"
        if self.enabled:
            return "" if self.allows(origin) else (
                f"a page at Origin {origin} cannot {what}: {self._add_hint(origin)}")
        recorded = header_value(response, "access-control-allow-origin")
        if recorded is not None and recorded.strip() in (ANY, origin):
            return ""
        return (f"a page at Origin {origin} cannot {what} (CORS is off): replay with "
                f"--cors {origin}")

    def _add_hint(self, origin: str) -> str:
        allowed = ", ".join(sorted(self.origins))
        return f"--cors allows {allowed}; add --cors {origin}"


def _exposable(fields: Iterable[tuple[str, str]]) -> list[str]:
    """Header names a page can read only when exposed, once each, in order."""
    names: dict[str, str] = {}
    for name, _ in fields:
        lower = name.lower()
        if lower in SAFELISTED or lower in FORBIDDEN or lower in HOP_BY_HOP or lower == "vary":
            continue
        names.setdefault(lower, name)
    return list(names.values())


def _same_origin(origin: str, host: str) -> bool:
    """Whether `origin` names the host the request was sent to (its Host field): then the
    page is on the replayer's own origin and CORS does not apply."""
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    hostname, _, host_port = host.strip().lower().rpartition(":")
    if not hostname or host_port.endswith("]") or not host_port.isdigit():
        hostname, host_port = host.strip().lower(), str(DEFAULT_PORTS.get(parts.scheme, ""))
    return (parts.hostname or "") == hostname.strip("[]") and str(port) == host_port

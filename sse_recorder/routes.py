"""Route globs shared by the recorder's filters and the replay faults: `[METHOD ]host/path`.

`api.openai.com/v1/*` matches any method; `POST */v1/messages` (or `POST /v1/messages`)
only POSTs to that path on any host. Matching is fnmatch-style on `host + path` (no query
string), case-insensitive for the method and host; an IPv6 host is written as in a URL,
`[::1]/x` (or bare, `::1/x`). The host is the recorded one
(`host_and_path` of the recorded URL) in every mode: never a replay's own address. A spec
that reads as something else (a method glued to the path, a scheme, a port) is an error
naming the spec it probably meant.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from sse_recorder.errors import ConfigError

_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"}


@functools.lru_cache(maxsize=4096)  # a recorded URL is asked about once per response served
def host_and_path(url: str) -> tuple[str, str]:
    """What a route matches in a recorded URL: the host name (lower case, without port)
    and the path; ('', '/') for a URL whose brackets do not pair."""
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.path or "/"
    except ValueError:
        return "", "/"


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # upper case, or "*"
    pattern: str  # glob over host + path

    @classmethod
    def parse(cls, spec: str) -> Route:
        text = spec.strip()
        method = "*"
        head, _, rest = text.partition(" ")
        if rest and head.upper() in _METHODS:
            method, text = head.upper(), rest.strip()
        if not text or " " in text or (not rest and head.upper() in _METHODS - {"*"}):
            raise ConfigError(f"bad route {spec!r}: expected '[METHOD ]host/path-glob'")
        prefix = "" if method == "*" else method + " "
        _, sep, after = text.partition("://")
        if sep:
            raise ConfigError(f"bad route {spec!r}: routes have no scheme, use host/path "
                              f"(did you mean '{prefix}{after}'?)")
        host, slash, path = text.partition("/")
        if slash and host.upper() in _METHODS - {"*"}:  # POST/v1/chat: "POST" is no host
            raise ConfigError(f"bad route {spec!r}: {host} is a method, not a host "
                              f"(did you mean '{host.upper()} /{path}'?)")
        if host.startswith("["):  # an IPv6 address, as URLs write it: [::1]
            address, closed, after = host[1:].partition("]")
            if not closed or not address:
                raise ConfigError(f"bad route {spec!r}: an IPv6 host is written [address], "
                                  "as in a URL")
            if after.startswith(":"):
                raise ConfigError(f"bad route {spec!r}: routes match the host name without a "
                                  f"port (did you mean '{prefix}[{address}]{slash}{path}'?)")
            if after:
                raise ConfigError(f"bad route {spec!r}: an IPv6 host is written [address], "
                                  "as in a URL")
            host = address
            text = host + slash + path
        elif host.count(":") == 1:  # two or more: an IPv6 address without its brackets
            bare = host.rsplit(":", 1)[0] + slash + path
            raise ConfigError(f"bad route {spec!r}: routes match the host name without a port "
                              f"(did you mean '{prefix}{bare}'?)")
        if text.startswith("/"):
            text = "*" + text  # a bare path: any host
        if "/" not in text:
            text += "/*"
        return cls(method, text)

    def __str__(self) -> str:
        host, slash, path = self.pattern.partition("/")
        pattern = f"[{host}]{slash}{path}" if ":" in host else self.pattern
        return pattern if self.method == "*" else f"{self.method} {pattern}"

    def matches(self, method: str, host: str, path: str) -> bool:
        if self.method != "*" and method.upper() != self.method:
            return False
        host_pattern, slash, path_pattern = self.pattern.partition("/")
        return fnmatchcase(host.lower(), host_pattern.lower()) and fnmatchcase(
            path.split("?", 1)[0], slash + path_pattern
        )


@dataclass(frozen=True, slots=True)
class RouteFilter:
    """Include/exclude lists: no include list means everything is included."""

    include: tuple[Route, ...] = ()
    exclude: tuple[Route, ...] = ()

    @classmethod
    def parse(cls, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> RouteFilter:
        return cls(
            tuple(Route.parse(s) for s in include), tuple(Route.parse(s) for s in exclude)
        )

    def allows(self, method: str, host: str, path: str) -> bool:
        if self.include and not any(r.matches(method, host, path) for r in self.include):
            return False
        return not any(r.matches(method, host, path) for r in self.exclude)

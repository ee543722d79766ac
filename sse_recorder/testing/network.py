"""`--sse-block-network`: a test whose client is not pointed at the replay fails.

While the option is on, the test process's `socket.socket.connect`/`connect_ex` and
`socket.create_connection` refuse every internet connection except to the loopback ports the
plugin's own servers listen on (replay server, proxy, recorder) and the hosts the user
allowed, raising `NetworkBlocked` (an OSError, so HTTP clients report it as a connection
error carrying its text) and remembering the attempt so the test fails with it even when a
client retries or swallows the error. Unix sockets are not network and pass.

What it cannot catch: connections made by child processes (the recorder reaching the
upstream is one, on purpose), C extensions and event loops that connect without Python's
socket methods (uvloop, pycurl), and DNS lookups (a blocked client may still resolve a name).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NetworkBlocked(OSError):
    """A connection `--sse-block-network` refused."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def bad_allowed(allowed: Iterable[str]) -> str | None:
    """Why an allowed-hosts entry cannot be read (`host`, `host:port` or a bare IPv6
    address), or None: a typo there blocked the host it meant, silently."""
    for entry in (a.strip() for a in allowed if a.strip()):
        if entry.count(":") == 1:
            host, _, port = entry.partition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                return f"{entry!r}: expected host or host:port (a port from 1 to 65535)"
        elif ":" in entry:
            try:
                ipaddress.IPv6Address(entry.split("%", 1)[0])
            except ValueError:
                return f"{entry!r}: not an IPv6 address (expected host or host:port)"
    return None


def _resolved(allowed: Iterable[str]) -> set[str]:
    """The addresses of allowed host names, in the same form ("ip" or "ip:port"), so the
    connection a name turns into after DNS is allowed too."""
    addresses: set[str] = set()
    for entry in allowed:
        host, colon, port = entry.rpartition(":") if entry.count(":") == 1 else ("", "", entry)
        name = host if colon else port
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            continue
        for info in infos:
            ip = str(info[4][0])
            addresses.add(f"{ip}:{port}" if colon else ip)
    return addresses


class Guard:
    """The patched socket methods and what they allow; one per test process."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        # "host" allows every port of host, "host:port" one port
        self.allowed = frozenset(a.strip().lower() for a in allowed if a.strip())
        self._addresses = self.allowed | _resolved(self.allowed)
        self._owned: dict[int, int] = {}  # loopback port -> servers of live fixtures on it
        self._blocked: list[str] = []
        self._lock = threading.Lock()
        self._saved: dict[str, Any] = {}

    # -- what is allowed --

    def own(self, port: int) -> None:
        """Allow loopback connections to `port` (a server a live fixture started)."""
        with self._lock:
            self._owned[port] = self._owned.get(port, 0) + 1

    def disown(self, port: int) -> None:
        with self._lock:
            left = self._owned.get(port, 0) - 1
            if left > 0:
                self._owned[port] = left
            else:
                self._owned.pop(port, None)

    def allows(self, host: str, port: int) -> bool:
        host = str(host).lower().strip("[]")
        if host in self._addresses or f"{host}:{port}" in self._addresses:
            return True
        with self._lock:
            return port in self._owned and is_loopback(host)

    def check(self, address: Any) -> None:
        """Raise NetworkBlocked (and remember it) unless `address` may be reached."""
        if not isinstance(address, tuple) or len(address) < 2:
            return  # a Unix socket path (or an abstract name): not network
        host, port = str(address[0]), int(address[1])
        if self.allows(host, port):
            return
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with self._lock:
            self._blocked.append(where)
            owned = sorted(self._owned)
        serving = (f"the cassette is served on 127.0.0.1 port {', '.join(map(str, owned))}"
                   if owned else "no cassette is being served")
        raise NetworkBlocked(
            f"sse-recorder: --sse-block-network blocked a connection to {where} ({serving}): "
            "point the client at sse_cassette.base_url or proxy_url, or allow the host "
            "with --sse-allowed-hosts")

    def take_blocked(self) -> list[str]:
        """The blocked addresses not reported yet, each once, in order."""
        with self._lock:
            blocked, self._blocked = self._blocked, []
        return list(dict.fromkeys(blocked))

    # -- patching --

    def install(self) -> None:
        if self._saved:
            return
        connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
        create_connection = socket.create_connection
        self._saved = {"connect": connect, "connect_ex": connect_ex,
                       "create_connection": create_connection}
        guard = self

        def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(sock: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    guard.check(address)
                return method(sock, address, *args, **kwargs)

            call.__name__ = call.__qualname__ = method.__name__
            call.__doc__ = method.__doc__
            return call

        def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check(address)  # before DNS, so the error names the host the test used
            return create_connection(address, *args, **kwargs)

        socket.socket.connect = guarded(connect)  # type: ignore[method-assign]
        socket.socket.connect_ex = guarded(connect_ex)  # type: ignore[method-assign]
        socket.create_connection = guarded_create_connection

    def uninstall(self) -> None:
        if not self._saved:
            return
        socket.socket.connect = self._saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = self._saved["connect_ex"]  # type: ignore[method-assign]
        socket.create_connection = self._saved["create_connection"]
        self._saved = {}

"""Listening sockets on every address a host names, on one port: for one replay process or
for N workers (`replay --workers`).

Why not `asyncio.start_server(host, port)`: given port 0 and a host naming several
addresses (`""`: IPv4 and IPv6), it binds each address to a free port of its own, so the
one URL printed reaches only the first; and N workers need N sockets per address on one
port (SO_REUSEPORT), which it cannot make. Here every address gets the port the first one
bound, and each address a group of sockets:
- SO_REUSEPORT (Linux, the BSDs, `count` > 1): one listening socket per worker on the
  address; the kernel spreads connections over them by a hash of both ends;
- a shared listening socket where SO_REUSEPORT is missing: every worker accepts from it;
- `pin` (Linux): a classic BPF program picks the socket by the client's address (its last
  32 bits, modulo N), so every connection from one client address meets the same worker.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sse_recorder.errors import ConfigError

__all__ = ["BACKLOG", "Listeners", "REUSEPORT", "listen"]

BACKLOG = 4096


@dataclass
class Listeners:
    """The listening sockets, a group per address the host names (`""`: IPv4 and IPv6),
    all on one port: in each group one socket per worker (SO_REUSEPORT), or one they
    share."""

    host: str
    port: int
    groups: list[list[socket.socket]]

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for group in self.groups for sock in group]

    def for_worker(self, index: int) -> tuple[socket.socket, ...]:
        """Its own socket in each group, or the shared ones."""
        return tuple(group[index % len(group)] for group in self.groups)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


REUSEPORT = hasattr(socket, "SO_REUSEPORT")
SO_ATTACH_REUSEPORT_CBPF = 51  # Linux, <asm-generic/socket.h>
SKF_NET_OFF = -0x100000  # classic BPF: loads relative to the network header
# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}: load a word, A %= k, return A
LD_W_ABS, ALU_MOD_K, RET_A = 0x20, 0x94, 0x16
# where the last 32 bits of the source address are in the IP header
SOURCE_WORD: dict[int, int] = {socket.AF_INET: 12, socket.AF_INET6: 20}


_Address = tuple[int, int, int, tuple[Any, ...]]  # family, type, protocol, socket address
PORT_TRIES = 8  # port 0 on several addresses: free ports tried (see `listen`)


def listen(host: str, port: int, count: int, pin: bool = False) -> Listeners:
    """Listening sockets on `host:port` (port 0: a free one) for `count` processes: on every
    address `host` names (`""`: every interface, IPv4 and IPv6), all on one port.

    Raises OSError when the address cannot be listened on, ConfigError when `pin` is
    asked where the kernel cannot do it."""
    if pin and not (REUSEPORT and sys.platform.startswith("linux")):
        raise ConfigError("--pin-clients needs Linux (SO_REUSEPORT with a BPF program)")
    addresses: list[_Address] = list(dict.fromkeys(
        (family, kind, proto, address) for family, kind, proto, _, address
        in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE)))
    if port and REUSEPORT and count > 1:
        for address in addresses:
            _check_free(*address)
    # port 0 on several addresses: another program may hold the first one's free port on a
    # later address; another free port is tried then
    for _ in range(PORT_TRIES - 1 if not port and len(addresses) > 1 else 0):
        try:
            return _listen_on(addresses, count, pin)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    return _listen_on(addresses, count, pin)  # the last try: its error is the caller's


def _listen_on(addresses: Sequence[_Address], count: int, pin: bool) -> Listeners:
    """A group of sockets per address, all on the port the first one binds."""
    groups: list[list[socket.socket]] = []
    port = int(addresses[0][3][1])
    reuse = REUSEPORT and count > 1
    try:
        for family, kind, proto, address in addresses:
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(count if reuse else 1):
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                port = sock.getsockname()[1]  # port 0: the others join the port it got
                sock.listen(BACKLOG)  # the kernel numbers the group's sockets in listen order
            if pin:
                _pin_by_source(group[0], family, count)
    except BaseException:
        for sock in (sock for group in groups for sock in group):
            sock.close()
        raise
    first = groups[0][0].getsockname()
    return Listeners(str(first[0]), int(first[1]), groups)  # the URL one process prints


def _check_free(family: int, kind: int, proto: int, address: tuple[Any, ...]) -> None:
    """Raise OSError (EADDRINUSE) when something listens on `address` already.

    The workers' sockets cannot tell: with SO_REUSEPORT they would join any other
    SO_REUSEPORT listener of this user there (another `replay --workers`), and the kernel
    would split the traffic between the two. A socket without it, bound the way one process
    binds (SO_REUSEADDR, as asyncio does), fails on a busy port instead. It is closed before
    the workers' sockets bind: a process taking the port in between is not caught."""
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)


def _pin_by_source(sock: socket.socket, family: int, count: int) -> None:
    """Attach to the reuseport group the program that picks socket `source % count`."""
    program = [(LD_W_ABS, 0, 0, (SKF_NET_OFF + SOURCE_WORD[family]) & 0xFFFFFFFF),
               (ALU_MOD_K, 0, 0, count), (RET_A, 0, 0, 0)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise ConfigError(f"--pin-clients: the kernel refused the BPF program "
                          f"({exc.strerror})") from None

"""Every listening socket crawlguard opens (exporter, sidecar): where it may
listen without a token (``is_loopback``) and its socket options.

POSIX: ``SO_REUSEADDR``, so a restarted server binds again at once while the old
connections sit in TIME_WAIT; a second *listener* on the port is still refused.
Windows: ``SO_REUSEADDR`` means something else there: it lets another process bind
the same port silently (CPython issue 85307), so a stale exporter could keep
answering. There ``SO_EXCLUSIVEADDRUSE`` is set instead and ``SO_REUSEADDR`` never.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

SO_EXCLUSIVEADDRUSE = getattr(socket, "SO_EXCLUSIVEADDRUSE", ~socket.SO_REUSEADDR)
"""Defined by the socket module on Windows only; Winsock's value is ~SO_REUSEADDR."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def set_listen_options(sock: socket.socket) -> None:
    """Call before ``bind``."""
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

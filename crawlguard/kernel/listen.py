"""Every listening socket crawlguard opens (exporter, sidecar): where it may
listen without TLS and a token (``is_loopback``, ``refuse_plaintext``) and its
socket options.

POSIX: ``SO_REUSEADDR``, so a restarted server binds again at once while the old
connections sit in TIME_WAIT; a second *listener* on the port is still refused.
Windows: ``SO_REUSEADDR`` means something else there: it lets another process bind
the same port silently (CPython issue 85307), so a stale exporter could keep
answering. There ``SO_EXCLUSIVEADDRUSE`` is set instead and ``SO_REUSEADDR`` never.

Its cost (Microsoft, "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"): an exclusive
bind fails with WSAEADDRINUSE while any connection of the port's previous
owner is still open or in TIME_WAIT, i.e. for up to TcpTimedWaitDelay (120-240
s) after a sidecar crashed or was restarted by ``up``, which would leave the rig
without a sidecar that long. A bind *without* options is not blocked by TIME_WAIT
(CPython's ``socket.create_server`` relies on this) but is refused by any live
listener. So ``bind`` tries exclusive first and, only on WSAEADDRINUSE, binds
again without it: it succeeds only when no one listens any more, and the socket
is then protected by Windows' default rule (no other user can bind it), not
against the same user's SO_REUSEADDR. Both steps are logged.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from typing import Any

from .errors import ConfigError
from .logs import get_logger
from .tls import CERT_KNOB, KEY_KNOB

log = get_logger(__name__)

BACKLOG = 1024
"""The listen backlog of both servers. A burst of connections (a thousand slow
clients, say) is accepted faster by the kernel than by a server thread; beyond the
backlog the next client's SYNs are dropped and retried for seconds, although each
connection is served as soon as it is accepted (the operating system caps it at
its own limit, 4096 on current Linux)."""

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


def url_host(host: str) -> str:
    """``host`` as it goes into a URL that reaches a server bound to it from this machine:
    a wildcard bind is reached on loopback, an IPv6 address in brackets."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def refuse_plaintext(server: str, host_knob: str, host: str, tls: bool, token: bool,
                     token_knob: str, allow_plaintext: bool) -> None:
    """Refuse (``ConfigError``: one line, exit 2) to serve beyond loopback without TLS
    and a token. The exporter's series name every shard, and the sidecar kills
    processes: beyond this machine both belong behind TLS and a bearer token
    (``crawlguard fleet generate`` writes both for every rig).

    ``allow_plaintext`` (HELIX_BFM_ALLOW_PLAINTEXT) waives both, for a port that
    something else isolates (the Kubernetes manifests' NetworkPolicy); the
    sidecar's own rule still demands its token there.
    """
    if is_loopback(host) or allow_plaintext or (tls and token):
        return
    lacking = [what for what, ok in (("TLS", tls), ("a token", token)) if not ok]
    raise ConfigError(host_knob, host, f"the {server} refuses to listen beyond loopback "
                      f"without {' and '.join(lacking)}: set {CERT_KNOB} and {KEY_KNOB} and "
                      f"{token_knob} (crawlguard fleet generate writes them), or "
                      "HELIX_BFM_ALLOW_PLAINTEXT=1 where a network policy isolates the port")


def set_listen_options(sock: socket.socket) -> None:
    """Call before ``bind``."""
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


WSAEADDRINUSE = 10048


def _in_use(exc: OSError) -> bool:
    return getattr(exc, "winerror", None) == WSAEADDRINUSE or exc.errno in (
        WSAEADDRINUSE, errno.EADDRINUSE)


def bind(sock: socket.socket, address: Any) -> None:
    """Set the listening options, then bind ``sock`` to ``address``; on Windows a port
    held only by its previous owner's draining connections is taken without
    SO_EXCLUSIVEADDRUSE rather than waited for. OSError when it cannot be bound."""
    set_listen_options(sock)
    try:
        sock.bind(address)
        return
    except OSError as exc:
        if sys.platform != "win32" or not _in_use(exc):
            raise
    # Connections of a previous instance in TIME_WAIT block an exclusive bind; a live
    # listener also blocks this one, so a second server is still refused.
    sock.setsockopt(socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 0)
    sock.bind(address)
    log.warning("port %s: bound without SO_EXCLUSIVEADDRUSE (connections of its previous "
                "owner were still draining); no other server listens on it", address[1])

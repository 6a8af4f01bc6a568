"""A crowd of slow clients in a process of its own (tests/fleet/test_head_deadline.py).

    python -m tests.fleet.crowd_child HOST PORT COUNT HEAD LIMIT

Opens COUNT connections to HOST:PORT, sends each the bytes HEAD (hex; empty: it
says nothing, so over TLS its handshake never starts) and prints ``opened``. On a
line on stdin it prints ``dropped N``: how many the server has closed so far. Then
it waits, at most LIMIT seconds, for the server to close the rest and prints one
JSON object: ``{"lives": [seconds from open to close, ...], "open": N}``.

A process of its own, as a crowd on a LAN would be: in the test's process it
would share the GIL with the server it is testing.
"""

from __future__ import annotations

import json
import selectors
import socket
import ssl
import sys
import time


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (a read returns EOF or fails); False while
    it is open (nothing to read: a non-blocking socket, or a timeout)."""
    try:
        return not sock.recv(4096)
    except (BlockingIOError, TimeoutError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True  # reset, or the TLS layer saw the close


def main(host: str, port: int, count: int, head: bytes, limit: float) -> None:
    sel = selectors.DefaultSelector()  # select() stops at descriptor 1023
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(head)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, time.monotonic())
    print("opened", flush=True)
    sys.stdin.readline()
    lives: list[float] = []

    def reap(wait: float) -> None:
        for key, _ in sel.select(wait):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if closed(sock):
                lives.append(time.monotonic() - key.data)
                sel.unregister(sock)
                sock.close()

    reap(0)
    print(f"dropped {len(lives)}", flush=True)
    deadline = time.monotonic() + limit
    while len(lives) < count and time.monotonic() < deadline:
        reap(1.0)
    print(json.dumps({"lives": lives, "open": count - len(lives)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4]),
         float(sys.argv[5]))

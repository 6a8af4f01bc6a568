"""Slow clients against a rig's two real servers, plain and TLS (HELIX_BFM_HEADER_TIMEOUT).

A fleet puts the exporter and the sidecar on a LAN. A client that connects and
sends nothing, part of a request line, part of its headers, a byte at a time, or
(over TLS) a handshake that never completes, is disconnected once the head
deadline has passed, and a thousand of them at once do not keep a well-behaved
client from being answered. Real sockets on loopback, real servers on threads of
this process; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crawlguard.exporter.server import Exporter, ExporterConfig
from crawlguard.kernel import http
from crawlguard.kernel.settings import Remediation, Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.tls import TlsFiles
from crawlguard.sidecar.engine import Engine
from crawlguard.sidecar.server import SidecarServer
from tests.fleet.crowd_child import closed
from tests.helpers import REPO

HOST = "127.0.0.1"
TOKEN = "head-deadline-token-0123"
SLACK = 3.0
"""How late after the deadline a close may come on a busy machine (it comes within
milliseconds on an idle one)."""
CROWD = 1000


@dataclass
class Served:
    port: int
    tls: ssl.SSLContext | None
    health: str
    metrics: Callable[[], str]

    def good_request(self) -> int:
        scheme = "https" if self.tls is not None else "http"
        return http.get(f"{scheme}://{HOST}:{self.port}{self.health}", token=TOKEN,
                        timeout=10, tls=self.tls).status


@pytest.fixture
def serve(tmp_path: Path, stranger: TlsFiles) -> Iterator[Callable[[str, bool, float], Served]]:
    """Servers with a certificate for 127.0.0.1 and no client CA (no client certificate
    demanded: the handshake is the point); their clients trust its CA."""
    stops: list[Callable[[], None]] = []

    def start(kind: str, tls: bool, timeout: float) -> Served:
        files = TlsFiles(cert=stranger.cert, key=stranger.key) if tls else TlsFiles()
        client = TlsFiles(ca=stranger.ca).client_context() if tls else None
        state = tmp_path / f"state-{kind}-{len(stops)}"
        state.mkdir()
        if kind == "sidecar":
            sidecar = SidecarServer(Engine(StateDir(state), Remediation()), HOST, 0, TOKEN,
                                    tls=files, header_timeout=timeout)
            port = sidecar.start().port
            stops.append(sidecar.stop)
            return Served(port, client, "/healthz",
                          lambda: sidecar.engine.metrics.render().decode())
        vram = tmp_path / "vram.json"
        vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 1, "total_bytes": 2}]}))
        exporter = Exporter(ExporterConfig(state, f"file:{vram}", 0.95, host=HOST, port=0,
                                           tls=files, header_timeout=timeout))
        exporter.start()
        stops.append(exporter.stop)
        return Served(exporter.port, client, "/metrics", lambda: "")

    yield start
    for stop in stops:
        stop()


def lifetime(sock: socket.socket, drip: bytes = b"", every: float = 0.2,
             limit: float = 60.0) -> float:
    """Seconds until the server closes ``sock``; meanwhile one byte of ``drip`` is sent
    at every ``every`` s (a client that sends a byte at a time)."""
    started = time.monotonic()
    sock.settimeout(every)
    for i in range(10**6):
        if closed(sock):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(f"still open after {limit:g}s")
        if i < len(drip):
            try:
                sock.send(drip[i:i + 1])
            except OSError:
                return time.monotonic() - started
    raise AssertionError("unreachable")


HEAD = b"GET /healthz HTTP/1.1\r\nHost: rig\r\nAuthorization: Bearer " + TOKEN.encode()
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: rig\r\n"
CLIENT_HELLO_START = bytes.fromhex("1603010200" "010001fc0303")
"""A TLS record header and the first bytes of a ClientHello: a handshake begun, never ended."""


def slow_clients(port: int, tls: ssl.SSLContext | None) -> dict[str, tuple[socket.socket, bytes]]:
    """One socket per way of being slow, each with what it still drips."""
    def raw(first: bytes = b"") -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.sendall(first)
        return sock

    def talking() -> socket.socket:
        sock = raw()
        return tls.wrap_socket(sock, server_hostname=HOST) if tls is not None else sock

    clients: dict[str, tuple[socket.socket, bytes]] = {
        "nothing at all": (raw(), b""),
        "part of a request line": (talking(), b""),
        "part of its headers": (talking(), b""),
        "a byte at a time": (talking(), HEAD),
    }
    clients["part of a request line"][0].sendall(b"GET /heal")
    clients["part of its headers"][0].sendall(PARTIAL_HEADERS)
    if tls is not None:
        clients["a handshake never finished"] = (raw(CLIENT_HELLO_START), b"")
    return clients


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("kind", ["sidecar", "exporter"])
def test_a_slow_client_is_disconnected_at_the_deadline(
        serve: Callable[[str, bool, float], Served], kind: str, tls: bool) -> None:
    timeout = 1.0
    served = serve(kind, tls, timeout)
    clients = slow_clients(served.port, served.tls)
    lives: dict[str, float] = {}

    def watch(name: str, sock: socket.socket, drip: bytes) -> None:
        lives[name] = lifetime(sock, drip)

    threads = [threading.Thread(target=watch, args=(name, sock, drip))
               for name, (sock, drip) in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for sock, _ in clients.values():
        sock.close()
    assert set(lives) == set(clients), f"never closed: {set(clients) - set(lives)}"
    for name, life in lives.items():
        assert 0.9 * timeout <= life <= timeout + SLACK, (name, life)
    assert served.good_request() == 200
    if kind == "sidecar":  # counted once the protocol has the connection (after TLS)
        counted = 3.0 if tls else 4.0
        assert (f'crawlguard_sidecar_invalid_requests_total{{reason="header_timeout"}} '
                f'{counted}') in served.metrics()


def _room_for(sockets: int) -> None:
    """Raise this process's open-file limit (inherited by its children) for ``sockets``
    more, or skip."""
    if sys.platform == "win32":
        return  # sockets are not counted against a descriptor limit there
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = sockets + 512
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-file limit ({hard}) is below the {need} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("kind", ["sidecar", "exporter"])
def test_a_thousand_slow_clients_do_not_keep_a_good_one_waiting(
        serve: Callable[[str, bool, float], Served], kind: str, tls: bool) -> None:
    _room_for(CROWD)
    timeout = 5.0
    served = serve(kind, tls, timeout)
    # Over TLS: TCP connections whose handshake never starts. Plain: half a request head.
    head = b"" if tls else PARTIAL_HEADERS
    crowd = subprocess.Popen(
        [sys.executable, "-m", "tests.fleet.crowd_child", HOST, str(served.port), str(CROWD),
         head.hex(), str(timeout + 30)], cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert crowd.stdin is not None and crowd.stdout is not None
    try:
        assert crowd.stdout.readline().strip() == "opened"
        assert served.good_request() == 200
        crowd.stdin.write("answered\n")
        crowd.stdin.flush()
        # ... while every one of the thousand still held its connection.
        assert crowd.stdout.readline().strip() == "dropped 0"
        out, _ = crowd.communicate(timeout=timeout + 60)
    finally:
        if crowd.poll() is None:
            crowd.kill()
            crowd.wait(10)
    got = json.loads(out)
    assert got["open"] == 0, f"{got['open']} of {CROWD} slow clients still connected"
    lives = got["lives"]
    assert timeout * 0.9 <= min(lives) and max(lives) <= timeout + SLACK, (min(lives),
                                                                            max(lives))
    assert served.good_request() == 200


def test_the_deadline_is_a_knob() -> None:
    assert Settings.from_env({}).endpoints.header_timeout == 10.0
    assert Settings.from_env({"HELIX_BFM_HEADER_TIMEOUT": "2.5"}).endpoints.header_timeout == 2.5
    assert ExporterConfig.from_settings(Settings.from_env(
        {"HELIX_BFM_HEADER_TIMEOUT": "3"})).header_timeout == 3.0

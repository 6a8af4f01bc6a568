"""Running the sidecar: security checks, one instance per state dir, uvicorn on a thread.

``SidecarServer`` binds the listening socket itself and hands it to uvicorn,
so ``--port 0`` works and the real port is known before anyone is told the
address (``crawlguard sidecar`` prints ``crawlguard sidecar listening on
http://HOST:PORT`` once it accepts). uvicorn runs on a thread and never
installs signal handlers there; the command's main thread owns the signals
(``crawlguard.cli.lifecycle``) and stops the server, which also lets tests run a real
server in-process. With TLS files it serves HTTPS, and with a CA file it demands
client certificates signed by that CA (``crawlguard.kernel.tls``).

Refusals at start (``ConfigError``, one clear line):

- a non-loopback address without a token: the API kills processes;
- a non-loopback address without TLS (HELIX_BFM_TLS_CERT_FILE and _KEY_FILE),
  unless HELIX_BFM_ALLOW_PLAINTEXT=1 (``crawlguard.kernel.listen.refuse_plaintext``);
- no token at all unless ``--insecure-no-token`` is given, which is only
  accepted on loopback: an open ``/v1`` is a choice someone has to make;
- a second sidecar on the same state dir (``<state>/.sidecar.lock``): two
  engines would each believe they own the pending rungs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass

import uvicorn
from filelock import FileLock, Timeout

from crawlguard.kernel.errors import ConfigError, StateError
from crawlguard.kernel.listen import bind, is_loopback, refuse_plaintext
from crawlguard.kernel.tls import TlsFiles

from .app import create_app
from .engine import Engine

START_TIMEOUT_S = 30.0


def check_security(host: str, token: str | None, insecure_no_token: bool,
                   tls: TlsFiles | None = None, allow_plaintext: bool = False) -> None:
    if token:
        refuse_plaintext("sidecar", "HELIX_BFM_SIDECAR_HOST", host,
                         tls is not None and tls.serves, True, "HELIX_BFM_SIDECAR_TOKEN_FILE",
                         allow_plaintext)
        return
    if not is_loopback(host):
        raise ConfigError("HELIX_BFM_SIDECAR_TOKEN", None,
                          f"the sidecar can kill processes; refusing to listen on non-loopback "
                          f"address {host!r} without a token (set HELIX_BFM_SIDECAR_TOKEN or "
                          "HELIX_BFM_SIDECAR_TOKEN_FILE)")
    if not insecure_no_token:
        raise ConfigError("HELIX_BFM_SIDECAR_TOKEN", None,
                          "no token configured; set HELIX_BFM_SIDECAR_TOKEN (or _FILE), or pass "
                          "--insecure-no-token to serve /v1 without authentication on loopback")


class _Uvicorn(uvicorn.Server):
    """uvicorn that reports when it accepts connections (or that it never will)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@dataclass
class Bound:
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class SidecarServer:
    """One sidecar: engine + API + uvicorn thread. ``start()`` returns once it accepts."""

    def __init__(self, engine: Engine, host: str, port: int, token: str | None,
                 insecure_no_token: bool = False, tls: TlsFiles | None = None,
                 allow_plaintext: bool = False) -> None:
        check_security(host, token, insecure_no_token, tls, allow_plaintext)
        self.engine = engine
        self.host = host
        self.port = port
        self.token = token or None
        # Built now: an unreadable certificate stops the start with its knob named.
        self.tls = tls.server_context() if tls is not None and tls.serves else None
        self._instance = FileLock(str(engine.dir.root / ".sidecar.lock"))
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> Bound:
        self.engine.dir.open_for_service()
        try:
            self._instance.acquire(timeout=0)
        except Timeout as exc:
            raise StateError(f"another crawlguard sidecar already serves state dir "
                             f"{self.engine.dir.root}") from exc
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Bound:
        self.engine.start()
        self._sock = _bind(self.host, self.port)
        config = uvicorn.Config(create_app(self.engine, self.token), log_config=None,
                                log_level="warning", access_log=False, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5)
        if self.tls is not None:
            # uvicorn serves whatever context config.ssl holds once loaded; ours is the
            # one crawlguard.kernel.tls builds for every server (client CA included).
            config.load()
            config.ssl = self.tls
        ready = threading.Event()
        server = self._server = _Uvicorn(config, ready)
        sock = self._sock
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])),
                                        name="sidecar-http", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or not server.started:
            raise StateError(f"the sidecar's HTTP server did not start on "
                             f"{self.host}:{self.port}")
        return Bound(self.host, int(self._sock.getsockname()[1]),
                     "https" if self.tls is not None else "http")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._server is not None:
            self.engine.close()
        if self._instance.is_locked:
            self._instance.release()


def _bind(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError("HELIX_BFM_SIDECAR_HOST", host, f"cannot resolve: {exc}") from exc
    try:
        bind(sock, info[4])  # exclusive on Windows: no second sidecar on the port
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError("HELIX_BFM_SIDECAR_PORT", port,
                          f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock

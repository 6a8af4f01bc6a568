"""Running the sidecar: security checks, one instance per state dir, uvicorn on a thread.

``SidecarServer`` binds the listening socket itself and hands it to uvicorn,
so ``--port 0`` works and the real port is known before anyone is told the
address (``crawlguard sidecar`` prints ``crawlguard sidecar listening on
http://HOST:PORT`` once it accepts). uvicorn runs on a thread and never
installs signal handlers there; the command's main thread owns the signals
(``crawlguard.cli.lifecycle``) and stops the server, which also lets tests run a real
server in-process. With TLS files it serves HTTPS, and with a CA file it demands
client certificates signed by that CA (``crawlguard.kernel.tls``).

Every connection must finish its TLS handshake and then send each request's
line and headers within HELIX_BFM_HEADER_TIMEOUT (``Endpoints.header_timeout``),
else it is closed and counted as
``crawlguard_sidecar_invalid_requests_total{reason="header_timeout"}``. uvicorn
has no such deadline of its own (its keep-alive timer runs only between
requests and stops at the first byte), and asyncio gives a TLS handshake 60 s,
so a client that connected and said nothing, or a byte at a time, held its
connection for as long as it liked (``head_deadline``, ``_Loop``).

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
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from filelock import FileLock, Timeout
from uvicorn.protocols.http.h11_impl import H11Protocol

from crawlguard.kernel.errors import ConfigError, StateError
from crawlguard.kernel.listen import BACKLOG, bind, is_loopback, refuse_plaintext
from crawlguard.kernel.settings import Endpoints
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


def head_deadline(timeout: float, on_timeout: Callable[[], None]) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on each request head: ``timeout`` seconds
    from accept (the TLS handshake included) or from the previous response, for the
    request line and headers to arrive; then the connection is closed and ``on_timeout``
    called. uvicorn's own h11 protocol, never httptools: the deadline is written for it."""

    class _HeadDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Made at accept, before any TLS handshake: the first deadline counts from here.
            self._accepted = self.loop.time()

        def connection_made(  # type: ignore[override]  # as uvicorn declares it
                self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._await_head(self._accepted)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a whole head arrived (or garbage)
                self._stop_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_head(self.loop.time())  # keep-alive: the next request's head

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_head(self, since: float) -> None:
            self._stop_waiting()
            self._head_timer = self.loop.call_at(since + timeout, self._head_late)

        def _stop_waiting(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                on_timeout()
                self.transport.close()

    return _HeadDeadline


if sys.platform == "win32":
    _BaseLoop = asyncio.ProactorEventLoop  # what asyncio.run picks there: no 512-socket cap
else:
    _BaseLoop = asyncio.SelectorEventLoop


class _Loop(_BaseLoop):
    """asyncio's event loop, whose TLS handshakes end at ``handshake_timeout``: uvicorn
    passes no ``ssl_handshake_timeout`` to ``create_server``, and asyncio's default is
    60 s. (The handshake happens before the protocol sees the connection, so
    ``head_deadline`` cannot bound it.)"""

    def __init__(self, handshake_timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
        return await super().create_server(*args, **kwargs)


def _run(main: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
    """``asyncio.run(main())`` on ``loop`` (``asyncio.Runner`` takes a loop factory only
    from Python 3.11 on)."""

    async def finish() -> None:
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await loop.shutdown_asyncgens()

    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(finish())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


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
                 allow_plaintext: bool = False,
                 header_timeout: float = Endpoints.header_timeout) -> None:
        check_security(host, token, insecure_no_token, tls, allow_plaintext)
        self.engine = engine
        self.host = host
        self.port = port
        self.token = token or None
        self.header_timeout = header_timeout
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
        late = self.engine.metrics.invalid.labels(reason="header_timeout")
        config = uvicorn.Config(create_app(self.engine, self.token), log_config=None,
                                log_level="warning", access_log=False, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5,
                                http=head_deadline(self.header_timeout, late.inc))
        if self.tls is not None:
            # uvicorn serves whatever context config.ssl holds once loaded; ours is the
            # one crawlguard.kernel.tls builds for every server (client CA included).
            config.load()
            config.ssl = self.tls
        ready = threading.Event()
        server = self._server = _Uvicorn(config, ready)
        sock, timeout = self._sock, self.header_timeout
        self._thread = threading.Thread(
            target=lambda: _run(lambda: server.serve([sock]), _Loop(timeout)),
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
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError("HELIX_BFM_SIDECAR_PORT", port,
                          f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock

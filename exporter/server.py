"""The exporter daemon: one /metrics endpoint per host (``crawlguard exporter``).

``Exporter`` is built from settings without side effects; ``start()`` binds the
port and serves from a background thread, ``stop()`` closes it. The workers'
series survive worker restarts because they live in the state dir's files,
not in any worker's memory.

A rig of a fleet serves /metrics beyond loopback: over TLS (its certificate,
and client certificates of the fleet's CA when HELIX_BFM_TLS_CA_FILE is set)
and behind a bearer token (HELIX_BFM_EXPORTER_TOKEN), which the central
Prometheus sends. Beyond loopback without both it refuses to start
(``crawlguard.kernel.listen.refuse_plaintext``).

Each connection has its own thread, and HELIX_BFM_HEADER_TIMEOUT
(``Endpoints.header_timeout``) from the moment it is accepted to finish its TLS
handshake and send its request line and headers; then it is closed. The
handshake runs on that thread, never in the accept loop, so a client that
connects and says nothing holds up no one else, and the deadline is on the whole
head, not on each read (``_HeadReader``): a client sending a byte at a time is cut
off like a silent one.
"""

from __future__ import annotations

import hmac
import io
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

from crawlguard.gpu.shared import OFF_REASON, SharedSource, shared_source_from_spec
from crawlguard.gpu.vram import VramSource, source_from_spec
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.listen import BACKLOG, bind, is_loopback, refuse_plaintext
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.settings import Endpoints, Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.kernel.tls import TlsFiles

from .collector import (
    LiveWorkersCollector,
    VramCollector,
    WorkerCollector,
    WorkerInfoCollector,
    default_alive,
)
from .oomseries import OomCollector
from .sharedcollector import SharedMemoryCollector

log = get_logger(__name__)


@dataclass(frozen=True)
class ExporterConfig:
    state_dir: Path
    vram_source: str
    vram_full_ratio: float
    host: str = "127.0.0.1"
    port: int = 9847
    shared_source: str = "auto"
    tls: TlsFiles = field(default_factory=TlsFiles)
    """Served over TLS when it holds a certificate and key."""
    token: str | None = field(default=None, repr=False)
    """Bearer token demanded on every request when set."""
    allow_plaintext: bool = False
    header_timeout: float = Endpoints.header_timeout
    """Seconds from accept to a complete TLS handshake and request head."""

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None,
                      port: int | None = None) -> ExporterConfig:
        ep = settings.endpoints
        return cls(
            state_dir=settings.state_dir, vram_source=settings.vram_source,
            vram_full_ratio=settings.detection.vram_full_ratio,
            host=ep.exporter_host if host is None else host,
            port=ep.exporter_port if port is None else port,
            shared_source=settings.shared_source, tls=ep.tls, token=ep.exporter_token,
            allow_plaintext=ep.allow_plaintext, header_timeout=ep.header_timeout,
        )

    @property
    def scheme(self) -> str:
        return "https" if self.tls.serves else "http"


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _HeadReader(io.RawIOBase):
    """A connection's reads, each allowed only what is left until ``deadline`` (None:
    the socket's own timeout). A socket timeout bounds one read, so a client that sends
    a byte at a time would otherwise hold the connection for as long as it liked."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline: float | None = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request head not received in time")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _QuietHandler(WSGIRequestHandler):
    """One connection (wsgiref serves one request on each), its head bounded in time."""

    timeout = Endpoints.header_timeout  # each write of the answer; serve() sets both
    head_timeout = Endpoints.header_timeout

    def setup(self) -> None:
        deadline = time.monotonic() + self.head_timeout
        if isinstance(self.request, ssl.SSLSocket):
            # One call, so the socket timeout bounds the whole handshake, not each read.
            self.request.settimeout(self.head_timeout)
            self.request.do_handshake()
        super().setup()
        self.rfile.close()
        self._head = _HeadReader(self.connection, deadline)
        self.rfile = io.BufferedReader(self._head)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._head.deadline = None  # the head is in: the answer gets the usual timeout
        self.connection.settimeout(self.timeout)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """One line per scrape would drown the log."""


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading server, bound with crawlguard's socket options:
    its own sets SO_REUSEADDR, which on Windows lets two exporters share a port."""

    allow_reuse_address = False
    request_queue_size = BACKLOG  # socketserver's own is 5

    def server_bind(self) -> None:
        # TCPServer's, HTTPServer's and WSGIServer's server_bind, with crawlguard's bind.
        bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = socket.getfqdn(str(host)), int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A refused handshake (plain HTTP, a certificate of another CA) or a client
        # that hung up: one debug line, not socketserver's traceback on stderr.
        log.debug("exporter: connection from %s ended: %s", client_address[0],
                  sys.exc_info()[1])


def require_bearer(app: WsgiApp, token: str) -> WsgiApp:
    """``app`` behind ``Authorization: Bearer <token>`` (constant-time compare)."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", "Bearer")])
            return [b"missing or wrong bearer token (HELIX_BFM_EXPORTER_TOKEN)\n"]
        return app(environ, start_response)

    return guarded


def serve(host: str, port: int, registry: CollectorRegistry,
          tls: ssl.SSLContext | None = None, token: str | None = None,
          header_timeout: float = Endpoints.header_timeout) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on host:port from a daemon thread (``start_http_server``'s job),
    over TLS with ``tls`` and behind ``token`` when given; a connection has
    ``header_timeout`` seconds to finish its handshake and send its request head."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]

    class Server(_Server):
        address_family = family

        def server_bind(self) -> None:
            super().server_bind()
            if tls is not None:
                # The handshake happens on the request's thread (_QuietHandler.setup),
                # bounded by the head deadline, instead of in accept() on the serving one.
                self.socket = tls.wrap_socket(self.socket, server_side=True,
                                              do_handshake_on_connect=False)

    app: WsgiApp = make_wsgi_app(registry)
    if token:
        app = require_bearer(app, token)
    class Handler(_QuietHandler):
        timeout = head_timeout = header_timeout

    httpd = make_server(str(sockaddr[0]), port, app, Server, handler_class=Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="crawlguard-exporter",
                              daemon=True)
    thread.start()
    return httpd, thread


class Exporter:
    def __init__(self, config: ExporterConfig, source: VramSource | None = None,
                 shared: SharedSource | None = None) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.source = source or source_from_spec(config.vram_source)
        self.registry = CollectorRegistry(auto_describe=False)
        self.workers = WorkerCollector(self.state.metrics_dir)
        self.registry.register(self.workers)
        self.registry.register(LiveWorkersCollector(self.workers))
        self.registry.register(WorkerInfoCollector(self.state.metrics_dir))
        self.registry.register(VramCollector(self.source, config.vram_full_ratio))
        self.shared = shared or shared_source_from_spec(config.shared_source)
        # Registered without a source too: a fire drill's evidence (kernel.drills).
        self.registry.register(SharedMemoryCollector(self.state.metrics_dir, self.shared,
                                                     self.state))
        self.registry.register(OomCollector(self.state, default_alive))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (differs from the configured one when that was 0)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_port)

    def start(self) -> None:
        c = self.config
        refuse_plaintext("exporter", "HELIX_BFM_EXPORTER_HOST", c.host, c.tls.serves,
                         bool(c.token), "HELIX_BFM_EXPORTER_TOKEN_FILE", c.allow_plaintext)
        tls = c.tls.server_context() if c.tls.serves else None
        self.state.ensure(self.state.metrics_dir)
        try:
            self._server, self._thread = serve(c.host, c.port, self.registry, tls, c.token,
                                               c.header_timeout)
        except OSError as exc:
            raise ConfigError("HELIX_BFM_EXPORTER_PORT", self.config.port,
                              f"cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from exc
        if not is_loopback(self.config.host):
            log.warning("exporter listens on %s, beyond loopback", self.config.host)
        log.info("exporter serving %s://%s:%d/metrics (state %s, VRAM %s, shared memory %s, "
                 "%s)", c.scheme, c.host, self.port, self.state.root, self.source.name,
                 self.shared.name if self.shared is not None else OFF_REASON,
                 "bearer token" if c.token else "no token")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for part in (self.source, self.shared):
            close = getattr(part, "close", None)
            if callable(close):
                close()

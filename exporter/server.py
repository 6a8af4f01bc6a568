"""The exporter daemon: one /metrics endpoint per host (``crawlguard exporter``).

``Exporter`` is built from settings without side effects; ``start()`` binds the
port and serves from a background thread, ``stop()`` closes it. The workers'
series survive worker restarts because they live in the state dir's files,
not in any worker's memory.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

from crawlguard.gpu.shared import OFF_REASON, SharedSource, shared_source_from_spec
from crawlguard.gpu.vram import VramSource, source_from_spec
from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.listen import is_loopback, set_listen_options
from crawlguard.kernel.logs import get_logger
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir

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

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None,
                      port: int | None = None) -> ExporterConfig:
        return cls(
            state_dir=settings.state_dir, vram_source=settings.vram_source,
            vram_full_ratio=settings.detection.vram_full_ratio,
            host=settings.endpoints.exporter_host if host is None else host,
            port=settings.endpoints.exporter_port if port is None else port,
            shared_source=settings.shared_source,
        )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """One line per scrape would drown the log."""


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading server, bound with crawlguard's socket options:
    its own sets SO_REUSEADDR, which on Windows lets two exporters share a port."""

    allow_reuse_address = False

    def server_bind(self) -> None:
        set_listen_options(self.socket)
        super().server_bind()


def serve(host: str, port: int, registry: CollectorRegistry) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on host:port from a daemon thread (``start_http_server``'s job)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]

    class Server(_Server):
        address_family = family

    httpd = make_server(str(sockaddr[0]), port, make_wsgi_app(registry), Server,
                        handler_class=_QuietHandler)
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
        if self.shared is not None:
            self.registry.register(SharedMemoryCollector(self.state.metrics_dir, self.shared))
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
        self.state.ensure(self.state.metrics_dir)
        try:
            self._server, self._thread = serve(self.config.host, self.config.port,
                                               self.registry)
        except OSError as exc:
            raise ConfigError("HELIX_BFM_EXPORTER_PORT", self.config.port,
                              f"cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from exc
        if not is_loopback(self.config.host):
            log.warning("exporter listens on %s, beyond loopback", self.config.host)
        log.info("exporter serving http://%s:%d/metrics (state %s, VRAM %s, shared memory %s)",
                 self.config.host, self.port, self.state.root, self.source.name,
                 self.shared.name if self.shared is not None else OFF_REASON)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for part in (self.source, self.shared):
            close = getattr(part, "close", None)
            if callable(close):
                close()

"""The exporter daemon: one /metrics endpoint per host (``crawlguard exporter``).

``Exporter`` is built from settings without side effects; ``start()`` binds the
port and serves from a background thread, ``stop()`` closes it. The workers'
series survive worker restarts because they live in the state dir's files,
not in any worker's memory.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from crawlguard.errors import ConfigError
from crawlguard.settings import Settings
from crawlguard.statedir import StateDir

from .collector import LiveWorkersCollector, VramCollector, WorkerCollector, _default_alive
from .oomseries import OomCollector
from .vram import VramSource, source_from_spec

log = logging.getLogger("crawlguard.exporter")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ExporterConfig:
    state_dir: Path
    vram_source: str
    vram_full_ratio: float
    host: str = "127.0.0.1"
    port: int = 9847

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None,
                      port: int | None = None) -> ExporterConfig:
        return cls(
            state_dir=settings.state_dir, vram_source=settings.vram_source,
            vram_full_ratio=settings.detection.vram_full_ratio,
            host=settings.endpoints.exporter_host if host is None else host,
            port=settings.endpoints.exporter_port if port is None else port,
        )


class Exporter:
    def __init__(self, config: ExporterConfig, source: VramSource | None = None) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.source = source or source_from_spec(config.vram_source)
        self.registry = CollectorRegistry(auto_describe=False)
        self.workers = WorkerCollector(self.state.metrics_dir)
        self.registry.register(self.workers)
        self.registry.register(LiveWorkersCollector(self.workers))
        self.registry.register(VramCollector(self.source, config.vram_full_ratio))
        self.registry.register(OomCollector(self.state, _default_alive))
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
            self._server, self._thread = start_http_server(
                self.config.port, addr=self.config.host, registry=self.registry)
        except OSError as exc:
            raise ConfigError("HELIX_BFM_EXPORTER_PORT", self.config.port,
                              f"cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from exc
        if not is_loopback(self.config.host):
            log.warning("exporter listens on %s, beyond loopback", self.config.host)
        log.info("exporter serving http://%s:%d/metrics (state %s, VRAM %s)",
                 self.config.host, self.port, self.state.root, self.source.name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

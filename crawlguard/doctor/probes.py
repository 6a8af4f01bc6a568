"""The edges ``crawlguard doctor`` looks through, each behind a small interface.

- ``NvmlProbe``: the driver version and the GPUs, through NVML (``pynvml``);
  tests pass a fake.
- ``Http``: GET a JSON or text document with a short timeout; tests use real
  servers (Prometheus, Alertmanager, the sidecar) on loopback.

Every failure becomes a ``CrawlguardError`` here, so the checks only decide
what a failure means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from crawlguard.gpu.vram import Nvml
from crawlguard.kernel import http
from crawlguard.kernel.errors import HttpError
from crawlguard.kernel.http import Answer

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int


class NvmlProbe(Protocol):
    def driver_version(self) -> str: ...

    def gpus(self) -> list[Gpu]: ...


class Pynvml:
    """The real NVML (``crawlguard.gpu.vram.Nvml``), initialised for each question and
    shut down after it."""

    def _run(self, fn: Any) -> Any:
        nvml = Nvml()
        try:
            return nvml.call(fn)
        finally:
            nvml.close()

    def driver_version(self) -> str:
        version = self._run(lambda nv: nv.nvmlSystemGetDriverVersion())
        return version.decode() if isinstance(version, bytes) else str(version)

    def gpus(self) -> list[Gpu]:
        def read(nv: Any) -> list[Gpu]:
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                name = nv.nvmlDeviceGetName(handle)
                out.append(Gpu(i, name.decode() if isinstance(name, bytes) else str(name),
                               int(nv.nvmlDeviceGetMemoryInfo(handle).total)))
            return out

        result: list[Gpu] = self._run(read)
        return result


class Http:
    """GET with a short timeout (``crawlguard.kernel.http``); ``HttpError`` on any failure."""

    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout

    def get(self, url: str, token: str | None = None) -> Answer:
        return http.get(url, token=token, timeout=self.timeout)

    def json(self, url: str) -> Any:
        answer = self.get(url)
        if answer.status != 200:
            raise HttpError(url, f"HTTP {answer.status}")
        return answer.json()

"""The edges ``crawlguard doctor`` looks through, each behind a small interface.

- ``NvmlProbe``: the driver version and the GPUs, through NVML (``pynvml``);
  tests pass a fake.
- ``Http``: GET a JSON or text document with a short timeout; tests use real
  servers (Prometheus, Alertmanager, the sidecar) on loopback.

Every failure becomes a ``CrawlguardError`` here, so the checks only decide
what a failure means.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from crawlguard.kernel.errors import SidecarUnavailable, VramError

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
    """The real NVML, initialised for each question and shut down after it."""

    def _run(self, fn: Any) -> Any:
        try:
            import pynvml
        except ImportError as exc:
            raise VramError("pynvml is not importable (install nvidia-ml-py)") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise VramError(f"NVML: {exc}") from exc
        try:
            return fn(pynvml)
        except pynvml.NVMLError as exc:
            raise VramError(f"NVML: {exc}") from exc
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

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
    """GET with a short timeout; ``HttpError`` (a ``SidecarUnavailable``) on any failure."""

    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout

    def get(self, url: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return httpx.get(url, headers=headers, timeout=self.timeout, trust_env=False)
        except httpx.HTTPError as exc:
            raise HttpError(url, f"{type(exc).__name__}: {exc}") from exc

    def json(self, url: str) -> Any:
        response = self.get(url)
        if response.status_code != 200:
            raise HttpError(url, f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise HttpError(url, "the answer is not JSON") from exc


class HttpError(SidecarUnavailable):
    def __init__(self, url: str, why: str) -> None:
        self.url = url
        super().__init__(f"{url}: {why}")

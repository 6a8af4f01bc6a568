"""VRAM sources behind one small interface: ``read() -> list[GpuMemory]``.

- ``NvmlSource``: NVML through ``pynvml`` (the ``nvidia-ml-py`` distribution),
  device-wide used/total per GPU, the number that shows the WDDM spill: it
  pins near total while the crawl happens. This is the production source.
- ``FileSource``: ``file:PATH`` with ``{"gpus": [{"index": 0, "used_bytes": N,
  "total_bytes": N}]}``, re-read at every scrape: for tests, the spill
  simulator of the reference rebuild, and rigs where another tool measures.
- ``TorchSource``: ``torch.cuda.mem_get_info`` inside the build process, used
  only when the build already imported torch (importing it here would cost
  seconds and a CUDA context). It also reports torch's reserved/allocated.

Every failure is a ``VramError``; the collector turns it into absent series and
one log line, never a crash and never "VRAM full".
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from crawlguard.kernel.errors import VramError

T = TypeVar("T")


@dataclass(frozen=True)
class GpuMemory:
    index: int
    used_bytes: int
    total_bytes: int
    reserved_bytes: int | None = None
    """torch's caching-allocator reservation (TorchSource only)."""
    allocated_bytes: int | None = None
    """Bytes in live torch tensors (TorchSource only)."""

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


class VramSource(Protocol):
    name: str

    def read(self) -> list[GpuMemory]: ...


class FileSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"

    def read(self) -> list[GpuMemory]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise VramError(f"VRAM file {self.path} does not exist") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise VramError(f"VRAM file {self.path} is unreadable: {exc}") from exc
        return parse_gpu_document(data, str(self.path))


def parse_gpu_document(data: Any, where: str) -> list[GpuMemory]:
    """Validate the ``file:`` JSON document; a bad entry rejects the whole reading."""
    gpus = data.get("gpus") if isinstance(data, dict) else None
    if not isinstance(gpus, list):
        raise VramError(f"{where}: expected an object with a list 'gpus'")
    out: list[GpuMemory] = []
    seen: set[int] = set()
    for i, entry in enumerate(gpus):
        if not isinstance(entry, dict):
            raise VramError(f"{where}: gpus[{i}] is not an object")
        fields = [entry.get(k) for k in ("index", "used_bytes", "total_bytes")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in fields):
            raise VramError(f"{where}: gpus[{i}] needs non-negative integers index, "
                            "used_bytes, total_bytes")
        index, used, total = (int(v) for v in fields)  # type: ignore[arg-type]
        if total == 0 or used > total:
            raise VramError(f"{where}: gpus[{i}] has used_bytes={used} total_bytes={total}")
        if index in seen:
            raise VramError(f"{where}: gpu index {index} listed twice")
        seen.add(index)
        out.append(GpuMemory(index, used, total))
    return out


class Nvml:
    """The one place crawlguard talks to NVML (``pynvml``): its errors become ``VramError``.

    Initialised lazily and once; re-initialised after a failure (a driver reset
    invalidates handles). ``call(fn)`` runs ``fn(pynvml)`` under its lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False

    def call(self, fn: Callable[[Any], T]) -> T:
        try:
            import pynvml
        except ImportError as exc:
            raise VramError("pynvml is not importable (install nvidia-ml-py)") from exc
        with self._lock:
            try:
                if not self._ready:
                    pynvml.nvmlInit()
                    self._ready = True
                return fn(pynvml)
            except pynvml.NVMLError as exc:
                self._ready = False
                raise VramError(f"NVML: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._ready:
                import pynvml
                with contextlib.suppress(pynvml.NVMLError):
                    pynvml.nvmlShutdown()
                self._ready = False


class NvmlSource:
    """NVML device memory (``Nvml``)."""

    name = "nvml"

    def __init__(self) -> None:
        self._nvml = Nvml()

    def read(self) -> list[GpuMemory]:
        def read_all(nv: Any) -> list[GpuMemory]:
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                info = nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(i))
                out.append(GpuMemory(i, int(info.used), int(info.total)))
            return out

        return self._nvml.call(read_all)

    def close(self) -> None:
        self._nvml.close()


class TorchSource:
    """``torch.cuda`` inside the build; only when the build imported torch itself."""

    name = "torch"

    def read(self) -> list[GpuMemory]:
        torch: Any = sys.modules.get("torch")
        if torch is None:
            raise VramError("torch is not imported by this process")
        try:
            if not torch.cuda.is_available():
                raise VramError("torch sees no CUDA device")
            out = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                out.append(GpuMemory(i, int(total - free), int(total),
                                     int(torch.cuda.memory_reserved(i)),
                                     int(torch.cuda.memory_allocated(i))))
            return out
        except VramError:
            raise
        except Exception as exc:  # torch raises RuntimeError and friends
            raise VramError(f"torch.cuda: {exc}") from exc


def source_from_spec(spec: str) -> VramSource:
    """``nvml`` or ``file:PATH`` (HELIX_BFM_VRAM_SOURCE), plus ``torch`` for in-process use."""
    if spec == "nvml":
        return NvmlSource()
    if spec == "torch":
        return TorchSource()
    if spec.startswith("file:") and len(spec) > 5:
        return FileSource(spec[5:])
    raise VramError(f"unknown VRAM source {spec!r} (expected nvml or file:PATH)")

"""Shared (system) GPU memory held by each worker process: the spill, counted.

Under WDDM the driver spills a full context into system memory and counts it:
the PDH counter ``\\GPU Process Memory(pid_<pid>_luid_0x<hi>_0x<lo>_phys_<n>)\\Shared
Usage`` is what Task Manager shows as "Shared GPU memory". NVML has no such
figure. Sources behind one interface, ``read(pids) -> {pid: bytes}``:

- ``PdhSharedSource`` (Windows): one query with one wildcard counter, added by
  its English name (``PdhAddEnglishCounterW``) so a localised Windows works,
  collected once per read and read with ``PdhGetFormattedCounterArrayW``: one
  batched call per scrape, whatever the number of workers (reading each
  process's instance on its own is what costs other tools 5-10 % CPU). The PDH
  calls sit behind ``Pdh`` so tests drive the source with a fake at exactly
  that boundary; ``Win32Pdh`` is the real one (pywin32's ``win32pdh``).
- ``FileSharedSource`` (``file:PATH``): ``{"processes": [{"pid": N,
  "shared_bytes": N}]}``, for tests and the reference rebuild's simulated GPU.

A pid's instances are summed over every adapter (LUID) and physical index:
a worker's spill lands on the adapter it computes on, and mapping NVML's
index to a WDDM LUID would need DXGI for no gain.

A worker pid with no instance has no reading (its series is absent, never 0):
it has not touched the GPU yet, or it is gone. Every failure is a
``SharedMemoryError``; the collector then serves no series and
``bfm_shared_memory_source_up 0``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from crawlguard.kernel.errors import SharedMemoryError

COUNTER_PATH = "\\GPU Process Memory(*)\\Shared Usage"
"""English path; PdhAddEnglishCounterW resolves it on any display language."""
PDH_FMT_LARGE = 0x00000400
"""Format the values as 64-bit integers (bytes)."""

_INSTANCE = re.compile(
    r"^pid_(?P<pid>\d+)_luid_0x(?P<hi>[0-9a-fA-F]+)_0x(?P<lo>[0-9a-fA-F]+)_phys_(?P<phys>\d+)")


class PdhError(Exception):
    """A PDH function failed; ``function`` names it, ``status`` is its PDH_STATUS."""

    def __init__(self, function: str, status: int | None, message: str = "") -> None:
        self.function = function
        self.status = status
        code = "" if status is None else f" (status 0x{status & 0xFFFFFFFF:08X})"
        super().__init__(f"{function} failed{code}{': ' + message if message else ''}")


class Pdh(Protocol):
    """The PDH functions the source calls; each raises ``PdhError``."""

    def open_query(self) -> Any: ...

    def add_english_counter(self, query: Any, path: str) -> Any: ...

    def collect(self, query: Any) -> None: ...

    def formatted_array(self, counter: Any) -> Mapping[str, float]: ...

    def close_query(self, query: Any) -> None: ...


class Win32Pdh:
    """PDH through pywin32's ``win32pdh`` (imported lazily: Windows only)."""

    def _mod(self) -> Any:
        try:
            import win32pdh
        except ImportError as exc:
            raise PdhError("import win32pdh", None,
                           "pywin32 is not installed (pip install pywin32; Windows only)"
                           ) from exc
        return win32pdh

    def _call(self, function: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # pywintypes.error: (winerror, funcname, strerror)
            status = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            text = exc.args[2] if len(exc.args) > 2 else str(exc)
            raise PdhError(function, status, str(text)) from exc

    def open_query(self) -> Any:
        mod = self._mod()
        return self._call("PdhOpenQueryW", mod.OpenQuery)

    def add_english_counter(self, query: Any, path: str) -> Any:
        mod = self._mod()
        return self._call("PdhAddEnglishCounterW", mod.AddEnglishCounter, query, path, 0)

    def collect(self, query: Any) -> None:
        mod = self._mod()
        self._call("PdhCollectQueryData", mod.CollectQueryData, query)

    def formatted_array(self, counter: Any) -> Mapping[str, float]:
        mod = self._mod()
        values = self._call("PdhGetFormattedCounterArrayW", mod.GetFormattedCounterArray,
                            counter, PDH_FMT_LARGE)
        return dict(values)

    def close_query(self, query: Any) -> None:
        mod = self._mod()
        self._call("PdhCloseQuery", mod.CloseQuery, query)


PDH_CSTATUS_NO_OBJECT = 0xC0000BB8
PDH_CSTATUS_NO_COUNTER = 0xC0000BB9
REEXPAND_S = 15.0
"""A wanted pid without an instance rebuilds the query at most this often."""


def _absent(exc: PdhError) -> str:
    """What a missing counter set means, appended to the error."""
    if exc.status is None or exc.status & 0xFFFFFFFF not in (PDH_CSTATUS_NO_OBJECT,
                                                             PDH_CSTATUS_NO_COUNTER):
        return ""
    return ("; the counter set 'GPU Process Memory' is absent on this Windows: it needs "
            "Windows 10 1709 or later with a WDDM 2.x GPU driver (a VM or a server without "
            "one has none)")


def sum_by_pid(values: Mapping[str, float], pids: Collection[int]) -> dict[int, int]:
    """Bytes per wanted pid, summed over its instances (adapters x physical indices).

    Names that are not process instances, and values that are not finite and
    non-negative, are skipped: one odd instance must not cost every worker
    its reading.
    """
    wanted = set(pids)
    out: dict[int, int] = {}
    for name, value in values.items():
        m = _INSTANCE.match(name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        if pid not in wanted:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number) or number < 0:
            continue
        out[pid] = out.get(pid, 0) + int(number)
    return out


class SharedSource(Protocol):
    name: str

    def read(self, pids: Collection[int]) -> dict[int, int]: ...


class PdhSharedSource:
    """One PDH query, rebuilt when the set of worker pids changes, and when a wanted
    pid has no instance yet (at most once every ``reexpand_s`` seconds).

    The first collection of a fresh query can read 0 for every instance, so a
    rebuilt query is collected once and that sample discarded before the first
    value is served: a 0 that only means "just opened" must never look like
    "nothing spilled". Rebuilding on a pid change (rather than relying on the
    wildcard picking up the new process's instance) gives a relaunched worker
    the same primed start.

    Why the second rule: a worker registers (and so becomes a wanted pid) before
    its CUDA context exists, and its ``GPU Process Memory`` instance appears only
    then. Whether a wildcard counter picks up instances that appear after it was
    added is not what ``PdhAddEnglishCounterW``'s documentation says (only
    ``PdhAddCounter``'s speaks of wildcards; windows_exporter relies on it
    anyway), so the source does not depend on it: a wanted pid without an
    instance rebuilds the query, which expands the wildcard afresh. The bound
    keeps a registered worker that never touches the GPU (or a dead one whose
    registration stays) from rebuilding at every scrape.
    """

    name = "pdh"

    def __init__(self, pdh: Pdh | None = None, *, clock: Callable[[], float] = time.monotonic,
                 reexpand_s: float = REEXPAND_S, counter: str = COUNTER_PATH) -> None:
        self._pdh: Pdh = pdh if pdh is not None else Win32Pdh()
        self._clock = clock
        self._reexpand_s = reexpand_s
        self._path = counter
        self._lock = threading.Lock()
        self._query: Any = None
        self._counter: Any = None
        self._pids: frozenset[int] | None = None
        self._built_at = 0.0

    def read(self, pids: Collection[int]) -> dict[int, int]:
        want = frozenset(pids)
        with self._lock:
            try:
                if self._query is None or want != self._pids:
                    self._rebuild(want)
                out = self._sample(want)
                if len(out) < len(want) and self._clock() - self._built_at >= self._reexpand_s:
                    self._rebuild(want)  # a worker whose instance appeared since
                    out = self._sample(want)
            except PdhError as exc:
                self._close()  # start from a fresh query next time
                raise SharedMemoryError(f"PDH {self._path}: {exc}{_absent(exc)}") from exc
        return out

    def _sample(self, want: frozenset[int]) -> dict[int, int]:
        self._pdh.collect(self._query)
        return sum_by_pid(self._pdh.formatted_array(self._counter), want)

    def _rebuild(self, want: frozenset[int]) -> None:
        self._close()
        self._query = self._pdh.open_query()
        self._counter = self._pdh.add_english_counter(self._query, self._path)
        self._pdh.collect(self._query)  # the priming sample (reads 0)
        self._pids = want
        self._built_at = self._clock()

    def _close(self) -> None:
        query, self._query, self._counter, self._pids = self._query, None, None, None
        if query is not None:
            with contextlib.suppress(PdhError):  # the handle is dropped either way
                self._pdh.close_query(query)

    def close(self) -> None:
        with self._lock:
            self._close()


class FileSharedSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"

    def read(self, pids: Collection[int]) -> dict[int, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SharedMemoryError(f"shared-memory file {self.path} does not exist") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise SharedMemoryError(f"shared-memory file {self.path} is unreadable: {exc}"
                                    ) from exc
        table = parse_shared_document(data, str(self.path))
        wanted = set(pids)
        return {pid: n for pid, n in table.items() if pid in wanted}


def parse_shared_document(data: Any, where: str) -> dict[int, int]:
    """Validate the ``file:`` document; a bad entry rejects the whole reading."""
    procs = data.get("processes") if isinstance(data, dict) else None
    if not isinstance(procs, list):
        raise SharedMemoryError(f"{where}: expected an object with a list 'processes'")
    out: dict[int, int] = {}
    for i, entry in enumerate(procs):
        pid = entry.get("pid") if isinstance(entry, dict) else None
        nbytes = entry.get("shared_bytes") if isinstance(entry, dict) else None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (pid, nbytes)):
            raise SharedMemoryError(f"{where}: processes[{i}] needs non-negative integers "
                                    "pid and shared_bytes")
        assert isinstance(pid, int) and isinstance(nbytes, int)
        out[pid] = out.get(pid, 0) + nbytes
    return out


def resolve_spec(spec: str, platform: str | None = None) -> str:
    """``auto`` made concrete: ``pdh`` on Windows, ``off`` elsewhere."""
    if spec != "auto":
        return spec
    return "pdh" if (platform or sys.platform) == "win32" else "off"


def shared_source_from_spec(spec: str, platform: str | None = None) -> SharedSource | None:
    """The source HELIX_BFM_SHARED_SOURCE names; None when it is off."""
    spec = resolve_spec(spec, platform)
    if spec == "off":
        return None
    if spec == "pdh":
        return PdhSharedSource()
    if spec.startswith("file:") and len(spec) > 5:
        return FileSharedSource(spec[5:])
    raise SharedMemoryError(f"unknown shared-memory source {spec!r} "
                            "(expected auto, pdh, off or file:PATH)")


OFF_REASON = ("off: only Windows (WDDM) counts a process's shared GPU memory; "
              "elsewhere the driver does not spill, it fails the allocation")

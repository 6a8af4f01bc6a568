"""A host whose process start times read early: the test of
``crawlguard.kernel.processes.CREATE_TIME_EARLY_S``.

Linux reports a process's creation time as the boot time from /proc/stat, whole
seconds rounded down, plus its start ticks: up to a second before the wall clock
at its start, depending on the fraction of a second at which the host booted.
With ``CRAWLGUARD_TEST_START_EARLY_S=<seconds>`` set and this folder on
``PYTHONPATH``, every Python process of a test run (pytest, the sidecar, the
exporter, ``up``, workers) sees psutil's creation times that many seconds before
the exact start, whatever this host's own boot fraction is::

    CRAWLGUARD_TEST_START_EARLY_S=1 PYTHONPATH=$PWD/tests/earlystart \\
        .venv/bin/python -m pytest -q -p no:cacheprovider

It replaces psutil's answer, below crawlguard's psutil boundary, as such a host
would, when something imports psutil (a process that never does, such as one
importing only ``crawlguard.sidecar.resume``, is left as it is). The
``early_starts`` fixture (tests/conftest.py) does the same for one test. Linux
only (it reads /proc/uptime); elsewhere it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

EARLY_VAR = "CRAWLGUARD_TEST_START_EARLY_S"
FRACTION_VAR = "CRAWLGUARD_TEST_BOOT_FRACTION"
"""What psutil's boot time (whole seconds) lacks against the exact one, measured once
per test run and inherited by every child: /proc/uptime has 10 ms steps, and all
processes must agree on every creation time, as on a real host."""


def boot_fraction() -> str | None:
    try:
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
    except OSError:
        return None
    import time

    import psutil

    return repr((time.time() - uptime) - psutil.boot_time())


def install(early: float) -> Callable[[], None]:
    """From now on this process sees creation times ``early`` seconds before the exact
    start; returns what undoes it."""
    import psutil

    known = os.environ.get(FRACTION_VAR) or boot_fraction()
    if known is None:
        return lambda: None
    os.environ[FRACTION_VAR] = known
    fraction = float(known)
    real = psutil.Process.create_time

    def create_time(self: Any) -> float:
        return float(real(self)) + fraction - early

    psutil.Process.create_time = create_time  # type: ignore[method-assign]

    def undo() -> None:
        psutil.Process.create_time = real  # type: ignore[method-assign]

    return undo


class _OnImport:
    """Installs the early start times right after psutil is imported. Libraries ask
    ``importlib.util.find_spec("psutil")`` without importing it (transformers does):
    every spec found carries the hook, and the hook leaves once it has run."""

    def __init__(self) -> None:
        self._finding = False

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "psutil" or self._finding:
            return None
        import importlib.util
        import sys

        self._finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            real_exec(module)
            sys.modules[name] = module
            if self in sys.meta_path:
                sys.meta_path.remove(self)
                install(float(os.environ[EARLY_VAR]))

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get(EARLY_VAR):
    import sys as _sys

    if "psutil" in _sys.modules:
        install(float(os.environ[EARLY_VAR]))
    else:
        _sys.meta_path.insert(0, _OnImport())

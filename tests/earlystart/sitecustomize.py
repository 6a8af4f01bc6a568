"""A host whose process start times read early: the test of
``crawlguard.kernel.processes.CREATE_TIME_EARLY_S``.

Linux reports a process's creation time as the boot time from /proc/stat, whole
seconds rounded down, plus its start ticks: up to a second before the wall clock
at its start, depending on the fraction of a second at which the host booted.
With ``CRAWLGUARD_TEST_START_EARLY_S=<seconds>`` set and this folder on
``PYTHONPATH``, every Python process of a test run (pytest, the sidecar, the
exporter, ``up``, workers) sees psutil's creation times that many seconds before
the exact start, whatever this host's own boot fraction is::

    CRAWLGUARD_TEST_START_EARLY_S=1 PYTHONPATH=tests/earlystart \\
        .venv/bin/python -m pytest -q -p no:cacheprovider

It replaces psutil's answer, below crawlguard's psutil boundary, as such a host
would. The ``early_starts`` fixture (tests/conftest.py) does the same for one test.
Linux only (it reads /proc/uptime); elsewhere it does nothing.
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


if os.environ.get(EARLY_VAR):
    install(float(os.environ[EARLY_VAR]))

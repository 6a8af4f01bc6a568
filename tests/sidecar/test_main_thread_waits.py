"""No untimed wait is left on the main thread of a long-running command.

On Windows before Python 3.14 an untimed ``Event.wait()``, ``Thread.join()`` or
lock ``acquire()`` cannot be interrupted (CPython issue 80116): Ctrl+C and
CTRL_BREAK would never reach the signal handler, and ``up`` would have to kill
the sidecar after its timeout. The modules that run on the main thread are
scanned for such calls; waits on worker threads live elsewhere.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from crawlguard.cli import lifecycle
from tests.helpers import REPO

MAIN_THREAD = [
    *sorted((REPO / "crawlguard" / "cli").glob("*.py")),
    *sorted((REPO / "crawlguard" / "supervisor").glob("*.py")),
    REPO / "crawlguard" / "rig" / "up.py",
    REPO / "crawlguard" / "rig" / "servers.py",
    REPO / "crawlguard" / "rig" / "demo.py",
    REPO / "sidecar" / "server.py",
    REPO / "exporter" / "server.py",
]
BLOCKING = {"wait", "join", "acquire", "communicate"}


def untimed_waits(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in BLOCKING and not node.args
                and not any(k.arg in ("timeout", "blocking") for k in node.keywords)):
            found.append(f"{path.name}:{node.lineno}: .{node.func.attr}()")
    return found


@pytest.mark.parametrize("path", MAIN_THREAD, ids=lambda p: str(p.relative_to(REPO)))
def test_no_untimed_waits(path: Path) -> None:
    assert untimed_waits(path) == []


def test_the_scan_finds_an_untimed_wait(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import threading\nstop = threading.Event()\nstop.wait()\n"
                      "stop.wait(0.2)\nt = threading.Thread()\nt.join(timeout=1)\n")
    assert untimed_waits(sample) == ["sample.py:3: .wait()"]


def test_wait_for_stop_returns_once_stop_is_set() -> None:
    stop = threading.Event()
    setter = threading.Timer(0.05, stop.set)
    setter.start()
    lifecycle.wait_for_stop(stop)
    assert stop.is_set()
    setter.join(5)


def test_the_signal_handler_takes_no_lock() -> None:
    """A handler runs on the main thread between two bytecodes, possibly while that
    thread holds the stop event's lock inside Event.wait. Event.set() there would
    deadlock for good (a sidecar once hung on a futex after SIGTERM)."""
    import signal

    with lifecycle.shutdown_on_signals() as stop:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)

        def signal_while_holding_the_lock() -> None:
            with stop._cond:  # type: ignore[attr-defined]  # as inside Event.wait
                handler(signal.SIGTERM, None)

        t = threading.Thread(target=signal_while_holding_the_lock, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "the handler blocked on the stop event's lock"
        assert stop.is_set() and stop.wait(0)

"""QuickEdit is off while any crawlguard command runs in a Windows console (issue 20).

Faked at the OS boundary (``winconsole.ConsoleApi``): the exact modes passed to
SetConsoleMode, on the console input buffer, and the restore on exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from crawlguard.cli import main as cli_main
from crawlguard.kernel import winconsole
from tests.winfakes import installed

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fakes Windows on POSIX")

DEFAULT = 0x1F7
"""A console's default input mode: processed, line, echo, window, mouse, insert,
QuickEdit, extended flags, auto-position."""


class FakeConsole:
    def __init__(self, mode: int | None = DEFAULT) -> None:
        self.mode = mode
        self.calls: list[tuple[str, Any]] = []

    def open_input(self) -> int | None:
        self.calls.append(("open", "CONIN$"))
        return None if self.mode is None else 42

    def get_mode(self, handle: int) -> int | None:
        assert handle == 42
        return self.mode

    def set_mode(self, handle: int, mode: int) -> bool:
        assert handle == 42
        self.calls.append(("set", mode))
        self.mode = mode
        return True

    def close(self, handle: int) -> None:
        self.calls.append(("close", handle))


@pytest.fixture
def console(windows: None) -> Iterator[FakeConsole]:
    with installed(winconsole.set_api, FakeConsole()) as fake:
        yield fake


def test_quick_edit_is_off_meanwhile_and_back_after(console: FakeConsole) -> None:
    with winconsole.quick_edit_off() as switched:
        assert switched
        # Without QuickEdit, with ENABLE_EXTENDED_FLAGS (without it the change is ignored).
        assert console.calls == [("open", "CONIN$"), ("set", 0x1B7)]
    assert console.calls[2:] == [("set", DEFAULT), ("close", 42)]


def test_a_mode_someone_else_changed_meanwhile_is_left_alone(console: FakeConsole) -> None:
    with winconsole.quick_edit_off():
        console.mode = 0x1A7   # another process on the console changed it
    assert ("set", DEFAULT) not in console.calls and console.calls[-1] == ("close", 42)


@pytest.mark.parametrize("mode", [None, 0x1B7])
def test_no_console_or_quick_edit_already_off_changes_nothing(console: FakeConsole,
                                                             mode: int | None) -> None:
    console.mode = mode
    with winconsole.quick_edit_off() as switched:
        assert not switched
    assert not [c for c in console.calls if c[0] == "set"]


def test_every_command_runs_with_quick_edit_off(console: FakeConsole,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int | None] = []

    def build_parser(command: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.add_argument("-v", "--verbose", action="store_true")
        parser.add_argument("command")
        parser.set_defaults(func=lambda args: seen.append(console.mode) or 0)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", build_parser)
    assert cli_main.main(["anything"]) == 0
    assert seen == [0x1B7] and console.mode == DEFAULT


def test_off_windows_nothing_is_asked() -> None:
    old = winconsole.set_api(None)
    try:
        with winconsole.quick_edit_off() as switched:
            assert not switched
    finally:
        winconsole.set_api(old)

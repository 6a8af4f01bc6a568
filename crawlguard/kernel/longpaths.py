r"""Windows' 260-character path limit, checked before it can bite.

Shard and stage names may have 128 characters each, so under
``C:\ProgramData\crawlguard\state`` the longest state file's temporary name comes
to about 360 characters. Past ``MAX_PATH`` Windows fails the open with "path not
found" unless long paths are enabled (``LongPathsEnabled`` in the registry; the
python.org interpreter is long-path aware), and a reader would take that for
"absent". So on Windows without long paths: the start of ``up``, ``run`` and
``sidecar`` refuses a state dir that leaves no room for reasonable names and
otherwise names the registry setting, and ``StateDir`` refuses any shard or stage
name whose files would pass the limit (``UnsafeNameError``), never a silent miss.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from .errors import ConfigError

MAX_PATH = 260
"""Including the terminating NUL: a usable path has at most 259 characters."""
REGISTRY_SETTING = (r"HKLM\SYSTEM\CurrentControlSet\Control\FileSystem\LongPathsEnabled=1 "
                    r"(gpedit: Enable Win32 long paths)")
TEMP_SLACK = 14
"""What the atomic writer adds to a file name: '.' + name + '.' + 8 random + '.tmp'."""
LONGEST_NAME = 128
MIN_ROOM = 32
"""Shard and stage names shorter than this must always fit, or the start is refused."""


@functools.cache
def long_paths_enabled() -> bool:
    """True off Windows, and on Windows when LongPathsEnabled is 1."""
    if sys.platform != "win32":
        return True
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                            r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            value, _ = winreg.QueryValueEx(key, "LongPathsEnabled")
        return int(value) == 1
    except (OSError, ValueError, TypeError):
        return False


def limited() -> bool:
    return sys.platform == "win32" and not long_paths_enabled()


def too_long(path: Path) -> bool:
    """Whether writing ``path`` atomically would pass MAX_PATH here."""
    return limited() and len(os.path.abspath(path)) + TEMP_SLACK >= MAX_PATH


def _longest(root: Path, name_len: int) -> int:
    name = "x" * name_len
    return len(os.path.abspath(root / "shards" / name / f"baseline-{name}-cuda9999.json")) \
        + TEMP_SLACK


def check_state_dir(root: Path) -> str | None:
    """At start: None when every path fits; a warning naming the setting when only
    names shorter than 128 fit; ConfigError when not even short names would."""
    if not limited() or _longest(root, LONGEST_NAME) < MAX_PATH:
        return None
    if _longest(root, MIN_ROOM) >= MAX_PATH:
        raise ConfigError("HELIX_BFM_STATE_DIR", str(root),
                          f"too long for Windows' {MAX_PATH}-character path limit even with "
                          f"{MIN_ROOM}-character shard and stage names: use a shorter path "
                          f"or set {REGISTRY_SETTING}")
    room = LONGEST_NAME
    while room > MIN_ROOM and _longest(root, room) >= MAX_PATH:
        room -= 1
    return (f"long paths are off on this Windows: shard and stage names longer than {room} "
            f"characters will be refused under {root}; set {REGISTRY_SETTING} to lift this")

"""Files and folders only this user may use: made so at creation, checked at start.

Making them (``make_dir``, ``create_file``):

- POSIX: a folder with mode 0700, a file with 0600, given to the creating call
  (``os.mkdir``, ``os.open``), so neither is ever wider, not even for a moment.
- Windows: the modes mean nothing there; the same intent is a security
  descriptor in the creating call (``winacl``): a protected DACL, nothing
  inherited, full control for the current user, SYSTEM and Administrators.

Checking what exists (``others_may_write``, ``others_may_read``): POSIX, the
mode's bits for others; Windows, the owner and every allow entry of the DACL
(``winacl.untrusted``). The state dir is refused at start when others may
write it (``StateDir.open_for_service``): whoever can write ``worker.json``
decides which process a rung signals. A token file others may read is warned
about (``crawlguard doctor``, and so ``up``'s pre-flight).
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

from . import winacl


def _user() -> str:
    return winacl.api().user_sid()


def make_dir(path: Path) -> bool:
    """Create the folder ``path`` private (its parents as they come); False when it
    already existed (then it is left as it is: check it with ``others_may_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if sys.platform == "win32":
            winacl.api().create_directory(str(path), winacl.private_sddl(_user(), True))
        else:
            os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def create_file(path: Path) -> int:
    """A new file only this user may read, open for writing (a file descriptor);
    FileExistsError when ``path`` exists."""
    if sys.platform == "win32":
        return winacl.api().create_file(str(path), winacl.private_sddl(_user(), False))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _windows(path: Path, rights: int) -> list[str]:
    return winacl.untrusted(winacl.api().read_sddl(str(path)), _user(), rights)


def others_may_write(path: Path) -> list[str]:
    """Who besides this user (and SYSTEM, Administrators) may create or change files in
    ``path``, one line each; OSError when it cannot be told."""
    if sys.platform == "win32":
        return _windows(path, winacl.WRITE_RIGHTS)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    who = [w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "every user"))
           if mode & bit]
    return [f"{' and '.join(who)} may write it (mode {mode:04o})"] if who else []


def others_may_read(path: Path) -> list[str]:
    """Who besides this user (and SYSTEM, Administrators) may read the file ``path``."""
    if sys.platform == "win32":
        return _windows(path, winacl.READ_RIGHTS)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return ([f"{'others' if mode & stat.S_IROTH else 'its group'} may read it (mode {mode:04o})"]
            if mode & (stat.S_IRGRP | stat.S_IROTH) else [])


def fix_for_dir(path: Path) -> str:
    """The command that makes the folder ``path`` private."""
    if sys.platform == "win32":
        return (f'icacls "{path}" /inheritance:r /grant:r "%USERDOMAIN%\\%USERNAME%:(OI)(CI)F" '
                '"*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F", then remove every other '
                "entry icacls lists (or run deploy/windows/setup.ps1)")
    return f"chmod go-w {shlex.quote(str(path))}"

"""A file only its owner may read: the generated sidecar token of `crawlguard up`.

POSIX: created with mode 0600 (``os.open``'s mode, so it is never readable by
others, not even between creation and a chmod). Windows: ``os.chmod`` only
toggles the read-only flag (Python's docs), and the file would inherit the state
dir's ACL, which under %ProgramData% lets Users read it. So there ``icacls``
removes the inherited entries and grants the current user alone; if that fails
the file is deleted and the start refused rather than leaving the token readable.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from crawlguard.kernel.errors import StateError

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def owner_only_acl(path: Path, user: str) -> list[str]:
    """The icacls command that leaves ``user`` as the only one with access to ``path``."""
    return ["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:F"]


def write_private(path: Path, text: str, run: Runner = _run) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous run's file may carry a wider ACL or mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if sys.platform != "win32":
        return
    user = os.environ.get("USERNAME", "")
    domain = os.environ.get("USERDOMAIN", "")
    who = f"{domain}\\{user}" if domain and user else user
    try:
        done = run(owner_only_acl(path, who)) if who else None
        ok = done is not None and done.returncode == 0
        why = "USERNAME is not set" if done is None else (done.stderr or done.stdout).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        ok, why = False, str(exc)
    if not ok:
        with contextlib.suppress(OSError):
            path.unlink()
        raise StateError(f"cannot restrict {path} to {who or 'this user'} with icacls "
                         f"({why}); set HELIX_BFM_SIDECAR_TOKEN_FILE to a file you protected")

"""A file only its owner may read: the generated sidecar token of `crawlguard up`, and
the fleet's keys and tokens (``crawlguard fleet generate``).

It is created private by the creating call itself (``crawlguard.kernel.private``):
mode 0600 on POSIX; on Windows a security descriptor with a protected DACL (this
user, SYSTEM and Administrators; nothing inherited from the folder, which under
%ProgramData% lets Users read). So the text is never readable by anyone else,
not even between the creation and a later ACL change, when a handle opened in
between would have stayed valid.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from crawlguard.kernel import private
from crawlguard.kernel.errors import StateError


def write_private(path: Path, text: str) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous run's file may carry a wider ACL or mode
        fd = private.create_file(path)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc

"""Env files: ``KEY=VALUE`` lines that set knobs (``crawlguard up --env-file FILE``).

One format for every reader: ``crawlguard up``, systemd's ``EnvironmentFile=``
and ``deploy/windows/crawlguard.ps1`` all read it the same way::

    # a comment line
    HELIX_BFM_SIDECAR_HOST=10.0.0.12
    HELIX_BFM_TLS_CERT_FILE=tls.crt

Blank lines and lines starting with ``#`` are skipped; the value is everything
after the first ``=``, stripped, with no quotes and no expansion. A value of a
``*_FILE`` or ``*_DIR`` key that is a relative path is taken relative to the env
file's own folder, so a folder written by ``crawlguard fleet generate`` can be
copied anywhere on a rig and still names its own certificate, key and token.
(systemd and PowerShell take such a path relative to the working directory:
the generated files are meant for ``--env-file``.)

Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FLAG = "--env-file"


def parse(text: str, where: str = FLAG) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(where, f"line {number}", "expected KEY=VALUE (a variable name, "
                              "'=', the value) or a '#' comment")
        out[key] = value.strip()
    return out


def read(path: Path) -> dict[str, str]:
    """The variables of the env file at ``path``, relative paths made absolute."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad may write a BOM
    except OSError as exc:
        raise ConfigError(FLAG, str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(FLAG, str(path), "not UTF-8 text") from exc
    values = parse(text, f"{FLAG} {path}")
    base = path.resolve().parent
    for key, value in values.items():
        if value and key.endswith(("_FILE", "_DIR")) and not Path(value).is_absolute():
            values[key] = str(base / value)
    return values


def overlay(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``values`` on top. A knob and its ``_FILE`` form are alternatives
    (HELIX_BFM_SIDECAR_TOKEN or _TOKEN_FILE): setting one in ``values`` drops the other
    from ``env``, so the file wins instead of clashing with the shell."""
    out = dict(env)
    for key in values:
        twin = key[: -len("_FILE")] if key.endswith("_FILE") else key + "_FILE"
        if twin not in values:
            out.pop(twin, None)
    out.update(values)
    return out


def render(values: Mapping[str, str], header: str = "") -> str:
    """The text of an env file holding ``values`` (which must need no quoting)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if not _KEY.fullmatch(key) or "\n" in value or value != value.strip():
            raise ValueError(f"cannot write {key}={value!r} as an env file line")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"

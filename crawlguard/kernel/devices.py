"""Device strings: what a build was told to run on, and which GPU that is.

Three numberings meet here, and this module is the only place that converts
between them:

- the torch-style device string a build uses (``cpu``, ``cuda``, ``cuda:1``);
  ``cuda`` means ``cuda:0``;
- torch's CUDA index, which counts only the *visible* GPUs
  (``CUDA_VISIBLE_DEVICES``);
- NVML's index, which counts all GPUs; the VRAM series and the ``gpu`` label
  of the worker series use it, so the alert rules can join the two.

The device a supervisor launches a worker with comes from the variable named
by ``HELIX_BFM_DEVICE_VAR`` (``BGEM3_DEVICE``; the CPU rung sets it to
``cpu``); an unset variable means the build's default, assumed ``cuda:0``.
Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import UnsafeNameError

DEFAULT_DEVICE = "cuda:0"
"""What a build runs on when the device variable is unset."""
# A device name carries a colon, which Windows forbids in paths: see file_part().
_DEVICE = re.compile(r"[a-z][a-z0-9_]{0,31}(:[0-9]{1,4})?")


def parse_device(value: object) -> str:
    """Validate a torch-style device name (``cpu``, ``cuda``, ``cuda:0``)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise UnsafeNameError("device", value, "expected a device like 'cpu', 'cuda' or 'cuda:0'")
    return value


def file_part(device: str) -> str:
    """The device as part of a file name: ``cuda:0`` -> ``cuda0`` (no colon on Windows)."""
    return parse_device(device).replace(":", "")


def gpu_label(device: str) -> str:
    """torch's CUDA index of ``device`` as a string; '' for a non-CUDA device."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return ""
    return index or "0"


def physical_gpu(device: str, env: Mapping[str, str]) -> str:
    """The ``gpu`` label: NVML's index of ``device``, through CUDA_VISIBLE_DEVICES.

    When CUDA_VISIBLE_DEVICES lists plain indices the label follows it; UUIDs
    cannot be mapped without NVML, so they keep the torch index.
    """
    index = gpu_label(device)
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not index or not visible:
        return index
    parts = [p.strip() for p in visible.split(",")]
    i = int(index)
    if i < len(parts) and parts[i].isdigit():
        return parts[i]
    return index


def launch_device(env: Mapping[str, str], device_var: str) -> str:
    """The device a worker launched with ``env`` was told to use (``cuda`` -> ``cuda:0``).

    ``device_var`` is ``Remediation.device_var`` (or ``settings.device_var_from_env``).
    """
    device = (env.get(device_var) or "").strip() or DEFAULT_DEVICE
    if device == "cuda":
        device = DEFAULT_DEVICE
    return parse_device(device)


def gpu_of_launch(env: Mapping[str, str], device_var: str) -> int | None:
    """NVML index of the GPU a worker launched with ``env`` uses; None for anything else.

    If the build actually runs on CPU although the variable is unset, its GPU's
    level never rises, and nothing waits on it.
    """
    try:
        device = launch_device(env, device_var)
    except UnsafeNameError:
        return None  # the worker will refuse it itself; there is no GPU to watch
    label = physical_gpu(device, env)
    return int(label) if label else None

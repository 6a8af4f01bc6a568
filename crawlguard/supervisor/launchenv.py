"""The environment a worker is launched with, and the small-rig CPU policy.

Precedence, lowest first:

1. the supervisor's own environment;
2. ``HELIX_BFM_SHARD`` and an absolute ``HELIX_BFM_STATE_DIR`` (the worker
   must write into the state dir the supervisor reads, whatever its cwd);
3. the policy 'CPU backfill by default on small rigs' (HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB):
   ``<device var>=cpu`` when the GPU is that small, unless the person set the
   device variable explicitly: a default never overrides a choice;
4. the shard's resume overrides from the state dir (the sidecar's rungs): they
   win over everything, because relaunching a demoted shard on the GPU would
   bring the crawl back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from crawlguard.gpu.vram import VramSource
from crawlguard.kernel.devices import gpu_of_launch
from crawlguard.kernel.errors import ResumeEnvError, VramError
from crawlguard.kernel.settings import ESTABLISHED_VAR, Remediation
from crawlguard.kernel.statedir import StateDir, check_present
from crawlguard.sidecar.resume import resume_env

_RETRIES = 5


def read_overrides(state: StateDir, shard: str) -> dict[str, str]:
    """The shard's resume overrides. Retried briefly: on Windows a reader can
    meet the sidecar's atomic rename for a moment. Then an error, never {}."""
    # A vanished state dir reads as "no overrides": a CPU-demoted shard back on GPU.
    check_present(state.root)
    for attempt in range(_RETRIES):
        try:
            return resume_env(state.root, shard)
        except ResumeEnvError:
            if attempt == _RETRIES - 1:
                raise  # a StateError already: the supervisor's exit 2
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def launch_env(base: Mapping[str, str], state: StateDir, shard: str,
               policy: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env["HELIX_BFM_SHARD"] = shard
    env["HELIX_BFM_STATE_DIR"] = str(state.root.resolve())
    env[ESTABLISHED_VAR] = "1"  # made by this supervisor: a worker never makes it afresh
    for key, value in policy.items():
        env.setdefault(key, value)
    env.update(read_overrides(state, shard))
    return env


def small_rig_policy(rem: Remediation, source: VramSource | None,
                     base: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """``({device_var: "cpu"}, note)`` when the policy applies, else ``({}, note)``."""
    limit = rem.cpu_backfill_max_vram_gb
    knob = "HELIX_BFM_CPU_BACKFILL_MAX_VRAM_GB"
    if limit <= 0:
        return {}, ""
    if (base.get(rem.device_var) or "").strip():
        return {}, (f"{knob}={limit:g} not applied: {rem.device_var} is set explicitly "
                    f"({base[rem.device_var]})")
    gpu = gpu_of_launch(base, rem.device_var)
    if source is None or gpu is None:
        return {}, f"{knob}={limit:g} not applied: no VRAM source to size the GPU"
    try:
        total = next((g.total_bytes for g in source.read() if g.index == gpu), None)
    except VramError as exc:
        return {}, f"{knob}={limit:g} not applied: cannot size GPU {gpu}: {exc}"
    if total is None:
        return {}, f"{knob}={limit:g} not applied: {source.name} reports no GPU {gpu}"
    # GiB: a "12 GB" card reports 12 GiB or a little less through NVML.
    size = total / 2**30
    if size <= limit:
        return {rem.device_var: "cpu"}, (f"GPU {gpu} has {size:.1f} GB <= {knob}={limit:g}: "
                                         f"backfill starts on CPU ({rem.device_var}=cpu)")
    return {}, f"GPU {gpu} has {size:.1f} GB > {knob}={limit:g}: backfill starts on the GPU"

"""The soak's worker: the reference rebuild's own, plus a GPU out-of-memory on demand.

    python bench/soakworker.py work --data D --shard S [--time-scale N]   (as refbuild)

bench/soak.py drops ``<data>/<shard>/oom.trigger`` to order an OOM death. The next
batch a GPU worker of that shard starts takes the file (one rename: one death per
trigger, whichever worker gets it) and raises the error torch raises when the driver
cannot spill ("CUDA out of memory"), inside ``tracker.batch``: the tracker records
it, the exception leaves the worker and it dies, as a real build does with sysmem
fallback off. The death is logged to the shard's sim.jsonl (``event: oom``), the
moment its spill-to-action time is measured from. A CPU worker cannot run out of
VRAM: it takes the trigger and logs ``oom-skipped``.

The fault lives at the GPU edge (the simulated device); everything else is the
reference rebuild unchanged.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from crawlguard.refbuild import simdevice
from crawlguard.refbuild.__main__ import main

TRIGGER = "oom.trigger"

_run_batch = simdevice.SimDevice.run_batch


def _trigger(events: simdevice.EventLog | None) -> Path | None:
    if events is None:
        return None
    return events.path.parent / TRIGGER


def _run_batch_with_oom(self: simdevice.SimDevice, genes: int, stop: threading.Event) -> None:
    trigger = _trigger(self.events)
    if trigger is not None and trigger.exists():
        taken = trigger.with_name(f".{TRIGGER}.{os.getpid()}")
        try:
            os.replace(trigger, taken)
        except OSError:
            taken = None  # another worker took it first
        if taken is not None:
            with contextlib.suppress(OSError):
                taken.unlink()
            if not self.is_gpu:
                self.finish("oom-skipped")
            else:
                self.finish("oom")
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                   "(bench/soak.py)")
    _run_batch(self, genes, stop)


simdevice.SimDevice.run_batch = _run_batch_with_oom  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())

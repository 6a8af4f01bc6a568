"""Issue 18 item 5: a full disk under `up` ends in the documented exit status with no
traceback. The state dir lies on a 2 MiB tmpfs (root only: skipped where `mount` is
refused); each worker fills the disk and dies of it, so the supervisor gives up after
HELIX_BFM_MAX_FUTILE_RESTARTS relaunches without a new gene (exit 3), while up's own
log file, the launch records and the run record cannot be written either."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Proc, clean_env, crawlguard_cmd

FILLER = textwrap.dedent("""
    import os, sys
    path = os.path.join(os.environ["HELIX_BFM_STATE_DIR"], "filler-%d" % os.getpid())
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"x" * 65536)
                f.flush()
    except OSError as exc:
        print("worker: %s" % exc.strerror, file=sys.stderr)
        sys.exit(1)
""")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if sys.platform != "linux":
        pytest.skip("tmpfs: Linux only")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_ends_up_with_exit_3_and_no_traceback(
        small_disk: Path, tmp_path: Path) -> None:
    state = small_disk / "state"
    worker = tmp_path / "filler.py"
    worker.write_text(FILLER)
    vram = tmp_path / "vram.json"
    vram.write_text(json.dumps({"gpus": [{"index": 0, "used_bytes": 2 << 30,
                                          "total_bytes": 16 << 30}]}))
    env = clean_env(HELIX_BFM_VRAM_SOURCE=f"file:{vram}", HELIX_BFM_SIDECAR_PORT="0",
                    HELIX_BFM_MAX_FUTILE_RESTARTS="2", HELIX_BFM_GPU_RELEASE_TIMEOUT="0")
    up = Proc(crawlguard_cmd("up", "--alert-path", "embedded", "--progress", "lines",
                             "--state-dir", str(state), "--shard", "s",
                             "--", sys.executable, str(worker)),
              env=env, inherit_env=False)
    try:
        rc = up.wait(120)
    finally:
        up.stop()
    out = up.output
    assert rc == 3, out
    assert "Traceback" not in out, out
    assert "No space left on device" in out, out   # each failed write said in a line
    # up's log file on the full disk: said once, not per line
    assert out.count("cannot write the log file") <= 1, out

"""What importing crawlguard costs a build: the tracker, and resume for a build's own loop.

    .venv/bin/python bench/bench_import.py [--runs 21] [--site DIR]

Each statement runs in a fresh interpreter ``--runs`` times; prints the median,
min and max wall time of the import alone and which heavy libraries it loaded.
``--site DIR`` imports crawlguard from DIR (e.g. ``pip install --no-deps --target
DIR`` of another commit) instead of this venv's install, to compare two trees.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

STATEMENTS = ("from crawlguard import CrawlTracker", "import crawlguard.sidecar.resume")
HEAVY = ("pydantic", "psutil", "prometheus_client", "filelock", "httpx", "fastapi")
CODE = """
import sys, time
if {site!r}:
    sys.path.insert(0, {site!r})
t = time.perf_counter()
{statement}
took = time.perf_counter() - t
print(took, ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--site", default="", help="import crawlguard from this directory")
    args = parser.parse_args()
    for statement in STATEMENTS:
        code = CODE.format(site=args.site, statement=statement, heavy=HEAVY)
        times, loaded = [], ""
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                 text=True, check=True).stdout.split()
            times.append(float(out[0]) * 1000)
            loaded = out[1] if len(out) > 1 else "-"
        print(f"{statement:38s} median {statistics.median(times):6.1f} ms  "
              f"min {min(times):6.1f}  max {max(times):6.1f}  loads: {loaded}")


if __name__ == "__main__":
    main()

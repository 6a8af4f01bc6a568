"""Every logger of crawlguard sits under the one logger "crawlguard" (crawlguard.logs)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

# Loggers still named by bare __name__ in the engine modules, which another change
# rewrites; empty this set when they call crawlguard.logs.get_logger(__name__).
PENDING = {"sidecar.engine", "sidecar.judging", "sidecar.rungs"}

PROBE = """
import importlib, json, logging, pkgutil
for top in ("crawlguard", "exporter", "sidecar"):
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(sorted(name for name, logger in logging.root.manager.loggerDict.items()
                        if isinstance(logger, logging.Logger))))
"""


def test_every_module_logs_under_crawlguard() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = set(json.loads(proc.stdout))
    ours = {n for n in names if n.split(".")[0] in ("crawlguard", "exporter", "sidecar")}
    outside = {n for n in ours if not n.startswith("crawlguard")}
    assert outside <= PENDING, f"loggers outside the crawlguard namespace: {outside - PENDING}"
    assert "crawlguard.sidecar.actions" in ours and "crawlguard.exporter.collector" in ours

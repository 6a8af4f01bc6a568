"""Every logger of crawlguard sits under the one logger "crawlguard" (crawlguard.kernel.logs)."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path

import pytest

from crawlguard.kernel import logs

# Loggers still named by bare __name__ in the engine modules, which another change
# rewrites; empty this set when they call crawlguard.kernel.logs.get_logger(__name__).
PENDING: set[str] = set()


def test_every_module_logs_under_crawlguard() -> None:
    # Walked one by one: in a checkout the mapped folders are not under crawlguard/.
    for top in ("crawlguard", "crawlguard.exporter", "crawlguard.sidecar", "crawlguard.rules"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            if not info.name.endswith("__main__"):  # importing it would run it
                importlib.import_module(info.name)
    ours = {name for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger)
            and name.split(".")[0] in ("crawlguard", "exporter", "sidecar", "rules")}
    outside = {name for name in ours if not name.startswith("crawlguard")}
    assert outside <= PENDING, f"loggers outside the crawlguard namespace: {outside - PENDING}"
    assert {"crawlguard.sidecar.actions", "crawlguard.exporter.collector"} <= ours


def test_the_command_configures_only_the_crawlguard_logger(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = [(h, h.level) for h in root.handlers]
    logs.console()
    log = logs.get_logger("crawlguard.rig.up")
    assert log.name == "crawlguard.rig.up"
    assert logs.get_logger("crawlguard.kernel.settings").name == "crawlguard.kernel.settings"
    log.info("to the console")
    assert "crawlguard.rig.up INFO to the console" in capsys.readouterr().err
    with logs.to_file(tmp_path / "up.log"):
        log.info("to the file only")
        log.warning("to both")
    err = capsys.readouterr().err
    assert "to the file only" not in err and "to both" in err
    text = (tmp_path / "up.log").read_text()
    assert "to the file only" in text and "to both" in text
    log.info("console again")
    assert "console again" in capsys.readouterr().err
    assert [(h, h.level) for h in root.handlers] == before  # the root is not ours

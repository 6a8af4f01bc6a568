"""Every logger of crawlguard sits under the one logger "crawlguard" (crawlguard.kernel.logs)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

from crawlguard.kernel import logs
from tests.helpers import crawlguard_modules

# Loggers still named by bare __name__ in the engine modules, which another change
# rewrites; empty this set when they call crawlguard.kernel.logs.get_logger(__name__).
PENDING: set[str] = set()


def test_every_module_logs_under_crawlguard() -> None:
    for name in crawlguard_modules():
        importlib.import_module(name)
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

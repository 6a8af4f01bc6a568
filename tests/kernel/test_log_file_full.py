"""Issue 18 item 5: a log file on a full disk (/dev/full: every write is ENOSPC) costs
one line on stderr, never a traceback, neither per line nor at close."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crawlguard.kernel import logs


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_the_log_file_costs_one_line_and_no_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    log = logs.get_logger("crawlguard.test.full")
    with logs.to_file(Path("/dev/full")):
        for i in range(50):
            log.warning("line %d of a long run", i)
    err = capsys.readouterr().err
    assert err.count("cannot write the log file /dev/full") == 1, err
    assert "Traceback" not in err and "Logging error" not in err
    assert sys.exc_info() == (None, None, None)

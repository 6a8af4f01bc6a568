"""`up`'s sidecar port: the documented 9848 (what the README's curl and a client without
knobs reach) unless it is taken, then a free one, said at start; a port set in
HELIX_BFM_SIDECAR_PORT is used as set. (That a free 9848 is taken: test_operate_up.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawlguard.kernel.listen import set_listen_options
from crawlguard.kernel.settings import Settings
from crawlguard.rig.servers import port_free
from crawlguard.rig.up import RigConfig, RunningRig


def rig(tmp_path: Path, **knobs: str) -> RunningRig:
    env = {"HELIX_BFM_STATE_DIR": str(tmp_path), **knobs}
    return RunningRig(RigConfig(shards=("a",), command=("true",), env=env,
                                alert_path="embedded", settings=Settings.from_env(env)))


@pytest.fixture
def port_9848_taken() -> Iterator[None]:
    """9848 held by a listener (ours, or whoever holds it already)."""
    sock = socket.socket()
    set_listen_options(sock)  # as our servers bind: a port in TIME_WAIT is not "taken"
    try:
        sock.bind(("127.0.0.1", 9848))
        sock.listen()
    except OSError:
        pass  # taken by someone else: taken all the same
    yield
    sock.close()


def test_a_taken_default_port_gives_a_free_one_and_says_so(tmp_path: Path,
                                                          port_9848_taken: None) -> None:
    assert not port_free("127.0.0.1", 9848)
    r = rig(tmp_path)
    port = r._sidecar_port()
    assert port != 9848 and port_free("127.0.0.1", port)
    assert r._notes and "port 9848 is taken" in r._notes[0]


def test_a_port_set_in_the_knob_is_used_as_set(tmp_path: Path, port_9848_taken: None) -> None:
    r = rig(tmp_path, HELIX_BFM_SIDECAR_PORT="9848")
    assert r._sidecar_port() == 9848 and not r._notes   # its bind fails loudly instead
    assert rig(tmp_path, HELIX_BFM_SIDECAR_PORT="0")._sidecar_port() > 0

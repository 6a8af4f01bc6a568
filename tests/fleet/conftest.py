"""A generated fleet for the tests: three rigs on 127.0.0.2-4, the central host on 127.0.0.1.

Linux routes all of 127/8 to the loopback interface, so each rig has an address
of its own (and its certificate names it) without leaving this machine. Ports
are picked free per address, so the tests never collide with a real rig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlguard.fleet import fleetfile, pki
from crawlguard.fleet.generate import generate
from crawlguard.fleet.layout import Layout
from crawlguard.kernel.tls import TlsFiles
from crawlguard.rig.servers import free_port

RIG_HOSTS = {"rig1": "127.0.0.2", "rig2": "127.0.0.3", "rig3": "127.0.0.4"}


@dataclass
class GeneratedFleet:
    fleet_file: Path
    layout: Layout
    data: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.layout.root

    def rig_tls(self, rig: str) -> TlsFiles:
        d = self.layout.rig_dir(rig)
        return TlsFiles(cert=d / "tls.crt", key=d / "tls.key", ca=d / "ca.crt")

    def central_tls(self) -> TlsFiles:
        t = self.layout.central_tls
        return TlsFiles(cert=t / "client.crt", key=t / "client.key", ca=t / "ca.crt")

    def token(self, rig: str) -> str:
        return (self.layout.rig_dir(rig) / "token").read_text().strip()

    def rig(self, name: str) -> fleetfile.Rig:
        return fleetfile.find_rig(fleetfile.load(self.fleet_file).rigs, name)


def write_fleet(path: Path, **central: Any) -> dict[str, Any]:
    data = {"central": {"host": "127.0.0.1", "prometheus_port": free_port("127.0.0.1"),
                        "alertmanager_port": free_port("127.0.0.1"), **central},
            "rigs": [{"name": name, "host": host, "exporter_port": free_port(host),
                      "sidecar_port": free_port(host)} for name, host in RIG_HOSTS.items()]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


@pytest.fixture
def gen_fleet(tmp_path: Path) -> GeneratedFleet:
    fleet_file = tmp_path / "fleet.yml"
    data = write_fleet(fleet_file, interval="1s", rig_down_for="4s")
    generate(fleetfile.load(fleet_file), tmp_path / "out")
    return GeneratedFleet(fleet_file, Layout((tmp_path / "out").resolve()), data)


@pytest.fixture
def stranger(tmp_path: Path) -> TlsFiles:
    """A client certificate from another CA (a valid one, for 127.0.0.1), and that CA."""
    folder = tmp_path / "stranger"
    folder.mkdir()
    ca_pem, ca_key = pki.new_ca()
    (folder / "ca.crt").write_bytes(ca_pem)
    (folder / "ca.key").write_bytes(ca_key)
    cert, key = pki.issue(pki.load_ca(folder / "ca.crt", folder / "ca.key"), "stranger",
                          ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"], server=True)
    (folder / "tls.crt").write_bytes(cert)
    (folder / "tls.key").write_bytes(key)
    return TlsFiles(cert=folder / "tls.crt", key=folder / "tls.key", ca=folder / "ca.crt")

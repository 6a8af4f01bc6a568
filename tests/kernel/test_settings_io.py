"""What parsing the knobs touches: the environment, and the token files the knobs name.

``crawlguard.kernel.settings`` says so in its docstring; an audit hook (in a child
process: hooks cannot be removed) records every file opened while every knob group
parses a full environment, and every socket made.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

PROBE = r"""
import json, sys
from crawlguard.kernel import settings

env = json.loads(sys.argv[1])
opened, sockets = [], []

def hook(event, args):
    if event == "open":
        opened.append(str(args[0]))
    elif event.startswith("socket."):
        sockets.append(event)

sys.addaudithook(hook)
settings.Settings.from_env(env)
settings.Preflight.from_env(env)
settings.unknown_knobs(env)
print(json.dumps({"opened": opened, "sockets": sockets}))
"""


def test_parsing_every_knob_opens_only_the_token_files(tmp_path: Path) -> None:
    sidecar_token, exporter_token = tmp_path / "sidecar.token", tmp_path / "exporter.token"
    for path in (sidecar_token, exporter_token):
        path.write_text("a-token-of-at-least-sixteen-characters\n")
    cert, key, ca = (tmp_path / n for n in ("tls.crt", "tls.key", "ca.crt"))
    for path in (cert, key, ca):
        path.write_text("not read while parsing\n")
    env = {
        "HELIX_BFM_STATE_DIR": str(tmp_path / "state"),
        "HELIX_BFM_VRAM_SOURCE": f"file:{tmp_path / 'vram.json'}",
        "HELIX_BFM_SHARED_SOURCE": f"file:{tmp_path / 'shared.json'}",
        "HELIX_BFM_SIDECAR_TOKEN_FILE": str(sidecar_token),
        "HELIX_BFM_EXPORTER_TOKEN_FILE": str(exporter_token),
        "HELIX_BFM_TLS_CERT_FILE": str(cert),
        "HELIX_BFM_TLS_KEY_FILE": str(key),
        "HELIX_BFM_TLS_CA_FILE": str(ca),
        "HELIX_BFM_PROMETHEUS_URL": "http://127.0.0.1:9090",
        "HELIX_BFM_ALERTMANAGER_URL": "http://127.0.0.1:9093",
        "HELIX_BFM_CRAWL_FACTOR": "4",
    }
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(env)], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert sorted(seen["opened"]) == sorted([str(sidecar_token), str(exporter_token)])
    assert seen["sockets"] == []

"""The command line imports only the chosen subcommand, and its help lists them all."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawlguard.cli import COMMANDS, load
from crawlguard.cli.main import build_parser
from tests.helpers import REPO, free_port

HEAVY = ("fastapi", "uvicorn", "starlette", "yaml")

PROBE = """
import json, sys
from crawlguard.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules
                                                  if m.count(".") <= 1)}))
"""


def imported_by(args: list[str], env: dict[str, str]) -> tuple[int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["code"]), set(result["modules"])


@pytest.mark.parametrize("args", [["env", "s1"], ["rung", "s1", "restart"]])
def test_light_commands_do_not_import_the_server_stack(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "HELIX_BFM_STATE_DIR": str(tmp_path),
           # Nothing listens there: `rung` fails fast with exit 2, after its imports.
           "HELIX_BFM_SIDECAR_URL": f"http://127.0.0.1:{free_port()}",
           "HELIX_BFM_SIDECAR_TOKEN": "t" * 16}
    # A shard the state dir knows (an empty ladder), so `env` answers and exits 0.
    (tmp_path / "shards" / "s1").mkdir(parents=True)
    (tmp_path / "shards" / "s1" / "ladder.json").write_text('{"schema": 1}')
    code, modules = imported_by(args, env)
    assert code == (0 if args[0] == "env" else 2)
    assert "crawlguard.cli" in modules  # the probe ran the real command line
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_help_lists_every_command_without_importing_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert name in out and command.help.split()[0] in out, name


def test_each_module_registers_exactly_its_commands() -> None:
    """The table and the modules agree: a command is where the table says."""
    for name in COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        load(name)(sub)
        mine = {n for n, c in COMMANDS.items() if c.module == COMMANDS[name].module}
        assert set(sub.choices) == mine, name

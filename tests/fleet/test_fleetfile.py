"""The fleet file, the env file, the fleet record, the answers of rigs, the new knobs:
every mistake is one line naming the field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlguard.cli.fleet import render
from crawlguard.fleet import fleetfile
from crawlguard.fleet.layout import Layout, read_record
from crawlguard.fleet.status import ladders, shards_served
from crawlguard.kernel import envfile
from crawlguard.kernel.errors import ConfigError, SidecarUnavailable
from crawlguard.kernel.settings import Settings

GOOD = {"central": {"host": "10.0.0.5"},
        "rigs": [{"name": "rig1", "host": "10.0.0.11"},
                 {"name": "rig2", "host": "ws-12.lab.example", "exporter_port": 19847,
                  "sidecar_port": 19848}]}


def load(tmp_path: Path, data: Any) -> fleetfile.Fleet:
    path = tmp_path / "fleet.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return fleetfile.load(path)


def test_the_contract_shape(tmp_path: Path) -> None:
    fleet = load(tmp_path, GOOD)
    assert fleet.central.host == "10.0.0.5" and fleet.central.interval is None
    assert fleet.central.rig_down_for == 60.0
    rig1, rig2 = fleet.rigs
    assert (rig1.exporter_port, rig1.sidecar_port) == (9847, 9848)
    assert rig2.sidecar_url == "https://ws-12.lab.example:19848"
    assert fleetfile.find_rig(fleet.rigs, "rig2") is rig2
    with pytest.raises(ConfigError, match="not in the fleet"):
        fleetfile.find_rig(fleet.rigs, "rig3")


def test_durations(tmp_path: Path) -> None:
    fleet = load(tmp_path, {**GOOD, "central": {"host": "h", "interval": "500ms",
                                                "rig_down_for": "1m30s"}})
    assert fleet.central.interval == 0.5 and fleet.central.rig_down_for == 90.0


def bad(change: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in change.items():
        target = data
        *path, last = dotted.split(".")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(("change", "where", "message"), [
    ({"central": KeyError}, "central", "is required"),
    ({"central.host": KeyError}, "central.host", "is required"),
    ({"central.hots": "x"}, "central", "unknown key"),
    ({"rigs": []}, "rigs", "at least one rig"),
    ({"rigs.0.name": "../etc"}, "rigs[0].name", "not a safe name"),
    ({"rigs.0.name": "con"}, "rigs[0].name", "reserved device name"),
    ({"rigs.1.name": "RIG1"}, "rigs[1].name", "already the name of rigs[0]"),
    ({"rigs.0.host": "http://10.0.0.11"}, "rigs[0].host", "no scheme"),
    ({"rigs.0.host": "0.0.0.0"}, "rigs[0].host", "not a wildcard"),
    ({"rigs.0.exporter_port": 70000}, "rigs[0].exporter_port", "between 1 and 65535"),
    ({"rigs.0.sidecar_port": 9847}, "rigs[0]", "already rig rig1's"),
    ({"rigs.1.host": "10.0.0.11", "rigs.1.exporter_port": 9847}, "rigs[1]", "already"),
    ({"central.interval": "5"}, "central.interval", "duration"),
    ({"central.rig_down_for": "0s"}, "central.rig_down_for", "longer than 0"),
    ({"central.runbook_url": "file:///x"}, "central.runbook_url", "http"),
    ({"rigs.0.cert": "rig1.crt"}, "rigs[0].key", "together"),
    ({"tls": {"ca_cert": "nope.crt"}}, "tls.ca_cert", "no such file"),
])
def test_mistakes_name_the_field(tmp_path: Path, change: dict[str, Any], where: str,
                                 message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, bad(change))
    assert info.value.knob.endswith(f": {where}"), info.value.knob
    assert message in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["central", "rigs", "tls", "host", "name",
                                                       "exporter_port", "sidecar_port",
                                                       "interval", "cert", "ca_cert", "x"]),
                                      inner, max_size=5), max_leaves=20))
def test_any_document_is_a_fleet_or_one_config_error(tmp_path: Path, doc: Any) -> None:
    try:
        fleet = load(tmp_path, doc)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert fleet.rigs


def test_env_files(tmp_path: Path) -> None:
    path = tmp_path / "rig" / "crawlguard.env"
    path.parent.mkdir()
    path.write_text("\ufeff# a comment\n\nHELIX_BFM_TLS_CERT_FILE = tls.crt\n"
                    "HELIX_BFM_SIDECAR_URL=https://10.0.0.1:9848\nABS_FILE=/etc/x\n"
                    "EMPTY=\nWITH_EQUALS=a=b\n", encoding="utf-8")
    values = envfile.read(path)
    assert values == {"HELIX_BFM_TLS_CERT_FILE": str((path.parent / "tls.crt").resolve()),
                      "HELIX_BFM_SIDECAR_URL": "https://10.0.0.1:9848", "ABS_FILE": "/etc/x",
                      "EMPTY": "", "WITH_EQUALS": "a=b"}
    with pytest.raises(ConfigError, match="line 2"):
        envfile.parse("A=1\nexport B=2\n")
    with pytest.raises(ConfigError, match="cannot read"):
        envfile.read(tmp_path / "missing.env")
    # A knob and its _FILE form: the file's choice replaces the shell's.
    shell = {"HELIX_BFM_SIDECAR_TOKEN": "from-the-shell-0123", "KEEP": "1"}
    assert envfile.overlay(shell, {"HELIX_BFM_SIDECAR_TOKEN_FILE": "/t"}) == {
        "KEEP": "1", "HELIX_BFM_SIDECAR_TOKEN_FILE": "/t"}
    assert envfile.render({"A": "1"}, "two\nlines") == "# two\n# lines\nA=1\n"
    with pytest.raises(ValueError):
        envfile.render({"A": "x\ny"})


@given(st.text(max_size=200))
def test_any_env_text_parses_or_names_its_line(text: str) -> None:
    try:
        values = envfile.parse(text)
    except ConfigError as exc:
        assert "line " in str(exc)
    else:
        assert all(k.isidentifier() or k.replace("_", "a").isalnum() for k in values)


@pytest.mark.parametrize(("env", "knob"), [
    ({"HELIX_BFM_TLS_CERT_FILE": "c.pem"}, "HELIX_BFM_TLS_KEY_FILE"),
    ({"HELIX_BFM_TLS_KEY_FILE": "k.pem"}, "HELIX_BFM_TLS_CERT_FILE"),
    ({"HELIX_BFM_ALLOW_PLAINTEXT": "maybe"}, "HELIX_BFM_ALLOW_PLAINTEXT"),
    ({"HELIX_BFM_EXPORTER_TOKEN": "short"}, "HELIX_BFM_EXPORTER_TOKEN"),
    ({"HELIX_BFM_EXPORTER_TOKEN": "t" * 16, "HELIX_BFM_EXPORTER_TOKEN_FILE": "/x"},
     "HELIX_BFM_EXPORTER_TOKEN_FILE"),
])
def test_the_new_knobs_refuse_bad_values(env: dict[str, str], knob: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.knob == knob


def test_the_new_knobs(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("e" * 30 + "\n")
    ep = Settings.from_env({"HELIX_BFM_TLS_CERT_FILE": "c.pem", "HELIX_BFM_TLS_KEY_FILE": "k",
                            "HELIX_BFM_SIDECAR_HOST": "10.0.0.12",
                            "HELIX_BFM_EXPORTER_TOKEN_FILE": str(token),
                            "HELIX_BFM_ALLOW_PLAINTEXT": "yes"}).endpoints
    assert ep.tls.serves and not ep.tls.mutual and ep.exporter_token == "e" * 30
    assert ep.sidecar_url == "https://10.0.0.12:9848"  # TLS: the certificate's host
    assert ep.allow_plaintext
    plain = Settings.from_env({}).endpoints
    assert plain.sidecar_url == "http://127.0.0.1:9848" and not plain.tls.serves
    assert plain.exporter_token is None and not plain.allow_plaintext


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(
                        ["version", "central", "rigs", "host", "name", "exporter_port",
                         "sidecar_port", "prometheus_port", "alertmanager_port", "shards",
                         "shard", "crawls", "rung", "env", "pending", "id", "unreadable"]),
                        inner, max_size=6), max_leaves=25)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON)
def test_any_fleet_record_is_read_or_refused_in_one_line(tmp_path: Path, doc: Any) -> None:
    layout = Layout(tmp_path)
    layout.record.write_text(json.dumps({"version": 1, **doc} if isinstance(doc, dict) else doc))
    try:
        read_record(layout)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@given(JSON)
def test_any_sidecar_answer_is_a_table_or_unreachable(doc: Any) -> None:
    try:
        found = ladders(doc)
    except SidecarUnavailable:
        return
    render([{"rig": "r", "reachable": True, "paused": found["paused"],
             "exporter": {"ok": True, "url": "u", "error": None, "shards": {}},
             "sidecar": {"ok": True, "url": "u", "error": None}, **found}])


@given(st.text(max_size=300) | st.sampled_from([
    'bfm_genes_total{shard="a"} NaN\n', 'bfm_genes_total{shard="a"} +Inf\n',
    'bfm_worker_info{shard="a",device="cuda:0"} 1\nbfm_genes_total{shard="a"} 12\n']))
def test_any_exporter_answer_is_read_or_refused(text: str) -> None:
    try:
        found = shards_served(text)
    except ValueError:
        return
    assert all(isinstance(v["genes"], int) for v in found.values())

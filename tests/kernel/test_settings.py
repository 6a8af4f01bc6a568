from __future__ import annotations

import re
from pathlib import Path

import pytest

from crawlguard.kernel.errors import ConfigError
from crawlguard.kernel.settings import (
    SET_FOR_CHILDREN,
    Detection,
    Endpoints,
    Remediation,
    Settings,
    knob_names,
    unknown_knob_lines,
    unknown_knobs,
)


def test_defaults_match_the_design_contract() -> None:
    s = Settings.from_env({})
    assert s.detection.factor == 5
    assert s.detection.window == 8
    assert s.detection.vram_full_ratio == 0.95
    assert s.remediation.action == "ladder"
    assert s.remediation.device_var == "BGEM3_DEVICE"
    assert s.state_dir == Path(".crawlguard")
    assert s.vram_source == "nvml"
    assert s.endpoints.token is None
    assert s.endpoints.sidecar_host == "127.0.0.1"
    assert s.endpoints.exporter_host == "127.0.0.1"


def test_knobs_are_read() -> None:
    env = {"HELIX_BFM_CRAWL_FACTOR": "3.5", "HELIX_BFM_CRAWL_WINDOW": "4",
           "HELIX_BFM_CRAWL_ACTION": "CPU", "HELIX_BFM_VRAM_FULL_RATIO": "0.9",
           "HELIX_BFM_VRAM_SOURCE": "file:/tmp/v.json",
           "HELIX_BFM_SIDECAR_TOKEN": " s3cret-0123456789 ",
           "HELIX_BFM_SIDECAR_PORT": "10000"}
    s = Settings.from_env(env)
    assert (s.detection.factor, s.detection.window, s.detection.vram_full_ratio) == (3.5, 4, 0.9)
    assert s.remediation.action == "cpu"
    assert s.vram_source == "file:/tmp/v.json"
    assert s.endpoints.token == "s3cret-0123456789"
    assert s.endpoints.sidecar_url == "http://127.0.0.1:10000"


@pytest.mark.parametrize("knob,value", [
    ("HELIX_BFM_CRAWL_FACTOR", "five"),
    ("HELIX_BFM_CRAWL_FACTOR", "1"),
    ("HELIX_BFM_CRAWL_FACTOR", "nan"),
    ("HELIX_BFM_CRAWL_WINDOW", "0"),
    ("HELIX_BFM_CRAWL_WINDOW", "2.5"),
    ("HELIX_BFM_CRAWL_ACTION", "reboot"),
    ("HELIX_BFM_VRAM_FULL_RATIO", "1.5"),
    ("HELIX_BFM_VRAM_FULL_RATIO", "0"),
    ("HELIX_BFM_SHARED_MIN_BYTES", "0"),
    ("HELIX_BFM_SHARED_MIN_BYTES", "512MiB"),
    ("HELIX_BFM_VRAM_SOURCE", "cuda"),
    ("HELIX_BFM_VRAM_SOURCE", "file:"),
    ("HELIX_BFM_EMA_ALPHA", "0"),
    ("HELIX_BFM_WARMUP_BATCHES", "-1"),
    ("HELIX_BFM_BASELINE_BATCHES", "0"),
    ("HELIX_BFM_DEVICE_VAR", "BGEM3 DEVICE"),
    ("HELIX_BFM_SIDECAR_PORT", "70000"),
    ("HELIX_BFM_SIDECAR_URL", "ftp://x"),
    ("HELIX_BFM_GRACE_SECONDS", "-3"),
    ("HELIX_BFM_HEADER_TIMEOUT", "0"),
    ("HELIX_BFM_HEADER_TIMEOUT", "soon"),
])
def test_bad_knob_names_the_knob_and_the_value(knob: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({knob: value})
    assert info.value.knob == knob
    assert knob in str(info.value) and repr(value) in str(info.value)


def test_shared_min_bytes_defaults_to_512_mib_and_is_read() -> None:
    assert Detection.from_env({}).shared_min_bytes == 512 * 2**20
    assert Detection.from_env({"HELIX_BFM_SHARED_MIN_BYTES": "1073741824"}
                              ).shared_min_bytes == 2**30


def test_groups_parse_only_their_knobs() -> None:
    # A build worker must not refuse to start over a sidecar knob.
    Detection.from_env({"HELIX_BFM_SIDECAR_PORT": "nope"})
    with pytest.raises(ConfigError):
        Endpoints.from_env({"HELIX_BFM_SIDECAR_PORT": "nope"})
    Remediation.from_env({"HELIX_BFM_CRAWL_FACTOR": "nope"})


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("abcdefghijklmnop\nrest\n")
    assert Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN_FILE": str(f)}).token == "abcdefghijklmnop"
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN_FILE": str(f)})
    with pytest.raises(ConfigError, match="cannot read"):
        Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN_FILE": str(tmp_path / "missing")})


def test_token_is_not_in_repr() -> None:
    assert "s3cret" not in repr(Endpoints(token="s3cret"))


def test_cli_reports_a_bad_knob_without_traceback(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlguard.cli.main import main

    monkeypatch.setenv("HELIX_BFM_CRAWL_WINDOW", "eight")
    assert main(["exporter", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "HELIX_BFM_CRAWL_WINDOW='eight'" in err
    assert "Traceback" not in err


def test_weak_or_ambiguous_tokens_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16") as err:
        Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN": "s3cret"})
    assert "s3cret" not in str(err.value)
    f = tmp_path / "token"
    f.write_text("short\n")
    with pytest.raises(ConfigError, match=r"HELIX_BFM_SIDECAR_TOKEN_FILE.*at least 16"):
        Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN_FILE": str(f)})
    f.write_text("a-long-enough-token\n")
    with pytest.raises(ConfigError, match="not both"):
        Endpoints.from_env({"HELIX_BFM_SIDECAR_TOKEN": "another-long-token",
                            "HELIX_BFM_SIDECAR_TOKEN_FILE": str(f)})


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "PYTHONPATH", "Path", "DYLD_LIBRARY_PATH",
                                  "HELIX_BFM_STATE_DIR", "HOME", "ComSpec"])
def test_the_device_variable_cannot_name_a_loader_or_interpreter_variable(name: str) -> None:
    with pytest.raises(ConfigError, match="HELIX_BFM_DEVICE_VAR"):
        Remediation.from_env({"HELIX_BFM_DEVICE_VAR": name})
    assert Remediation.from_env({"HELIX_BFM_DEVICE_VAR": "EMBED_DEVICE"}).device_var == \
        "EMBED_DEVICE"


# -- names that are no knob -------------------------------------------------------------

def test_unknown_knobs_name_the_closest_knob() -> None:
    env = {"HELIX_BFM_CRAWL_FACTR": "3", "HELIX_BFM_VRAMSOURCE": "file:x",
           "helix_bfm_crawl_window": "4", "HELIX_BFM_ZZZ": "1",
           "HELIX_BFM_CRAWL_FACTOR": "3", "HELIX_BFM_SHARD": "a", "PATH": "/bin",
           "XHELIX_BFM_CRAWL_FACTR": "3"}
    assert unknown_knobs(env) == [
        ("HELIX_BFM_CRAWL_FACTR", "HELIX_BFM_CRAWL_FACTOR"),
        ("HELIX_BFM_VRAMSOURCE", "HELIX_BFM_VRAM_SOURCE"),
        ("HELIX_BFM_ZZZ", None),                  # nothing close: no guess
        ("helix_bfm_crawl_window", "HELIX_BFM_CRAWL_WINDOW"),  # POSIX names are exact
    ]
    lines = unknown_knob_lines(env)
    assert lines[0] == ("HELIX_BFM_CRAWL_FACTR is not a knob crawlguard reads (ignored): "
                        "did you mean HELIX_BFM_CRAWL_FACTOR?")
    assert lines[2] == "HELIX_BFM_ZZZ is not a knob crawlguard reads (ignored)"
    assert unknown_knobs({k: "1" for k in knob_names() | SET_FOR_CHILDREN}) == []


def source_names() -> set[str]:
    """Every HELIX_BFM_* name spelled out in crawlguard's sources (a name built from
    parts, such as the TLS knobs' common prefix, ends in '_' and is left out)."""
    import crawlguard

    roots = {Path(crawlguard.__file__).parent}
    for sub in ("exporter", "sidecar", "rules", "deploy"):
        module = __import__(f"crawlguard.{sub}", fromlist=["_"])
        roots.add(Path(module.__file__).parent)
    names: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            names |= set(re.findall(r"\bHELIX_BFM_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def test_every_name_the_code_reads_is_a_known_knob() -> None:
    """Else `up` and doctor would call a name crawlguard does read a misspelling."""
    named = source_names() - {"HELIX_BFM_CRAWL_FACTR"}  # the docstrings' misspelled example
    assert "HELIX_BFM_CRAWL_FACTOR" in named
    assert named <= knob_names() | SET_FOR_CHILDREN, named - knob_names() - SET_FOR_CHILDREN

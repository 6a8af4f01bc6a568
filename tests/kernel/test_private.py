"""Private from creation, checked at start: the state dir and the token files (issue 20).

On Windows (faked at the OS boundary, tests/winfakes.py ``FakeAcl``) the checks
are on what crawlguard asks for: the security descriptor in the creating call
(``CreateDirectoryW``/``CreateFileW`` with SECURITY_ATTRIBUTES), never a content
first and an ACL after. The SDDL judgement is pure and runs as it does on
Windows. On POSIX the modes are real.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawlguard.doctor import checks
from crawlguard.fleet.generate import _Out
from crawlguard.fleet.layout import Layout
from crawlguard.kernel import private, winacl
from crawlguard.kernel.errors import StateError
from crawlguard.kernel.settings import Settings
from crawlguard.kernel.statedir import StateDir
from crawlguard.rig import secretfile
from tests.winfakes import PROGRAMDATA_SDDL, USER_SID, FakeAcl

fake_windows = pytest.mark.skipif(sys.platform == "win32", reason="fakes Windows on POSIX")
posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")

PRIVATE_DIR = f"D:P(A;OICI;FA;;;{USER_SID})(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
PRIVATE_FILE = f"D:P(A;;FA;;;{USER_SID})(A;;FA;;;SY)(A;;FA;;;BA)"


# -- Windows, at the boundary -------------------------------------------------------------------

@fake_windows
def test_the_state_dir_is_created_with_a_protected_dacl(acl: FakeAcl, tmp_path: Path) -> None:
    root = tmp_path / "ProgramData" / "crawlguard" / "state"
    StateDir(root).open_for_service()
    # Only the root carries a descriptor of its own; what it holds inherits it (OICI).
    assert [c for c in acl.calls if c[0] == "create_directory"] == [
        ("create_directory", str(root), PRIVATE_DIR)]
    desc = winacl.parse_sddl(acl.sddl[str(root)])
    assert desc.protected and not any(a.inherited for a in desc.aces)
    assert {a.sid for a in desc.aces} == {USER_SID, winacl.SYSTEM, winacl.ADMINISTRATORS}
    assert ("read_sddl", str(root), "") in acl.calls   # and checked at start


@fake_windows
def test_a_state_dir_others_may_write_is_refused_at_start(acl: FakeAcl, tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()   # made by hand (or setup.ps1 without /inheritance:r) under %ProgramData%
    acl.sddl[str(root)] = PROGRAMDATA_SDDL
    with pytest.raises(StateError) as err:
        StateDir(root).open_for_service()
    text = str(err.value)
    assert "is not private" in text and "BUILTIN\\Users (S-1-5-32-545) may write" in text
    assert "inherited entry" in text and "/inheritance:r" in text


@fake_windows
def test_a_folder_under_the_users_profile_passes(acl: FakeAcl, tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    acl.sddl[str(root)] = (f"O:{USER_SID}D:AI(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)"
                           f"(A;OICIID;FA;;;{USER_SID})")
    StateDir(root).open_for_service()


@fake_windows
def test_the_token_is_created_with_its_acl_in_the_creating_call(acl: FakeAcl,
                                                                tmp_path: Path) -> None:
    token = tmp_path / "sidecar.token"
    token.write_text("an old token, maybe readable by others\n")
    secretfile.write_private(token, "t" * 43 + "\n")
    # One call creates it with its descriptor; the text goes in through that handle.
    assert acl.calls == [("create_file", str(token), PRIVATE_FILE)]
    assert token.read_text() == "t" * 43 + "\n"
    assert private.others_may_read(token) == []


@fake_windows
def test_the_fleets_secrets_and_their_folders_are_private(acl: FakeAcl, tmp_path: Path) -> None:
    out = _Out(Layout(tmp_path / "fleet"))
    key = tmp_path / "fleet" / "rigs" / "rig-a" / "tls.key"
    out.private(key, "-----BEGIN PRIVATE KEY-----\n")
    assert ("create_directory", str(key.parent), PRIVATE_DIR) in acl.calls
    assert ("create_file", str(key), PRIVATE_FILE) in acl.calls


@fake_windows
def test_doctor_fails_a_state_dir_others_may_write_and_warns_a_readable_token(
        acl: FakeAcl, tmp_path: Path) -> None:
    root, token = tmp_path / "state", tmp_path / "sidecar.token"
    root.mkdir()
    token.write_text("x" * 40)
    acl.sddl[str(root)] = PROGRAMDATA_SDDL
    acl.sddl[str(token)] = (f"O:{USER_SID}D:AI(A;ID;FA;;;SY)(A;ID;FA;;;{USER_SID})"
                            "(A;ID;0x1200a9;;;BU)")
    rig = checks.CheckInputs(Settings.from_env({"HELIX_BFM_STATE_DIR": str(root)}),
                             env={"HELIX_BFM_SIDECAR_TOKEN_FILE": str(token)},
                             platform="win32")
    state = checks.check_state_dir_mode(rig)
    assert state.status == "fail" and "BUILTIN\\Users" in state.summary
    assert "icacls" in state.advice
    tok = checks.check_token_file(rig)
    assert tok.status == "warn" and "BUILTIN\\Users (S-1-5-32-545) may read" in tok.summary


def test_doctor_warns_a_windows_process_below_normal_priority(tmp_path: Path) -> None:
    settings = Settings.from_env({"HELIX_BFM_STATE_DIR": str(tmp_path)})
    task = checks.check_priority(checks.CheckInputs(settings, platform="win32",
                                                    priority=lambda: 0x4000))
    assert task.status == "warn" and "BELOW_NORMAL" in task.summary
    assert "-Priority 4" in task.advice
    by_hand = checks.check_priority(checks.CheckInputs(settings, platform="win32",
                                                       priority=lambda: 0x20))
    assert by_hand.status == "ok"


# -- the SDDL judgement -------------------------------------------------------------------------

def test_what_crawlguard_creates_is_trusted_and_programdata_is_not() -> None:
    for sddl in (PRIVATE_DIR, PRIVATE_FILE):
        assert winacl.untrusted(f"O:{USER_SID}" + sddl, USER_SID, winacl.WRITE_RIGHTS) == []
    found = winacl.untrusted(PROGRAMDATA_SDDL, USER_SID, winacl.WRITE_RIGHTS)
    # Users may read (0x1200a9: no write right) and create files and folders (DCLCRPCR).
    assert found == ["BUILTIN\\Users (S-1-5-32-545) may write (inherited entry, access mask "
                     "0x00000116)"]
    assert winacl.untrusted(PROGRAMDATA_SDDL, USER_SID, winacl.READ_RIGHTS) == [
        "BUILTIN\\Users (S-1-5-32-545) may read (inherited entry, access mask 0x001200A9)"]


@pytest.mark.parametrize(("sddl", "found"), [
    # Another user owns it: an owner can rewrite the DACL.
    ("O:S-1-5-21-9-9-9-1002D:P(A;OICI;FA;;;SY)", ["owns it"]),
    # An inherit-only grant reaches every file and folder made inside.
    ("O:BAD:P(A;OICIIO;FW;;;AU)", ["Authenticated Users (S-1-5-11) may write what it holds"]),
    # A deny entry grants nothing; CREATOR OWNER becomes the (trusted) creator.
    ("O:SYD:P(D;OICI;FA;;;WD)(A;OICIIO;GA;;;CO)", []),
    # OWNER RIGHTS is as trusted as the owner.
    (f"O:{USER_SID}D:P(A;;FA;;;OW)", []),
    ("O:S-1-5-21-9-9-9-1002D:P(A;;FA;;;OW)", ["owns it", "OWNER RIGHTS (S-1-3-4) may write"]),
    # An access right this parser does not know counts as every right.
    ("O:SYD:P(A;;ZZ;;;WD)", ["Everyone (S-1-1-0) may write"]),
    # A conditional entry nests parentheses.
    ("O:SYD:P(XA;;FA;;;WD;(@User.Project == \"x\"))", ["Everyone (S-1-1-0) may write"]),
    # No DACL at all (FAT32, a share): everyone may do anything.
    ("O:SYD:NO_ACCESS_CONTROL", ["Everyone may do anything"]),
])
def test_who_else_may_write(sddl: str, found: list[str]) -> None:
    lines = winacl.untrusted(sddl, USER_SID, winacl.WRITE_RIGHTS)
    assert len(lines) == len(found)
    for line, expected in zip(lines, found, strict=True):
        assert expected in line


@given(st.text(max_size=200))
def test_any_sddl_text_is_judged_never_a_crash(text: str) -> None:
    found = winacl.untrusted(text, USER_SID, winacl.WRITE_RIGHTS)
    if "D:" not in text:
        assert found and "nobody can tell" in found[0]   # refused, not trusted


def test_a_descriptor_that_does_not_parse_is_refused() -> None:
    assert winacl.untrusted("O:SYD:P(A;;FA)", USER_SID, winacl.WRITE_RIGHTS) == [
        "nobody can tell: malformed ACE (A;;FA) in 'O:SYD:P(A;;FA)'"]


# -- POSIX, for real ---------------------------------------------------------------------------

@posix
def test_a_created_state_dir_and_token_are_private_from_their_creation(tmp_path: Path) -> None:
    root = tmp_path / "state"
    StateDir(root).open_for_service()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    token = root / "sidecar.token"
    secretfile.write_private(token, "t" * 43)
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600


@posix
def test_a_state_dir_every_user_may_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(StateError, match=r"every user may write it \(mode 0777\).*chmod go-w"):
        StateDir(root).open_for_service()
    os.chmod(root, 0o775)   # a group member could plant a worker.json just the same
    with pytest.raises(StateError, match=r"its group may write it \(mode 0775\)"):
        StateDir(root).open_for_service()
    os.chmod(root, 0o755)
    StateDir(root).open_for_service()


@posix
def test_a_token_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "sidecar.token"
    token.write_text("x" * 40)
    os.chmod(token, 0o644)
    rig = checks.CheckInputs(Settings.from_env({"HELIX_BFM_STATE_DIR": str(tmp_path / "s")}),
                             env={"HELIX_BFM_SIDECAR_TOKEN_FILE": str(token)})
    found = checks.check_token_file(rig)
    assert found.status == "warn" and "others may read it (mode 0644)" in found.summary
    os.chmod(token, 0o600)
    assert checks.check_token_file(rig).status == "ok"

"""The Windows branches on a real Windows (the CI lane); skipped everywhere else.

Nothing is faked here: real Job Objects and TerminateJobObject, real socket
options, real process handles, real CTRL_BREAK_EVENTs (sent inside a hidden
console of their own: win_console_harness.py), a real venv launcher, real
ACLs, real PDH, and the real deploy/windows scripts under powershell.exe. What
needs a GPU, a person at the console or a reboot is checked by hand on a rig:
docs/windows-acceptance.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from crawlguard.gpu.shared import PdhSharedSource
from crawlguard.kernel import listen, longpaths, private, processes, winacl, winconsole, winjob
from crawlguard.kernel.errors import SharedMemoryError, StateError
from crawlguard.kernel.statedir import StateDir, write_json_atomic
from crawlguard.rig import secretfile
from crawlguard.supervisor import childproc
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="real Windows only")

WRAPPER = ("import subprocess, sys; "
           "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
           "print(c.pid, flush=True); sys.exit(c.wait())")


STUBBORN = ("import signal, subprocess, sys; signal.signal(signal.SIGBREAK, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGBREAK, signal.SIG_IGN); time.sleep(60)']); "
            "print(c.pid, flush=True); sys.exit(c.wait())")
"""A launcher and its child that both ignore CTRL_BREAK_EVENT: only the hard kill ends them."""


def launch(code: str = WRAPPER) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    popen = childproc.spawn([sys.executable, "-c", code], dict(os.environ),
                            stdout=subprocess.PIPE)
    assert popen.stdout is not None
    return popen, psutil.Process(int(popen.stdout.readline()))


def test_the_hard_kill_ends_the_launchers_child_too() -> None:
    popen, worker = launch(STUBBORN)
    try:
        assert childproc.job_of(popen) is not None
        assert childproc.stop_gracefully(popen, grace=0.5) != 0  # the job's exit code
        _, alive = psutil.wait_procs([worker], timeout=10)
        assert not alive
    finally:
        childproc.release(popen)
        if worker.is_running():
            worker.kill()


def test_closing_the_job_ends_what_is_left() -> None:
    popen, worker = launch()
    try:
        childproc.release(popen)   # what happens when the supervisor dies: handles close
        _, alive = psutil.wait_procs([worker], timeout=10)
        assert not alive
    finally:
        popen.wait(10)


def test_a_second_listener_on_the_port_is_refused() -> None:
    first = socket.socket()
    listen.set_listen_options(first)
    first.bind(("127.0.0.1", 0))
    first.listen()
    second = socket.socket()
    try:
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what a stale one did
        with pytest.raises(OSError):
            second.bind(first.getsockname())
    finally:
        second.close()
        first.close()


def test_the_long_paths_setting_can_be_read() -> None:
    assert longpaths.long_paths_enabled() in (True, False)


# -- issue 20: what only a real Windows can show ------------------------------------------------

HARNESS = Path(__file__).with_name("win_console_harness.py")


def in_own_console(tmp_path: Path, scenario: str, arg: str = "") -> dict[str, Any]:
    """Run a scenario of win_console_harness.py in a new, hidden console: a break sent
    there can reach nothing of the CI runner's."""
    out = tmp_path / "result.json"
    startup = subprocess.STARTUPINFO()  # type: ignore[attr-defined,unused-ignore]
    startup.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # type: ignore[attr-defined,unused-ignore]
    startup.wShowWindow = 0  # SW_HIDE
    subprocess.run([sys.executable, str(HARNESS), scenario, str(out), arg], check=True,
                   timeout=240, startupinfo=startup,
                   creationflags=subprocess.CREATE_NEW_CONSOLE)  # type: ignore[attr-defined,unused-ignore]
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert "error" not in result, result["error"]
    return result


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv's Scripts\\python.exe: a launcher that runs the real interpreter as a child."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    return str(root / "Scripts" / "python.exe")


def test_a_ctrl_break_reaches_only_its_group(tmp_path: Path) -> None:
    seen = in_own_console(tmp_path, "group_break")
    assert seen["a"] == "signalled" and seen["a_code"] == 0 and seen["a_salvaged"]
    assert seen["b_alive_after_a"]           # the other group did not get it
    assert seen["b"] == "signalled"
    assert not seen["harness_got_break"]     # nor did the process that sent it


def test_a_venv_launchers_interpreter_is_stopped_through_the_group_killed_through_the_job(
        tmp_path: Path, venv_python: str) -> None:
    seen = in_own_console(tmp_path, "venv_launcher", venv_python)
    assert seen["worker_pid"] != seen["launcher_pid"]   # the interpreter is the child
    assert seen["job"]
    # Graceful: the break to the launcher's group reached the interpreter, which salvaged;
    # the launcher passed its exit status on.
    assert seen["graceful_code"] == 0 and seen["salvaged"] == str(seen["worker_pid"])
    # Ignored: the job's hard kill ended the launcher and its child.
    assert seen["stubborn_code"] == winjob.KILLED_EXIT_CODE and seen["stubborn_worker_gone"]


def test_the_rung_pins_signals_and_reads_the_exit_status(tmp_path: Path,
                                                         venv_python: str) -> None:
    seen = in_own_console(tmp_path, "rung", venv_python)
    assert seen["handler"]["outcome"] == "signalled" and seen["handler"]["salvaged"]
    assert "nothing was salvaged" not in seen["handler"]["detail"]
    # No SIGBREAK handler: Windows ends it at once; the exit status says so.
    assert seen["none"]["outcome"] == "signalled" and not seen["none"]["salvaged"]
    assert "0xC000013A" in seen["none"]["detail"]
    assert not seen["harness_got_break"]


def test_quick_edit_is_switched_off_and_back(tmp_path: Path) -> None:
    seen = in_own_console(tmp_path, "quick_edit")
    quick = winconsole.ENABLE_QUICK_EDIT_MODE
    assert seen["switched"] and seen["before"] & quick
    assert not seen["during"] & quick and seen["after"] & quick


def test_a_held_handle_pins_reads_and_terminates_the_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        seen = processes.look(child.pid)
        assert seen is not None
        with processes.Target(child.pid) as wrong:
            assert wrong.pin(seen.create_time - 10) == "mismatch"
        with processes.Target(child.pid) as target:
            assert target.pin(seen.create_time) == "ok"   # GetProcessTimes agrees with psutil
            target.kill()                                  # TerminateProcess on the handle
            assert target.wait(10)
            assert target.exit_code() == winjob.KILLED_EXIT_CODE
    finally:
        child.kill()
        child.wait()


def test_a_rename_onto_a_file_held_open_is_retried(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ladder.json"
    target.write_text("{}", encoding="utf-8")
    reader = open(target, "rb")  # noqa: SIM115  a reader mid-read: no FILE_SHARE_DELETE
    refused: list[OSError] = []
    real_replace = os.replace

    def replace(src: str, dst: Any) -> None:
        try:
            real_replace(src, dst)
        except PermissionError as exc:
            refused.append(exc)
            reader.close()   # the reader finishes; the next attempt must succeed
            raise

    monkeypatch.setattr(os, "replace", replace)
    try:
        write_json_atomic(target, {"rung": 1})
    finally:
        reader.close()
    assert refused and getattr(refused[0], "winerror", None) in (5, 32)
    assert json.loads(target.read_text(encoding="utf-8")) == {"rung": 1}


def test_the_pdh_source_says_when_its_counter_set_is_absent() -> None:
    src = PdhSharedSource(counter="\\crawlguard No Such Counter Set(*)\\Shared Usage")
    with pytest.raises(SharedMemoryError, match="counter set 'GPU Process Memory' is absent"):
        src.read([os.getpid()])
    # The real counter set: a reading (no GPU: empty) or that same clear error.
    real = PdhSharedSource()
    try:
        assert isinstance(real.read([os.getpid()]), dict)
    except SharedMemoryError as exc:
        assert "PDH" in str(exc)
    finally:
        real.close()


def test_the_state_dir_and_token_get_their_acl_at_creation_with_nothing_inherited(
        tmp_path: Path) -> None:
    user = winacl.api().user_sid()
    root = tmp_path / "state"
    StateDir(root).open_for_service()
    token = root / "sidecar.token"
    secretfile.write_private(token, "t" * 43)
    for path in (root, token):
        desc = winacl.parse_sddl(winacl.api().read_sddl(str(path)))
        assert desc.protected, path
        assert not [a for a in desc.aces if a.inherited], path
        assert {a.sid for a in desc.aces} == {user, winacl.SYSTEM, winacl.ADMINISTRATORS}
    assert private.others_may_write(root) == [] and private.others_may_read(token) == []
    # What is made inside inherits the root's entries, and only those.
    inside = StateDir(root).ensure(root / "shards" / "a")
    assert private.others_may_write(inside) == []


def test_a_state_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir()
    subprocess.run(["icacls", str(root), "/grant", "*S-1-1-0:(OI)(CI)M"], check=True,
                   capture_output=True, timeout=30)
    with pytest.raises(StateError, match=r"not private: Everyone \(S-1-1-0\) may write"):
        StateDir(root).open_for_service()


POWERSHELL = "powershell.exe"
FAKE_CRAWLGUARD = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
n = len(list(here.glob("run-*")))
(here / f"run-{n}").write_text(json.dumps(sys.argv[2:]))
codes = json.loads((here / "codes.json").read_text())
sys.exit(codes[min(n, len(codes) - 1)])
"""


def run_script(config: Path, codes: list[int], env_lines: str = "",
               *extra: str) -> subprocess.CompletedProcess[str]:
    """deploy/windows/crawlguard.ps1 with a fake crawlguard.exe that exits with ``codes``."""
    config.mkdir(exist_ok=True)
    (config / "fake.py").write_text(FAKE_CRAWLGUARD)
    (config / "codes.json").write_text(json.dumps(codes))
    fake = config / "fake.cmd"
    fake.write_text(f'@"{sys.executable}" "{config / "fake.py"}" "{config}" %*\r\n'
                    "@exit /b %ERRORLEVEL%\r\n")
    (config / "crawlguard.env").write_text(
        f"# test\r\nCRAWLGUARD_EXE={fake}\r\nCRAWLGUARD_SHARDS=a b\r\n"
        f"CRAWLGUARD_BUILD_CMD=python -c pass\r\n{env_lines}")
    return subprocess.run(
        [POWERSHELL, "-NoProfile", "-ExecutionPolicy", "Bypass", "-File",
         str(REPO / "deploy" / "windows" / "crawlguard.ps1"), "-ConfigDir", str(config),
         "-RestartDelaySeconds", "0", "-MaxRestarts", "2", "-StableSeconds", "600", *extra],
        capture_output=True, text=True, timeout=300)


def runs(config: Path) -> list[list[str]]:
    return [json.loads((config / f"run-{n}").read_text())
            for n in range(len(list(config.glob("run-*"))))]


def test_the_script_restarts_crawlguard_after_a_non_zero_exit(tmp_path: Path) -> None:
    done = run_script(tmp_path / "cfg", [3, 2, 0])
    assert done.returncode == 0, done.stdout + done.stderr
    made = runs(tmp_path / "cfg")
    assert len(made) == 3 and made[0][0] == "up"
    assert made[0][made[0].index("--") - 4:made[0].index("--")] == [
        "--shard", "a", "--shard", "b"]
    log = (tmp_path / "cfg" / "logs" / "task.log").read_text(encoding="utf-8-sig")
    assert "exited 3" in log and "restart 1 of 2" in log and "finished" in log


def test_the_script_gives_up_after_its_restarts_and_never_restarts_a_stop(
        tmp_path: Path) -> None:
    gave_up = run_script(tmp_path / "a", [1])
    assert gave_up.returncode == 1 and len(runs(tmp_path / "a")) == 3   # 1 + 2 restarts
    assert "giving up" in (tmp_path / "a" / "logs" / "task.log").read_text(encoding="utf-8-sig")
    stopped = run_script(tmp_path / "b", [130])
    assert stopped.returncode == 130 and len(runs(tmp_path / "b")) == 1


def test_the_script_names_a_bad_env_line(tmp_path: Path) -> None:
    done = run_script(tmp_path / "cfg", [0], "not a setting\r\n")
    assert done.returncode != 0 and not runs(tmp_path / "cfg")
    assert "line 5: expected KEY=VALUE" in done.stdout + done.stderr


def elevated() -> bool:
    import ctypes

    return bool(getattr(ctypes, "windll").shell32.IsUserAnAdmin())  # noqa: B009


@pytest.mark.skipif(sys.platform != "win32" or not elevated(), reason="an elevated runner")
@pytest.mark.parametrize(("trigger", "trigger_class", "logon"), [
    ("Logon", "MSFT_TaskLogonTrigger", "Interactive"),
    ("Startup", "MSFT_TaskBootTrigger", "S4U")])
def test_the_task_is_registered_at_normal_priority(tmp_path: Path, trigger: str,
                                                  trigger_class: str, logon: str) -> None:
    name = f"crawlguard-ci-{os.getpid()}-{trigger}"
    script = REPO / "deploy" / "windows" / "register-task.ps1"
    read = (f"$t = Get-ScheduledTask -TaskName '{name}'; "
            "\"$($t.Settings.Priority) $($t.Triggers[0].CimClass.CimClassName) "
            "$($t.Principal.LogonType)\"")
    try:
        subprocess.run([POWERSHELL, "-NoProfile", "-ExecutionPolicy", "Bypass", "-File",
                        str(script), "-TaskName", name, "-ConfigDir", str(tmp_path),
                        "-Trigger", trigger], check=True, capture_output=True, text=True,
                       timeout=120)
        shown = subprocess.run([POWERSHELL, "-NoProfile", "-Command", read], check=True,
                               capture_output=True, text=True, timeout=60).stdout.split()
        assert shown == ["4", trigger_class, logon]
    finally:
        subprocess.run([POWERSHELL, "-NoProfile", "-Command",
                        f"Unregister-ScheduledTask -TaskName '{name}' -Confirm:$false"],
                       capture_output=True, timeout=60)

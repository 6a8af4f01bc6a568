"""crawlguard.kernel.devices: device strings, torch and NVML indices, the launch device."""

from __future__ import annotations

import pytest

from crawlguard.kernel.devices import (
    file_part,
    gpu_label,
    gpu_of_launch,
    launch_device,
    parse_device,
    physical_gpu,
)
from crawlguard.kernel.errors import ConfigError, UnsafeNameError
from crawlguard.kernel.settings import Remediation, device_var_from_env


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu:1"])
def test_devices_that_parse(device: str) -> None:
    assert parse_device(device) == device
    assert ":" not in file_part(device)


@pytest.mark.parametrize("device", ["", "cuda:", "CUDA:0", "cuda:0/..", "cpu:x", "cuda:0\n",
                                    "cuda:12345", " cpu", 0, None])
def test_devices_that_do_not(device: object) -> None:
    with pytest.raises(UnsafeNameError) as err:
        parse_device(device)
    assert err.value.kind == "device"


def test_labels_and_the_visible_devices_mapping() -> None:
    assert gpu_label("cuda:3") == "3" and gpu_label("cuda") == "0" and gpu_label("cpu") == ""
    assert physical_gpu("cuda:1", {"CUDA_VISIBLE_DEVICES": "2, 5"}) == "5"
    assert physical_gpu("cuda:0", {}) == "0"
    assert physical_gpu("cuda:3", {"CUDA_VISIBLE_DEVICES": "2,5"}) == "3"  # out of range
    assert physical_gpu("cuda:0", {"CUDA_VISIBLE_DEVICES": "GPU-8f3e"}) == "0"  # UUIDs
    assert physical_gpu("cpu", {"CUDA_VISIBLE_DEVICES": "1"}) == ""


def test_the_launch_device_and_its_gpu() -> None:
    var = "BGEM3_DEVICE"
    assert launch_device({}, var) == "cuda:0"
    assert launch_device({var: " cuda "}, var) == "cuda:0"
    assert launch_device({var: "cpu"}, var) == "cpu"
    with pytest.raises(UnsafeNameError):
        launch_device({var: "cuda:x"}, var)
    assert gpu_of_launch({}, var) == 0
    assert gpu_of_launch({var: "cpu"}, var) is None
    assert gpu_of_launch({var: "cuda:1"}, var) == 1
    assert gpu_of_launch({"D": "cuda:1", "CUDA_VISIBLE_DEVICES": "2,5"}, "D") == 5
    assert gpu_of_launch({var: "mps"}, var) is None
    assert gpu_of_launch({var: "garbage!"}, var) is None  # the worker refuses it itself


def test_the_device_variable_is_a_knob() -> None:
    assert device_var_from_env({}) == "BGEM3_DEVICE"
    assert device_var_from_env({"HELIX_BFM_DEVICE_VAR": "DEV"}) == "DEV"
    assert Remediation.from_env({"HELIX_BFM_DEVICE_VAR": "DEV"}).device_var == "DEV"
    with pytest.raises(ConfigError, match="HELIX_BFM_DEVICE_VAR"):
        device_var_from_env({"HELIX_BFM_DEVICE_VAR": "not a name"})


def test_gpuwait_no_longer_needs_the_tracker() -> None:
    import subprocess
    import sys

    code = ("import sys, crawlguard.supervisor.gpuwait; "
            "print('crawlguard.exporter.tracker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"

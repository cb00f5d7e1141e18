"""Board files, detection and the generic (no-board) case."""
import json
import os
import re

import pytest

from fake_sysfs import REPO, make_nano, make_xu3, write
from runtime.platform import Platform, PlatformError, detect_board, list_boards, load_board
from runtime.platform.board import detect
from runtime.platform.sysfs import Sysfs


def test_shipped_boards_are_listed_and_load():
    assert {"jetson-nano", "odroid-xu3"} <= set(list_boards())
    for name in ("jetson-nano", "odroid-xu3"):
        b = load_board(name)
        assert b.name == name and b.clusters and b.gpu and b.power


def test_board_files_use_relative_paths_and_cite_sources():
    for name in ("jetson-nano", "odroid-xu3"):
        data = load_board(name).data
        assert data["sources"], name
        text = json.dumps(data)
        for path in re.findall(r'"(/?sys/[^"]*|/?proc/[^"]*)"', text):
            assert not path.startswith("/"), (name, path)


def test_detects_nano_from_device_tree_compatible(tmp_path):
    make_nano(tmp_path, detect="compatible")
    assert detect_board(Sysfs(str(tmp_path))).name == "jetson-nano"


def test_detects_nano_from_device_tree_model_alone(tmp_path):
    make_nano(tmp_path, detect="model")
    assert not os.path.exists(str(tmp_path / "proc/device-tree/compatible"))
    assert detect_board(Sysfs(str(tmp_path))).name == "jetson-nano"


def test_detects_xu3_via_sys_firmware_devicetree(tmp_path):
    write(tmp_path, "sys/firmware/devicetree/base/compatible", "hardkernel,odroid-xu3-lite\0samsung,exynos5800\0")
    assert detect_board(Sysfs(str(tmp_path))).name == "odroid-xu3"


def test_platform_open_autodetects_xu3_clusters_and_aliases(tmp_path):
    make_xu3(tmp_path)
    with Platform.open(sysfs_root=str(tmp_path), state_dir=str(tmp_path / "state")) as p:
        assert p.board.name == "odroid-xu3"
        assert p.dvfs_available, p.dvfs_reason
        assert list(p.clusters) == ["a15", "a7"]
        assert p.clusters["a15"].cpus == (4, 5, 6, 7) and p.cores("big") == 4
        assert p.cluster("little") == "a7"
        assert p.clusters["a7"].frequencies_khz[0] == 200000


def test_unknown_machine_gives_generic_board_with_dvfs_unavailable(tmp_path):
    p = Platform.open(sysfs_root=str(tmp_path), state_dir=str(tmp_path / "state"))
    assert p.board.generic and not p.dvfs_available
    assert "not a known board" in p.dvfs_reason
    assert not p.power and "no power sensors" in p.power.reason
    assert set(p.clusters["all"].cpus) == os.sched_getaffinity(0)
    with pytest.raises(PlatformError, match="not a known board"):
        p.set_cpu_freq("big", 1000000)
    with pytest.raises(PlatformError, match="no GPU"):
        p.set_gpu_freq(1)
    assert p.cpu_freq("big") is None
    p.close()
    assert not os.path.exists(str(tmp_path / "state"))  # nothing written, not even the state dir


def test_forced_board_without_cpufreq_reports_why(tmp_path):
    p = Platform.open(board="jetson-nano", sysfs_root=str(tmp_path), state_dir=str(tmp_path / "s"))
    assert not p.dvfs_available and "no cpufreq policy for cluster a57" in p.dvfs_reason
    assert not p.power and "no power sensors found" in p.power.reason
    p.close()


def test_unknown_board_name_lists_valid_ones():
    with pytest.raises(PlatformError, match="jetson-nano, odroid-xu3, generic"):
        load_board("raspberry")


def test_3_10_kernel_capital_h_compatible_is_detected(tmp_path):
    write(tmp_path, "proc/device-tree/compatible", "Hardkernel,odroid-xu3\0samsung,exynos5\0")
    board, why = detect(Sysfs(str(tmp_path)))
    assert board.name == "odroid-xu3" and why == "compatible 'Hardkernel,odroid-xu3' in proc/device-tree/compatible"


def _board_with(tmp_path, edit):
    with open(os.path.join(REPO, "runtime", "boards", "jetson-nano.json")) as f:
        data = json.load(f)
    edit(data)
    path = str(tmp_path / "evil.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["clusters"][0].update(policy_candidates=["sys/../../etc"]),
     r"clusters\[0\]\.policy_candidates must be a list of paths relative to the sysfs root, without '\.\.'"),
    (lambda d: d["cpufreq"]["files"].update(min="../../../../etc/passwd"),
     r"cpufreq\.files\.min must be a file name without '/' or '\.\.'"),
    (lambda d: d["gpu"].update(devfreq_candidates=["/etc"]), r"gpu\.devfreq_candidates must be a list of paths"),
    (lambda d: d["power"][0].update(power_file="../x{n}"), r"power\[0\]\.power_file must be a file name"),
    (lambda d: d["power"][0]["sensors"][0].update(dir_candidates=["sys/a/../../.."]),
     r"power\[0\]\.sensors\[0\]\.dir_candidates must be"),
    (lambda d: d["clusters"][0].update(cpus="0-3"), r"clusters\[0\]\.cpus must be a list of CPU numbers"),
    (lambda d: d.pop("cpufreq"), r"cpufreq must be an object, got nothing \(missing\)"),
    (lambda d: d["gpu"].update(unit="MHz"), r"gpu\.unit must be 'Hz', got 'MHz'"),
    (lambda d: d["power_mode"].update(status_file="sys/../../root/x"), r"power_mode\.status_file must be"),
])
def test_a_board_file_that_could_lead_writes_elsewhere_is_refused_with_one_line(tmp_path, edit, message):
    path = _board_with(tmp_path, edit)
    with pytest.raises(PlatformError, match=r"board file .*evil\.json: " + message) as e:
        load_board(path)
    assert "\n" not in str(e.value) and "correct the board file" in str(e.value)

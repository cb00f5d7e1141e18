"""Board files, detection and the generic (no-board) case."""
import json
import os
import re

import pytest

from fake_sysfs import REPO, make_nano, make_xu3, write
from runtime.platform import Platform, PlatformError, detect_board, list_boards, load_board
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


def test_udev_rule_covers_every_declared_clock_file():
    with open(os.path.join(REPO, "board_scripts", "udev", "99-dynn-dvfs.rules")) as f:
        rules = f.read()
    for name in ("jetson-nano", "odroid-xu3"):
        b = load_board(name)
        for role in b.cpufreq["writable"]:
            assert b.cpufreq["files"][role] in rules, (name, role)
        for role in b.gpu["writable"]:
            assert b.gpu["files"][role] in rules, (name, role)
        for cand in b.gpu["devfreq_candidates"]:
            assert os.path.basename(cand) in rules, (name, cand)

"""The udev rule, its permission script and the boot-time unit, checked against the fake board trees."""
import fnmatch
import os
import re
import stat
import subprocess

import pytest

from fake_sysfs import NANO_GPU, NANO_POLICY, REPO, XU3_A7, XU3_A15, XU3_GPU_BY_KERNEL, XU3_INA, make_nano, make_xu3
from runtime.platform import load_board

UDEV = os.path.join(REPO, "board_scripts", "udev")
SCRIPT = os.path.join(UDEV, "dynn-permissions.sh")


def rules():
    """[(matches: {key: [alternatives]}, RUN)] of 99-dynn-dvfs.rules."""
    out = []
    with open(os.path.join(UDEV, "99-dynn-dvfs.rules")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                keys = dict((k, v.split("|")) for k, v in re.findall(r'(\w+)=="([^"]*)"', line))
                out.append((keys, re.search(r'RUN\+="([^"]*)"', line).group(1)))
    return out


def rule_for(subsystem):
    found = [r for r in rules() if r[0]["SUBSYSTEM"] == [subsystem]]
    assert len(found) == 1, subsystem
    return found[0]


def test_cpufreq_rule_fires_when_a_cpu_comes_back_online():
    keys, run = rule_for("cpu")
    assert "online" in keys["ACTION"] and "add" in keys["ACTION"]
    assert run.endswith("dynn-permissions.sh cpu /sys%p")


@pytest.mark.parametrize("devfreq", [NANO_GPU] + [v for v in XU3_GPU_BY_KERNEL.values() if v])
def test_devfreq_rule_matches_the_gpu_node_of_every_kernel(devfreq):
    keys, run = rule_for("devfreq")
    devpath = "/" + devfreq[len("sys/"):]  # udev's DEVPATH is the path below /sys
    assert any(fnmatch.fnmatch(devpath, pat) for pat in keys["DEVPATH"]), devpath
    assert not any(fnmatch.fnmatch("/devices/platform/exynos5-dmc/devfreq/devfreq1", pat) for pat in keys["DEVPATH"])


def test_ina231_rule_grants_access_on_the_drivers_bind_event():
    keys, run = rule_for("i2c")
    assert keys["DRIVER"] == ["INA231"] and "bind" in keys["ACTION"]
    assert run.endswith("dynn-permissions.sh ina231 /sys%p")


def test_boot_unit_runs_the_same_script_for_everything_and_the_installer_enables_it():
    with open(os.path.join(UDEV, "dynn-permissions.service")) as f:
        unit = f.read()
    assert "ExecStart=/bin/sh /usr/local/lib/dynn/dynn-permissions.sh all" in unit
    assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit
    with open(os.path.join(REPO, "board_scripts", "install_udev_rule.sh")) as f:
        installer = f.read()
    for name in ("dynn-permissions.sh", "99-dynn-dvfs.rules", "dynn-permissions.service"):
        assert "$HERE/udev/" + name in installer
    assert "systemctl enable dynn-permissions.service" in installer


def _apply(root, *args):
    group = str(os.getgid())  # the test's own group: chgrp to it needs no root
    env = dict(os.environ, DYNN_SYSFS=str(root), DYNN_GROUP=group)
    res = subprocess.run(["sh", SCRIPT] + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert res.returncode == 0, res.stderr


def _group_writable(path):
    return bool(os.stat(path).st_mode & stat.S_IWGRP)


@pytest.mark.parametrize("make, board, dirs", [
    (make_nano, "jetson-nano", {"cpufreq": [NANO_POLICY], "gpu": [NANO_GPU]}),
    (make_xu3, "odroid-xu3", {"cpufreq": [XU3_A7, XU3_A15], "gpu": [XU3_GPU_BY_KERNEL["4.14"]]}),
    (lambda r: make_xu3(r, kernel="mainline"), "odroid-xu3",
     {"cpufreq": [XU3_A7, XU3_A15], "gpu": [XU3_GPU_BY_KERNEL["mainline"]]}),
])
def test_boot_time_script_makes_every_declared_writable_file_group_writable(tmp_path, make, board, dirs):
    make(tmp_path)
    b = load_board(board)
    files = [os.path.join(str(tmp_path), d, b.cpufreq["files"][role]) for d in dirs["cpufreq"]
             for role in b.cpufreq["writable"]]
    files += [os.path.join(str(tmp_path), d, b.gpu["files"][role]) for d in dirs["gpu"] for role in b.gpu["writable"]]
    for path in files:
        os.chmod(path, 0o644)
    _apply(tmp_path, "all")
    assert [p for p in files if not _group_writable(p)] == []
    assert not _group_writable(os.path.join(str(tmp_path), dirs["cpufreq"][0], "scaling_available_frequencies"))


def test_ina231_event_makes_enable_group_writable_and_sensors_group_readable(tmp_path):
    make_xu3(tmp_path, enabled=False)
    d = os.path.join(str(tmp_path), XU3_INA, "3-0040")
    for name in ("enable", "sensor_W"):
        os.chmod(os.path.join(d, name), 0o600)  # Hardkernel 4.x: root only
    _apply(tmp_path, "ina231", d)
    assert _group_writable(os.path.join(d, "enable"))
    assert os.stat(os.path.join(d, "sensor_W")).st_mode & stat.S_IRGRP
    assert not _group_writable(os.path.join(d, "sensor_W"))

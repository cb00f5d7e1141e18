"""Setting CPU/GPU frequencies on fake Nano and XU3 trees: methods, ordering, validation, permissions."""
import builtins
import errno
import os

import pytest

import runtime.platform.sysfs as sysfs_mod
from fake_sysfs import (NANO_GPU, NANO_GPU_HZ, NANO_POLICY, XU3_A7, XU3_A15, XU3_GPU, XU3_GPU_BY_KERNEL, make_nano,
                        make_xu3, read, write)
from runtime.platform import Platform, PlatformError, online_cpus
from runtime.platform.guard import Guard
from runtime.platform.sysfs import Sysfs


def open_platform(root, **kw):
    return Platform.open(sysfs_root=str(root), state_dir=str(root / "state"), signals=False, **kw)


@pytest.fixture
def minmax_checked(monkeypatch):
    """Every write goes through a check that each min_freq <= its max_freq right after the write."""
    writes = []
    original = sysfs_mod.raw_write  # the fake kernel

    def checked(path, value):
        original(path, value)
        writes.append((os.path.basename(path), str(value)))
        d, name = os.path.split(path)
        prefix = "scaling_" if name.startswith("scaling_") else ""
        if name in (prefix + "min_freq", prefix + "max_freq"):
            lo = int(open(os.path.join(d, prefix + "min_freq")).read())
            hi = int(open(os.path.join(d, prefix + "max_freq")).read())
            assert lo <= hi, "min %d > max %d after writing %s=%s" % (lo, hi, name, value)

    monkeypatch.setattr(sysfs_mod, "raw_write", checked)
    return writes


def test_nano_cpu_without_userspace_pins_min_and_max_in_safe_order(tmp_path, minmax_checked):
    make_nano(tmp_path, userspace=False)
    with open_platform(tmp_path) as p:
        assert p.clusters["a57"].method == "minmax"
        assert p.set_cpu_freq("big", 1428000) == 1428000  # below the current max 1479000: min first
        assert read(tmp_path, NANO_POLICY + "/scaling_min_freq") == "1428000"
        assert read(tmp_path, NANO_POLICY + "/scaling_max_freq") == "1428000"
        p.set_cpu_freq("a57", 102000)  # down: min must go first
        assert minmax_checked[-2:] == [("scaling_min_freq", "102000"), ("scaling_max_freq", "102000")]
        p.set_cpu_freq("a57", 921600)  # up above the current max: max must go first
        assert minmax_checked[-2:] == [("scaling_max_freq", "921600"), ("scaling_min_freq", "921600")]
        assert read(tmp_path, NANO_POLICY + "/scaling_governor") == "schedutil"  # untouched
    assert read(tmp_path, NANO_POLICY + "/scaling_min_freq") == "102000"
    assert read(tmp_path, NANO_POLICY + "/scaling_max_freq") == "1479000"


def test_xu3_cpu_with_userspace_uses_governor_and_setspeed(tmp_path):
    make_xu3(tmp_path, userspace=True)
    with open_platform(tmp_path) as p:
        assert p.clusters["a15"].method == "userspace"
        p.set_cpu_freq("big", 1800000)
        assert read(tmp_path, XU3_A15 + "/scaling_governor") == "userspace"
        assert read(tmp_path, XU3_A15 + "/scaling_setspeed") == "1800000"
        assert read(tmp_path, XU3_A15 + "/scaling_max_freq") == "2000000"  # clamp not used
        assert read(tmp_path, XU3_A7 + "/scaling_governor") == "ondemand"  # other cluster untouched
    assert read(tmp_path, XU3_A15 + "/scaling_governor") == "ondemand"


def test_invalid_cpu_frequency_is_rejected_with_the_valid_list(tmp_path):
    make_xu3(tmp_path)
    with open_platform(tmp_path) as p:
        with pytest.raises(PlatformError) as e:
            p.set_cpu_freq("little", 1500000)
        msg = str(e.value)
        assert "1500000 kHz is not an available frequency" in msg and "200000 300000" in msg and "1400000" in msg
        with pytest.raises(PlatformError, match="not a whole number"):
            p.set_cpu_freq("little", "fast")
        with pytest.raises(PlatformError, match="no cluster 'medium'; valid: .*big"):
            p.set_cpu_freq("medium", 1000000)
    assert not os.path.exists(str(tmp_path / "state" / "state.json"))


def test_gpu_devfreq_is_pinned_in_hz_and_validated(tmp_path, minmax_checked):
    make_nano(tmp_path)
    with open_platform(tmp_path) as p:
        assert p.gpu.frequencies_hz == NANO_GPU_HZ
        assert p.gpu_freq() == 921600000
        p.set_gpu_freq(460800000)
        assert read(tmp_path, NANO_GPU + "/min_freq") == "460800000"
        assert read(tmp_path, NANO_GPU + "/max_freq") == "460800000"
        with pytest.raises(PlatformError, match="GPU: 500000000 Hz is not an available frequency; .*76800000"):
            p.set_gpu_freq(500000000)
    assert read(tmp_path, NANO_GPU + "/min_freq") == "76800000"
    assert read(tmp_path, NANO_GPU + "/max_freq") == "921600000"


def test_xu3_gpu_devfreq(tmp_path):
    make_xu3(tmp_path)
    with open_platform(tmp_path) as p:
        p.set_gpu_freq(600000000)
        assert read(tmp_path, XU3_GPU + "/min_freq") == "600000000"
    assert read(tmp_path, XU3_GPU + "/min_freq") == "177000000"


def test_current_frequencies_are_read(tmp_path):
    make_xu3(tmp_path)
    with open_platform(tmp_path) as p:
        assert p.cpu_freq("big") == 2000000 and p.cpu_freq("a7") == 1400000
        assert p.gpu_freq() == 600000000


def test_policy_found_through_per_cpu_cpufreq_dir(tmp_path):
    make_nano(tmp_path)
    os.makedirs(str(tmp_path / "sys/devices/system/cpu/cpu0"))
    os.rename(str(tmp_path / NANO_POLICY), str(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"))
    with open_platform(tmp_path) as p:
        assert p.dvfs_available
        p.set_cpu_freq("big", 921600)
        assert read(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq") == "921600"


def test_dvfs_false_changes_nothing_but_pinning_and_reading_work(tmp_path):
    make_nano(tmp_path)
    with open_platform(tmp_path, dvfs=False) as p:
        assert not p.dvfs_available and "dvfs=False" in p.dvfs_reason
        with pytest.raises(PlatformError, match="DVFS is off"):
            p.set_cpu_freq("big", 921600)
        with pytest.raises(PlatformError, match="DVFS is off"):
            p.set_gpu_freq(NANO_GPU_HZ[0])
        assert p.cpu_freq("big") == 1479000 and p.power.available
    assert not os.path.exists(str(tmp_path / "state"))


def test_writes_to_undeclared_paths_are_refused(tmp_path):
    make_nano(tmp_path)
    online = tmp_path / "sys/devices/system/cpu/cpu3/online"
    online.parent.mkdir(parents=True)
    online.write_text("1\n")
    guard = Guard(Sysfs(str(tmp_path)), state_dir=str(tmp_path / "state"), board_name="jetson-nano", signals=False)
    with pytest.raises(PlatformError, match="refusing to write .*cpu3/online: it is not declared"):
        guard.write(str(online), "0")
    assert online.read_text() == "1\n"
    with open_platform(tmp_path) as p:  # the platform's own guard refuses it too
        with pytest.raises(PlatformError, match="not declared in board file 'jetson-nano'"):
            p._guard.write(str(online), "0")
        with pytest.raises(PlatformError, match="not declared"):
            p._guard.write(str(tmp_path / NANO_POLICY / "../policy0/../../cpu3/online"), "0")


def _deny_writes_to(monkeypatch, name):
    """Make open(..., 'w') of files called `name` fail with EACCES, as the kernel does for non-root."""
    def fake_open(path, mode="r", *a, **kw):
        if "w" in mode and os.path.basename(str(path)) == name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return builtins.open(path, mode, *a, **kw)
    monkeypatch.setattr(sysfs_mod, "open", fake_open, raising=False)


def test_permission_denied_on_write_names_file_and_fix(tmp_path, monkeypatch):
    make_nano(tmp_path)
    with open_platform(tmp_path) as p:
        _deny_writes_to(monkeypatch, "scaling_min_freq")
        with pytest.raises(PlatformError) as e:
            p.set_cpu_freq("big", 921600)  # below the current max: scaling_min_freq is written first
        msg = str(e.value)
        assert "no permission to write" in msg and msg.count("\n") == 0
        assert os.path.join(str(tmp_path), NANO_POLICY, "scaling_min_freq") in msg
        assert "EACCES" in msg and "install_udev_rule.sh" in msg and "sudo" in msg and "dvfs=False" in msg
        # the failed file did not change, so it is not recorded as changed
        assert p._guard.changed == {}
        monkeypatch.undo()
    assert read(tmp_path, NANO_POLICY + "/scaling_min_freq") == "102000"
    assert read(tmp_path, NANO_POLICY + "/scaling_max_freq") == "1479000"
    assert not os.path.exists(str(tmp_path / "state" / "state.json"))


def test_unwritable_clock_files_make_dvfs_unavailable_with_the_fix(tmp_path, monkeypatch):
    make_nano(tmp_path)
    monkeypatch.setattr(Sysfs, "writable", staticmethod(lambda path: False))
    with open_platform(tmp_path) as p:
        assert not p.dvfs_available
        assert "no permission to write" in p.dvfs_reason and "install_udev_rule.sh" in p.dvfs_reason
        assert not p.gpu.available
        with pytest.raises(PlatformError, match="no permission to write .*scaling_min_freq"):
            p.set_cpu_freq("big", 921600)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; covered by the EACCES test above")
def test_chmod_0444_clock_file_is_reported(tmp_path):
    make_nano(tmp_path)
    os.chmod(str(tmp_path / NANO_POLICY / "scaling_min_freq"), 0o444)
    with open_platform(tmp_path) as p:
        assert not p.dvfs_available and "scaling_min_freq" in p.dvfs_reason


# -- issue 15: the power mode's caps, the kernel's clamp, online cores, the XU3 GPU node by kernel -------------
def test_nano_5w_caps_are_a_ceiling_that_min_max_writes_never_lift(tmp_path):
    make_nano(tmp_path, userspace=False, mode="5W")
    with open_platform(tmp_path) as p:
        with pytest.raises(PlatformError, match=r"1428000 kHz is outside the limits in force when this session "
                                                r"started, 102000\.\.918000 kHz .*never lifts them"):
            p.set_cpu_freq("big", 1428000)
        assert read(tmp_path, NANO_POLICY + "/scaling_max_freq") == "918000"  # nothing was written
        with pytest.raises(PlatformError, match=r"921600000 Hz is outside .*76800000\.\.640000000 Hz"):
            p.set_gpu_freq(921600000)
        assert read(tmp_path, NANO_GPU + "/max_freq") == "640000000"
        assert p.set_cpu_freq("big", 825600) == 825600 and p.set_gpu_freq(460800000) == 460800000
        # what a sweep may choose from: the kernel's table within the caps
        assert p.clusters["a57"].frequencies_khz[-1] == 825600 and p.gpu.frequencies_hz[-1] == 614400000
    assert read(tmp_path, NANO_POLICY + "/scaling_max_freq") == "918000"
    assert read(tmp_path, NANO_GPU + "/max_freq") == "640000000"


def test_a_clamped_setspeed_is_read_back_and_refused(tmp_path):
    make_nano(tmp_path, userspace=True)
    with open_platform(tmp_path) as p:
        assert p.clusters["a57"].method == "userspace"
        assert p.set_cpu_freq("big", 921600) == 921600  # the session's caps are fixed here: 102000..1479000
        write(tmp_path, NANO_POLICY + "/scaling_max_freq", "918000\n")  # `nvpmodel -m 1` while we run
        with pytest.raises(PlatformError, match="asked for 1428000 kHz but the kernel runs at 918000 kHz "
                                                r"\(limits now 102000\.\.918000 kHz"):
            p.set_cpu_freq("big", 1428000)


def test_after_jetson_clocks_the_floor_refuses_lower_clocks(tmp_path):
    make_nano(tmp_path, userspace=True)
    write(tmp_path, NANO_POLICY + "/scaling_min_freq", "1479000\n")  # jetson_clocks copies max into min
    with open_platform(tmp_path) as p:
        with pytest.raises(PlatformError, match=r"921600 kHz is outside .*1479000\.\.1479000 kHz"):
            p.set_cpu_freq("big", 921600)
        assert p.set_cpu_freq("big", 1479000) == 1479000


def test_power_mode_and_caps_are_recorded_for_the_profile(tmp_path):
    make_nano(tmp_path, mode="5W")
    with open_platform(tmp_path) as p:
        mode = p.power_mode()
        assert (mode["tool"], mode["id"], mode["name"]) == ("nvpmodel", 1, "5W")
        assert mode["online_cpus"] == [0, 1]
        assert mode["caps"]["a57"] == {"min_khz": 102000, "max_khz": 918000}
        assert mode["caps"]["gpu"] == {"min_hz": 76800000, "max_hz": 640000000}
        p.set_cpu_freq("big", 614400)  # min = max = 614400 now, but the caps stay the mode's
        assert p.describe()["power_mode"]["caps"]["a57"] == {"min_khz": 102000, "max_khz": 918000}


def test_xu3_has_no_power_mode_tool_but_reports_the_kernel_limits(tmp_path):
    make_xu3(tmp_path)
    with open_platform(tmp_path) as p:
        mode = p.power_mode()
        assert mode["id"] is None and "no power-mode tool" in mode["reason"]
        assert mode["caps"]["a15"] == {"min_khz": 200000, "max_khz": 2000000}


def test_only_online_cores_are_counted_and_pinned(tmp_path):
    make_nano(tmp_path, mode="5W")  # nvpmodel 5W takes cpu2 and cpu3 offline
    with open_platform(tmp_path) as p:
        assert p.cores("big") == 2 and p.cluster_cpus("big") == (0, 1)
        assert p.online_cpus() == {0, 1}
    assert online_cpus(str(tmp_path)) == {0, 1}


@pytest.mark.parametrize("kernel", ["4.14", "5.10", "mainline"])
def test_xu3_gpu_devfreq_node_is_found_on_every_kernel(tmp_path, kernel):
    make_xu3(tmp_path, kernel=kernel)
    node = XU3_GPU_BY_KERNEL[kernel]
    with open_platform(tmp_path) as p:
        assert p.gpu.available and p.gpu.devfreq_dir == str(tmp_path / node)
        assert p.set_gpu_freq(350000000) == 350000000
        assert read(tmp_path, node + "/max_freq") == "350000000"
    assert read(tmp_path, node + "/max_freq") == "600000000"


def test_xu3_on_3_10_says_its_mali_driver_has_no_devfreq(tmp_path):
    make_xu3(tmp_path, kernel="3.10")
    with open_platform(tmp_path) as p:
        assert p.board.name == "odroid-xu3" and p.dvfs_available  # the CPUs still have cpufreq
        assert not p.gpu.available and "has no devfreq" in p.gpu.reason and "3.10" in p.gpu.reason
        with pytest.raises(PlatformError, match="Mali driver .* has no devfreq"):
            p.set_gpu_freq(600000000)

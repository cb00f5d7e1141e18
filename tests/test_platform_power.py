"""Power sensors (Nano INA3221 mW, XU3 INA231 W) and energy integration."""
import os
import time

import pytest

from fake_sysfs import XU3_INA, make_nano, make_xu3, read, write
from runtime.platform import Platform, PlatformError
from runtime.platform.sysfs import Sysfs


def open_platform(root, **kw):
    return Platform.open(sysfs_root=str(root), state_dir=str(root / "state"), signals=False, **kw)


def test_nano_rails_named_from_rail_name_files_in_watts(tmp_path):
    make_nano(tmp_path)
    with open_platform(tmp_path) as p:
        assert p.power and p.power.available
        values = p.power.read()
        # channel 1 is the CPU rail in this tree: names come from rail_name_N, not from the board's order
        assert list(values) == ["POM_5V_IN", "POM_5V_CPU", "POM_5V_GPU"]
        assert values["POM_5V_IN"] == pytest.approx(3.0) and values["POM_5V_GPU"] == pytest.approx(0.4)
        assert p.power.total == "POM_5V_IN"
        assert p.power.read_total_w() == pytest.approx(3.0)  # the input rail, not the sum


def test_xu3_sensors_found_by_glob_on_any_bus_and_summed(tmp_path):
    make_xu3(tmp_path, bus=0)
    with open_platform(tmp_path) as p:
        assert p.power.rail_names == ["A15", "MEM", "GPU", "A7"]
        assert p.power.read()["A15"] == pytest.approx(1.5)
        assert p.power.total == "sum" and p.power.read_total_w() == pytest.approx(2.0)
        assert p.power.update_period_s == pytest.approx(0.263808)
        assert p.power.interval_s == pytest.approx(0.263808)


def test_xu3_disabled_sensors_are_enabled_for_measuring_and_restored(tmp_path):
    make_xu3(tmp_path, enabled=False)
    with open_platform(tmp_path, power_interval_s=0.01) as p:
        p.power.update_period_s = 0.01  # don't wait 0.26 s for the first update in a test
        p.power.start()
        assert read(tmp_path, XU3_INA + "/3-0040/enable") == "1"
        p.power.stop()
    assert read(tmp_path, XU3_INA + "/3-0040/enable") == "0"


def test_energy_is_integrated_over_a_changing_sensor(tmp_path):
    make_xu3(tmp_path, power=True)
    for addr in ("41", "44", "45"):
        write(tmp_path, XU3_INA + "/3-00%s/sensor_W" % addr, "0.000000\n")
    write(tmp_path, XU3_INA + "/3-0040/sensor_W", "2.000000\n")
    with open_platform(tmp_path, power_interval_s=0.01) as p:
        m = p.power
        m.start()
        time.sleep(0.3)
        write(tmp_path, XU3_INA + "/3-0040/sensor_W", "4.000000\n")
        time.sleep(0.3)
        e = m.stop()
    assert e.duration_s == pytest.approx(0.6, abs=0.1)
    assert e.energy_j == pytest.approx(2.0 * 0.3 + 4.0 * 0.3, abs=0.15)
    assert e.mean_power_w == pytest.approx(e.energy_j / e.duration_s)
    assert e.rails_j["A15"] == pytest.approx(e.energy_j) and e.rails_j["MEM"] == 0.0
    assert e.samples > 10


def test_power_meter_as_context_manager_keeps_the_result(tmp_path):
    make_nano(tmp_path)
    with open_platform(tmp_path, power_interval_s=0.01) as p:
        with p.power as m:
            time.sleep(0.05)
        assert m.result.energy_j == pytest.approx(3.0 * m.result.duration_s, rel=1e-6)
        assert m.result.mean_power_w == pytest.approx(3.0)


def test_no_sensors_means_unavailable_with_a_reason(tmp_path):
    make_nano(tmp_path, power=False)
    with open_platform(tmp_path) as p:
        assert not p.power and p.power.available is False
        assert "no power sensors found" in p.power.reason and "ina3221x" in p.power.reason
        with pytest.raises(PlatformError, match="no power sensors"):
            p.power.start()
        assert p.dvfs_available  # DVFS does not depend on sensors


def test_mainline_xu3_reads_the_ina2xx_hwmon_files_in_microwatts(tmp_path):
    make_xu3(tmp_path, kernel="mainline", bus=1)
    with open_platform(tmp_path) as p:
        assert p.power.kind == "ina2xx-hwmon" and p.power.unit == "uW"
        assert p.power.rail_names == ["A15", "MEM", "GPU", "A7"]
        values = p.power.read()
        assert values["A15"] == pytest.approx(1.5) and p.power.read_total_w() == pytest.approx(2.0)
        assert p.power.enable_paths == [] and p.power.update_period_s == pytest.approx(0.035)


def test_the_hardkernel_driver_is_tried_first(tmp_path):
    make_xu3(tmp_path)
    with open_platform(tmp_path) as p:
        assert p.power.kind == "ina231-hardkernel"


def test_root_only_ina231_files_name_the_udev_rule(tmp_path, monkeypatch):
    make_xu3(tmp_path, enabled=False)
    real_access = os.access
    # Hardkernel 4.x: sensor_* and enable are 0660 root; as a user neither reads nor writes (os.access
    # is faked because the tests may run as root, which ignores file modes)
    monkeypatch.setattr(os, "access", lambda path, mode: False if "INA231" in str(path) else real_access(path, mode))
    with open_platform(tmp_path) as p:
        assert not p.power
        assert "sensor_W is not readable" in p.power.reason and "install_udev_rule.sh" in p.power.reason
        assert "ina2xx-hwmon" in p.power.reason  # the mainline variant was tried as well


def test_disabled_sensors_that_cannot_be_enabled_are_unavailable_with_the_fix(tmp_path, monkeypatch):
    make_xu3(tmp_path, enabled=False)
    monkeypatch.setattr(Sysfs, "writable", staticmethod(lambda path: False))
    with open_platform(tmp_path) as p:
        assert not p.power and "disabled" in p.power.reason and "install_udev_rule.sh" in p.power.reason

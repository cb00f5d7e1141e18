"""`python -m runtime doctor`: its report on fake Nano and XU3 trees, the bundle's needs, and that it writes nothing."""
import hashlib
import os
import subprocess
import sys

import pytest

from fake_sysfs import REPO, make_nano, make_xu3, write


def tree(root):
    """Every path under root with its mode and content hash: byte-identical trees compare equal."""
    out = {}
    for d, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else None
            out[os.path.relpath(p, str(root))] = (st.st_mode, digest)
    return out


def doctor(tmp_path, root, *args):
    state = tmp_path / "state-dir"
    env = dict(os.environ, DYNN_STATE_DIR=str(state))
    res = subprocess.run([sys.executable, "-m", "runtime", "doctor", "--sysfs-root", str(root)] + list(args),
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert not state.exists(), "doctor created the state directory"
    return res


# The shipped bundles need Python 3.7+ and an onnxruntime that reads opset 17: under 3.6 doctor rightly lists
# both as problems, so the two reports that expect "problems none" run on the host's own interpreter only.
HOST_ONLY = pytest.mark.skipif(sys.version_info < (3, 7), reason="the shipped bundles need Python 3.7+")


@HOST_ONLY
def test_doctor_on_a_fake_nano_in_5w_reports_board_paths_caps_rails_and_the_bundles_fallback(tmp_path):
    root = tmp_path / "nano"
    make_nano(root, mode="5W")
    before = tree(root)
    res = doctor(tmp_path, root, os.path.join(REPO, "artifacts", "nano-gpu"))
    assert tree(root) == before  # it wrote nothing
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "board      jetson-nano (compatible 'nvidia,jetson-nano' in proc/device-tree/compatible)" in out
    assert "  a57        sys/devices/system/cpu/cpufreq/policy0" in out
    assert "    scaling_max_freq                 readable writable             (the runtime writes it)" in out
    assert "  power mode var/lib/nvpmodel/status" in out
    assert "  a57        schedutil (available: conservative ondemand powersave performance schedutil; " \
           "the runtime sets clocks via minmax)" in out
    assert "power mode nvpmodel 1 (5W, from var/lib/nvpmodel/status)" in out
    assert "  online CPUs 0 1\n" in out
    assert "  caps a57    102000..918000 kHz" in out and "  caps gpu    76800000..640000000 Hz" in out
    assert "power      ina3221x-iio sensors (files in mW, reported in W), total = POM_5V_IN" in out
    assert "  POM_5V_IN       3.000 W" in out and "  POM_5V_GPU      0.400 W" in out
    assert "bindings   Python %d.%d" % sys.version_info[:2] in out and "  onnxruntime     " in out
    assert "  engine tensorrt  missing: needs tensorrt" in out  # no TensorRT on this host
    assert "runtime.load falls back to onnx" in out and "problems   none" in out


@HOST_ONLY
def test_doctor_on_a_fake_mainline_xu3_finds_the_soc_gpu_and_the_hwmon_sensors(tmp_path):
    root = tmp_path / "xu3"
    make_xu3(root, kernel="mainline")
    before = tree(root)
    res = doctor(tmp_path, root, os.path.join(REPO, "artifacts", "xu3"))
    assert tree(root) == before and res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "board      odroid-xu3 (compatible 'hardkernel,odroid-xu3'" in out
    assert "  gpu        sys/devices/platform/soc/11800000.gpu/devfreq/11800000.gpu" in out
    assert "power      ina2xx-hwmon sensors (files in uW, reported in W), total = sum" in out
    assert "  A15             1.500 W" in out and "  MEM             0.250 W" in out
    assert "power mode board odroid-xu3 has no power-mode tool" in out
    assert "  caps a15    200000..2000000 kHz" in out and "  engine tflite    ok (" in out


def test_doctor_on_xu3_3_10_with_disabled_sensors_says_what_is_missing_and_changes_nothing(tmp_path):
    root = tmp_path / "xu3"
    make_xu3(root, kernel="3.10", enabled=False)
    before = tree(root)
    res = doctor(tmp_path, root)
    assert tree(root) == before and res.returncode == 0, res.stderr
    assert "board      odroid-xu3 (compatible 'Hardkernel,odroid-xu3'" in res.stdout
    assert "  gpu        this kernel's Mali driver (Hardkernel 3.10) has no devfreq" in res.stdout
    assert "    sys/bus/i2c/drivers/INA231/3-0040/enable    readable writable  (enabled for measuring)" in res.stdout
    assert "4 sensor(s) are disabled (enable = 0)" in res.stdout


def test_a_bundle_for_another_board_is_a_problem_and_exit_1(tmp_path):
    root = tmp_path / "nano"
    make_nano(root)
    res = doctor(tmp_path, root, os.path.join(REPO, "artifacts", "xu3"))
    assert res.returncode == 1
    assert "\n  bundle is for board odroid-xu3, this is jetson-nano: build and deploy one" in res.stdout


def test_an_unknown_machine_is_reported_as_generic(tmp_path):
    res = doctor(tmp_path, tmp_path)
    assert res.returncode == 0
    assert "board      generic (no shipped board (jetson-nano, odroid-xu3) matches the device tree under" in res.stdout
    assert "dvfs       DVFS unavailable: this machine is not a known board" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--board", "raspberry"], "error: unknown board 'raspberry': valid boards are"),
    (["no-such-bundle"], "error: bundle directory no-such-bundle does not exist"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    make_nano(tmp_path / "nano")
    res = doctor(tmp_path, tmp_path / "nano", *args)
    assert res.returncode == 1 and res.stderr.startswith(message) and res.stderr.count("\n") == 1, res.stderr


def test_doctor_passes_the_forced_board_through(tmp_path):
    root = tmp_path / "x"
    write(root, "sys/devices/system/cpu/online", "0-3\n")
    res = doctor(tmp_path, root, "--board", "jetson-nano")
    assert "board      jetson-nano (given with --board)" in res.stdout
    assert "  a57        no cpufreq policy for cluster a57" in res.stdout

"""Fake Jetson Nano and Odroid-XU3 sysfs trees (in a temporary directory) for the platform tests.

The layouts follow runtime/boards/*.json and docs/boards.md; values are plausible, not measured.
Importing this module also installs a fake kernel behind the platform's file writes (`kernel_write`):
like cpufreq and devfreq it moves the current frequency to the request clamped into the policy's
[min, max], so a test reads back what a board would run at.
"""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import runtime.platform.sysfs as _sysfs  # noqa: E402 - after the path above

NANO_CPU_KHZ = [102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600, 921600, 1036800,
                1132800, 1224000, 1326000, 1428000, 1479000]
NANO_GPU_HZ = [76800000 * k for k in range(1, 13)]
XU3_A7_KHZ = [200000 + 100000 * k for k in range(13)]
XU3_A15_KHZ = [200000 + 100000 * k for k in range(19)]
XU3_GPU_HZ = [177000000, 266000000, 350000000, 420000000, 480000000, 543000000, 600000000]

NANO_POLICY = "sys/devices/system/cpu/cpufreq/policy0"
NANO_GPU = "sys/devices/57000000.gpu/devfreq/57000000.gpu"
NANO_INA = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
XU3_A7 = "sys/devices/system/cpu/cpufreq/policy0"
XU3_A15 = "sys/devices/system/cpu/cpufreq/policy4"
XU3_GPU = "sys/devices/platform/11800000.mali/devfreq/devfreq0"
# The XU3 GPU devfreq node by kernel: the name is devfreq0 on 4.10-5.5 only; 3.10 has no devfreq at all.
XU3_GPU_BY_KERNEL = {"4.14": XU3_GPU, "5.10": "sys/devices/platform/11800000.mali/devfreq/11800000.mali",
                     "mainline": "sys/devices/platform/soc/11800000.gpu/devfreq/11800000.gpu", "3.10": None}
XU3_MALI_LEGACY = "sys/devices/11800000.mali"
XU3_INA = "sys/bus/i2c/drivers/INA231"
XU3_HWMON = "sys/bus/i2c/drivers/ina2xx"
NANO_NVPMODEL = "var/lib/nvpmodel/status"
NANO_NVPMODEL_CONF = ("< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n"
                      "< POWER_MODEL ID=1 NAME=5W >\nCPU_ONLINE CORE_2 0\nCPU_A57 MAX_FREQ 918000\n"
                      "GPU MAX_FREQ 640000000\n< PM_CONFIG DEFAULT=0 >\n")
GOVERNORS = "conservative ondemand userspace powersave performance schedutil"


def _clamp(v, lo, hi):
    return max(lo, min(hi, v))


def kernel_write(path, text):
    """The bare write, then what cpufreq/devfreq do: current frequency = request clamped into [min, max]."""
    _raw_write(path, text)
    d, name = os.path.split(path)
    ints = {}
    for f in os.listdir(d):
        try:
            with open(os.path.join(d, f)) as fh:
                ints[f] = int(fh.read().split()[0])
        except (ValueError, IndexError, OSError):
            pass
    if "scaling_cur_freq" in ints and name.startswith("scaling_"):  # cpufreq_userspace.c clamps setspeed
        with open(os.path.join(d, "scaling_governor")) as fh:
            governor = fh.read().strip()
        want = ints.get("scaling_setspeed", ints["scaling_cur_freq"]) if governor == "userspace" \
            else ints["scaling_max_freq"] if governor == "performance" else ints["scaling_cur_freq"]
        _raw_write(os.path.join(d, "scaling_cur_freq"),
                   "%d\n" % _clamp(want, ints["scaling_min_freq"], ints["scaling_max_freq"]))
    elif "cur_freq" in ints and name in ("min_freq", "max_freq"):
        _raw_write(os.path.join(d, "cur_freq"), "%d\n" % _clamp(ints["cur_freq"], ints["min_freq"], ints["max_freq"]))


_raw_write = _sysfs.raw_write
_sysfs.raw_write = kernel_write


def write(root, rel, text):
    """Write a fake file atomically (a reader thread never sees a half-written value)."""
    path = os.path.join(str(root), rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def read(root, rel):
    with open(os.path.join(str(root), rel)) as f:
        return f.read().strip()


def _policy(root, rel, freqs, governor, userspace, cpus):
    govs = GOVERNORS if userspace else GOVERNORS.replace("userspace ", "")
    for name, val in [("scaling_available_frequencies", " ".join(map(str, freqs)) + " "),
                      ("scaling_available_governors", govs), ("scaling_governor", governor),
                      ("scaling_min_freq", freqs[0]), ("scaling_max_freq", freqs[-1]),
                      ("scaling_cur_freq", freqs[-1]), ("scaling_setspeed", "<unsupported>"),
                      ("cpuinfo_min_freq", freqs[0]), ("cpuinfo_max_freq", freqs[-1]),
                      ("related_cpus", " ".join(map(str, cpus)))]:
        write(root, rel + "/" + name, "%s\n" % val)


def _devfreq(root, rel, freqs, governor):
    for name, val in [("available_frequencies", " ".join(map(str, freqs))), ("governor", governor),
                      ("available_governors", "userspace performance simple_ondemand"),
                      ("min_freq", freqs[0]), ("max_freq", freqs[-1]), ("cur_freq", freqs[-1])]:
        write(root, rel + "/" + name, "%s\n" % val)


def make_nano(root, userspace=False, detect="compatible", power=True, mode=None):
    """Jetson Nano: policy0 for cpu0-3, GPU devfreq 57000000.gpu, INA3221 (ina3221x IIO, mW).

    mode: None (no nvpmodel files), "MAXN" or "5W" (nvpmodel status/conf, its caps and online cores)."""
    if detect == "compatible":
        write(root, "proc/device-tree/compatible",
              "nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0nvidia,tegra210\0")
    if detect in ("compatible", "model"):
        write(root, "proc/device-tree/model", "NVIDIA Jetson Nano Developer Kit\0")
    _policy(root, NANO_POLICY, NANO_CPU_KHZ, "schedutil", userspace, [0, 1, 2, 3])
    _devfreq(root, NANO_GPU, NANO_GPU_HZ, "nvhost_podgov")
    if mode is not None:
        write(root, NANO_NVPMODEL, "pmode:%04d\n" % {"MAXN": 0, "5W": 1}[mode])
        write(root, "etc/nvpmodel.conf", NANO_NVPMODEL_CONF)
        write(root, "sys/devices/system/cpu/online", "0-3\n" if mode == "MAXN" else "0-1\n")
    if mode == "5W":  # nvpmodel 5W caps [boards.md 1.5]
        write(root, NANO_POLICY + "/scaling_max_freq", "918000\n")
        write(root, NANO_POLICY + "/scaling_cur_freq", "918000\n")
        write(root, NANO_GPU + "/max_freq", "640000000\n")
        write(root, NANO_GPU + "/cur_freq", "614400000\n")
    if power:
        # channel order deliberately differs from the board file's default names
        for n, (rail, mw) in enumerate([("POM_5V_IN", 3000), ("POM_5V_CPU", 1200), ("POM_5V_GPU", 400)]):
            write(root, NANO_INA + "/rail_name_%d" % n, rail + "\n")
            write(root, NANO_INA + "/in_power%d_input" % n, "%d\n" % mw)
            write(root, NANO_INA + "/in_current%d_input" % n, "100\n")
            write(root, NANO_INA + "/in_voltage%d_input" % n, "5000\n")
    return str(root)


def make_xu3(root, userspace=True, bus=3, power=True, enabled=True, kernel="4.14"):
    """Odroid-XU3: policy0 (A7, cpu0-3), policy4 (A15, cpu4-7), Mali devfreq, INA231 (W, bus varies).

    kernel: "3.10" (capital-H compatible, no GPU devfreq, legacy Mali nodes), "4.14" (devfreq0), "5.10"
    (devfreq named 11800000.mali), "mainline" (soc/11800000.gpu; power from ina2xx hwmon, microwatts)."""
    vendor = "Hardkernel" if kernel == "3.10" else "hardkernel"
    write(root, "proc/device-tree/compatible", vendor + ",odroid-xu3\0samsung,exynos5800\0samsung,exynos5\0")
    write(root, "proc/device-tree/model", "Hardkernel Odroid XU3\0")
    _policy(root, XU3_A7, XU3_A7_KHZ, "ondemand", userspace, [0, 1, 2, 3])
    _policy(root, XU3_A15, XU3_A15_KHZ, "ondemand", userspace, [4, 5, 6, 7])
    if XU3_GPU_BY_KERNEL[kernel]:
        _devfreq(root, XU3_GPU_BY_KERNEL[kernel], XU3_GPU_HZ, "simple_ondemand")
    else:
        for name, val in (("clock", "600"), ("dvfs", "1"), ("dvfs_min_lock", "0"), ("dvfs_max_lock", "0")):
            write(root, XU3_MALI_LEGACY + "/" + name, val + "\n")
    if power and kernel == "mainline":  # ina2xx hwmon: power1_input in microwatts, no enable file
        for addr, uw in (("40", 1500000), ("41", 250000), ("44", 125000), ("45", 125000)):
            d = "%s/%d-00%s/hwmon/hwmon%s/" % (XU3_HWMON, bus, addr, addr[-1])
            write(root, d + "name", "ina231\n")
            write(root, d + "power1_input", "%d\n" % uw)
            write(root, d + "update_interval", "35\n")
    elif power:
        for addr, name, watts in [("40", "sensor_arm", "1.500000"), ("41", "sensor_mem", "0.250000"),
                                  ("44", "sensor_g3d", "0.125000"), ("45", "sensor_kfc", "0.125000")]:
            d = "%s/%d-00%s/" % (XU3_INA, bus, addr)
            write(root, d + "sensor_name", name + "\n")
            write(root, d + "sensor_W", watts + "\n")
            write(root, d + "sensor_A", "0.300000\n")
            write(root, d + "sensor_V", "5.000000\n")
            write(root, d + "enable", "1\n" if enabled else "0\n")
            write(root, d + "update_period", "263808 usec\n")
    return str(root)


def board_file(tmp_path, base, clusters):
    """A copy of a shipped board file with other clusters (e.g. over CPUs this machine has)."""
    with open(os.path.join(REPO, "runtime", "boards", base + ".json")) as f:
        data = json.load(f)
    data["clusters"] = clusters
    path = os.path.join(str(tmp_path), base + "-test.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {repo!r} + "/tests"]
    import fake_sysfs  # the fake kernel behind the writes, as in the test process
    from runtime.platform import Platform
    p = Platform.open(board={board!r}, sysfs_root={root!r}, state_dir={state!r})
    p.set_cpu_freq({cluster!r}, {khz!r})
    print("READY", flush=True)
    time.sleep(30)
""")


def start_child(root, state_dir, board, cluster, khz):
    """A child process that opens the platform, changes a clock, prints READY and sleeps."""
    code = CHILD.format(repo=REPO, board=board, root=str(root), state=str(state_dir), cluster=cluster, khz=khz)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError("child did not start: %r %s" % (line, proc.stderr.read()))
    return proc

"""Fake Jetson Nano and Odroid-XU3 sysfs trees (in a temporary directory) for the platform tests.

The layouts follow runtime/boards/*.json and docs/boards.md; values are plausible, not measured.
"""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

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
XU3_INA = "sys/bus/i2c/drivers/INA231"
GOVERNORS = "conservative ondemand userspace powersave performance schedutil"


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


def make_nano(root, userspace=False, detect="compatible", power=True):
    """Jetson Nano: policy0 for cpu0-3, GPU devfreq 57000000.gpu, INA3221 (ina3221x IIO, mW)."""
    if detect == "compatible":
        write(root, "proc/device-tree/compatible",
              "nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0nvidia,tegra210\0")
    if detect in ("compatible", "model"):
        write(root, "proc/device-tree/model", "NVIDIA Jetson Nano Developer Kit\0")
    _policy(root, NANO_POLICY, NANO_CPU_KHZ, "schedutil", userspace, [0, 1, 2, 3])
    _devfreq(root, NANO_GPU, NANO_GPU_HZ, "nvhost_podgov")
    if power:
        # channel order deliberately differs from the board file's default names
        for n, (rail, mw) in enumerate([("POM_5V_IN", 3000), ("POM_5V_CPU", 1200), ("POM_5V_GPU", 400)]):
            write(root, NANO_INA + "/rail_name_%d" % n, rail + "\n")
            write(root, NANO_INA + "/in_power%d_input" % n, "%d\n" % mw)
            write(root, NANO_INA + "/in_current%d_input" % n, "100\n")
            write(root, NANO_INA + "/in_voltage%d_input" % n, "5000\n")
    return str(root)


def make_xu3(root, userspace=True, bus=3, power=True, enabled=True):
    """Odroid-XU3: policy0 (A7, cpu0-3), policy4 (A15, cpu4-7), Mali devfreq0, INA231 (W, bus varies)."""
    write(root, "proc/device-tree/compatible", "hardkernel,odroid-xu3\0samsung,exynos5800\0samsung,exynos5\0")
    write(root, "proc/device-tree/model", "Hardkernel Odroid XU3\0")
    _policy(root, XU3_A7, XU3_A7_KHZ, "ondemand", userspace, [0, 1, 2, 3])
    _policy(root, XU3_A15, XU3_A15_KHZ, "ondemand", userspace, [4, 5, 6, 7])
    _devfreq(root, XU3_GPU, XU3_GPU_HZ, "simple_ondemand")
    if power:
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
    sys.path.insert(0, {repo!r})
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

"""Frequency domains: CPU clusters (cpufreq, kHz) and the GPU (devfreq, Hz).

A CPU cluster is set with the `userspace` governor + `scaling_setspeed` when the kernel offers both,
else by writing the same value to `scaling_min_freq` and `scaling_max_freq`. The GPU is always set
through `min_freq`/`max_freq`. Min/max pairs are written in an order that keeps min <= max after
every write (old kernels reject min > max with EINVAL). All writes go through the Guard.

The limits in force at the session's first clock change (nvpmodel's caps on a Nano, jetson_clocks'
floor, a thermal cap) are the ceiling and floor: a request outside them is refused before anything is
written, so the min/max method never lifts a power mode's cap. The kernel clamps scaling_setspeed into
[scaling_min_freq, scaling_max_freq] silently (cpufreq_userspace.c), so every set reads the current
frequency back and refuses a mismatch instead of recording a frequency the board is not running.
"""
import logging
import os
import time
from collections import namedtuple

from .errors import PERMISSION_FIX, PlatformError

ClusterInfo = namedtuple("ClusterInfo", ["name", "cpus", "core", "aliases", "policy_dir", "frequencies_khz",
                                         "governors", "method", "available", "reason"])
log = logging.getLogger("runtime.platform")
# Read-back: clock drivers round to PLL steps, so allow 0.5 % (engineering choice, no source); a governor
# may apply the change a tick later, so retry for about 50 ms before calling it a mismatch.
READBACK_TOLERANCE = 0.005
READBACK_TRIES = 6
GpuInfo = namedtuple("GpuInfo", ["name", "devfreq_dir", "frequencies_hz", "governor", "available", "reason"])

# Kernel ABI file names (Documentation/cpu-freq, devfreq); a board file may override them.
CPUFREQ_FILES = {"governor": "scaling_governor", "available_governors": "scaling_available_governors",
                 "setspeed": "scaling_setspeed", "min": "scaling_min_freq", "max": "scaling_max_freq",
                 "cur": "scaling_cur_freq", "available_frequencies": "scaling_available_frequencies",
                 "cpuinfo_min": "cpuinfo_min_freq", "cpuinfo_max": "cpuinfo_max_freq"}
DEVFREQ_FILES = {"governor": "governor", "available_governors": "available_governors", "min": "min_freq",
                 "max": "max_freq", "cur": "cur_freq", "available_frequencies": "available_frequencies"}


def check_frequency(value, valid, what, unit, lo=None, hi=None):
    """`value` as an int if it is one of `valid` (or within [lo, hi] when the kernel lists none)."""
    try:
        v = int(value)
        if v != value:
            raise ValueError
    except (TypeError, ValueError):
        raise PlatformError("%s: frequency %r is not a whole number of %s" % (what, value, unit))
    if valid:
        if v not in valid:
            raise PlatformError("%s: %d %s is not an available frequency; valid (%s): %s"
                                % (what, v, unit, unit, " ".join(str(f) for f in valid)))
    elif lo is not None and hi is not None and not lo <= v <= hi:
        raise PlatformError("%s: %d %s is outside the hardware range %d..%d %s" % (what, v, unit, lo, hi, unit))
    return v


class _Domain(object):
    """One frequency domain: a directory of files with a min/max pair."""
    unit = "Hz"

    def __init__(self, what, dir_path, files, writable, sysfs, guard):
        self.what = what
        self.dir = dir_path
        self.sysfs = sysfs
        self.guard = guard
        self.reason = None
        self._caps = None  # (min, max) found at the session's first change: the ceiling and floor
        self.f = dict((role, os.path.join(dir_path, name)) for role, name in files.items()) if dir_path else {}
        if dir_path:
            guard.allow(*[self.f[r] for r in writable if r not in ("min", "max")])
            if "min" in writable and "max" in writable:
                guard.allow_pair(self.f["min"], self.f["max"])

    @property
    def available(self):
        return self.reason is None

    def _check_writable(self, roles):
        denied = [self.f[r] for r in roles if os.path.exists(self.f[r]) and not self.sysfs.writable(self.f[r])]
        if denied:
            self.reason = "no permission to write %s: %s" % (denied[0], PERMISSION_FIX)

    def table(self):
        """Every frequency the kernel lists for this domain."""
        return self.sysfs.try_read_ints(self.f["available_frequencies"]) if self.dir else None

    def frequencies(self):
        """The listed frequencies this session may set: those within the power mode's caps (limits())."""
        table = self.table()
        lo, hi = self.limits()
        if table is None:
            return None
        return [f for f in table if (lo is None or f >= lo) and (hi is None or f <= hi)]

    def current(self):
        return self.sysfs.try_read_int(self.f["cur"]) if self.dir else None

    def _require(self):
        if self.reason:
            raise PlatformError(self.reason)

    def limits(self):
        """(min, max) this session may use: fixed at the first change, else what the kernel says now."""
        if self._caps is not None:
            return self._caps
        return (self.sysfs.try_read_int(self.f["min"]), self.sysfs.try_read_int(self.f["max"])) if self.dir \
            else (None, None)

    def _within_caps(self, value):
        """Refuse `value` outside the limits found at the session's start (after a dead session was undone)."""
        self.guard.begin()
        if self._caps is None:
            self._caps = self.limits()
        lo, hi = self._caps
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise PlatformError("%s: %d %s is outside the limits in force when this session started, %s..%s %s "
                                "(%s / %s: the power mode's caps, e.g. nvpmodel or jetson_clocks); the runtime never "
                                "lifts them: choose a frequency in that range or change the power mode first"
                                % (self.what, value, self.unit, lo, hi, self.unit, self.f["min"], self.f["max"]))

    def _read_back(self, value):
        """The frequency the kernel runs after a set; PlatformError when it is not the one asked for."""
        cur = None
        for attempt in range(READBACK_TRIES):
            cur = self.current()
            if cur is None:
                log.warning("%s: cannot read %s back; assuming %d %s", self.what, self.f["cur"], value, self.unit)
                return value
            if abs(cur - value) <= READBACK_TOLERANCE * value:
                return cur
            time.sleep(0.01 * (attempt + 1))
        lo, hi = (self.sysfs.try_read_int(self.f[r]) for r in ("min", "max"))
        raise PlatformError("%s: asked for %d %s but the kernel runs at %d %s (limits now %s..%s %s, read from %s): "
                            "the power mode or a thermal cap changed during this session, or another tool set the "
                            "clock; nothing is recorded at this frequency (the clocks are restored at close)"
                            % (self.what, value, self.unit, cur, self.unit, lo, hi, self.unit, self.f["cur"]))

    def _set_range(self, value):
        self.guard.write_range(self.f["min"], self.f["max"], value, value)


class CpuCluster(_Domain):
    unit = "kHz"

    def __init__(self, spec, cpufreq, sysfs, guard):
        self.name = spec["name"]
        self.cpus = tuple(sorted(spec["cpus"]))
        self.core = spec.get("core", "")
        self.aliases = tuple(spec.get("aliases", []))
        files = dict(CPUFREQ_FILES, **cpufreq.get("files", {}))
        policy = sysfs.first_dir(spec["policy_candidates"], must_contain=files["max"])
        _Domain.__init__(self, "cluster %s" % self.name, policy, files, cpufreq.get("writable", []), sysfs, guard)
        self.method = None
        self.governors = []
        if not policy:
            self.reason = ("no cpufreq policy for cluster %s under %s (tried %s)"
                           % (self.name, sysfs.root, ", ".join(spec["policy_candidates"]) or "nothing"))
            return
        self.governors = (sysfs.try_read(self.f["available_governors"]) or "").split()
        self.userspace = cpufreq.get("setspeed_needs_governor", "userspace")
        if self.userspace in self.governors and os.path.exists(self.f.get("setspeed", "")):
            self.method = "userspace"
            self._check_writable(["governor", "setspeed"])
        else:
            self.method = "minmax"
            self._check_writable(["min", "max"])

    def set_khz(self, khz):
        """Pin the cluster to `khz` (one of its available frequencies). Returns the value set."""
        self._require()
        khz = check_frequency(khz, self.table(), self.what, "kHz",
                              self.sysfs.try_read_int(self.f["cpuinfo_min"]),
                              self.sysfs.try_read_int(self.f["cpuinfo_max"]))
        self._within_caps(khz)
        if self.method == "userspace":
            if self.sysfs.try_read(self.f["governor"]) != self.userspace:
                self.guard.write(self.f["governor"], self.userspace)
            self.guard.write(self.f["setspeed"], khz)
        else:
            self._set_range(khz)
        return self._read_back(khz)

    def info(self):
        return ClusterInfo(self.name, self.cpus, self.core, self.aliases, self.dir, self.frequencies(),
                           self.governors, self.method, self.available, self.reason)


class Gpu(_Domain):
    unit = "Hz"

    def __init__(self, spec, sysfs, guard):
        self.name = spec.get("name", "gpu")
        files = dict(DEVFREQ_FILES, **spec.get("files", {}))
        path = sysfs.first_dir(spec.get("devfreq_candidates", []), must_contain=files["max"])
        _Domain.__init__(self, "GPU", path, files, spec.get("writable", []), sysfs, guard)
        if not path:
            self.reason = _no_devfreq_reason(spec, sysfs) or (
                "no GPU devfreq node under %s (tried %s)"
                % (sysfs.root, ", ".join(spec.get("devfreq_candidates", [])) or "nothing"))
            return
        self._check_writable(["min", "max"])

    def set_hz(self, hz):
        """Pin the GPU to `hz` (one of its available frequencies) via min_freq/max_freq."""
        self._require()
        hz = check_frequency(hz, self.table(), self.what, "Hz")
        self._within_caps(hz)
        self._set_range(hz)
        return self._read_back(hz)

    def info(self):
        gov = self.sysfs.try_read(self.f["governor"]) if self.dir else None
        return GpuInfo(self.name, self.dir, self.frequencies(), gov, self.available, self.reason)


def _no_devfreq_reason(spec, sysfs):
    """The board file's explanation when this kernel's GPU driver has no devfreq (e.g. XU3 on 3.10)."""
    for node in spec.get("no_devfreq", []):
        for rel in node["paths"]:
            if os.path.exists(sysfs.path(rel)):
                return "%s (found %s)" % (node["reason"], rel)
    return None

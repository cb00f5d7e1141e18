"""Power sensors and energy integration.

`PowerMeter.read()` gives instantaneous watts per rail. `start()`/`stop()` sample in a background
thread every `interval_s` (default: the sensor's update period) and integrate sample-and-hold
(each reading holds until the next one, as energymon does for the XU3 INA231 whose values refresh
only every ~0.26 s). Measure over many inferences: one CNN inference is shorter than an update.
Without sensors the meter has `available == False`, a `reason`, and is falsy; callers report time only.
"""
import os
import threading
import time
from collections import OrderedDict, namedtuple

from .errors import SENSOR_FIX, PlatformError

Rail = namedtuple("Rail", ["name", "path", "scale_to_w"])
Energy = namedtuple("Energy", ["energy_j", "mean_power_w", "duration_s", "samples", "rails_j"])


def _parse_period_s(text, scale_s):
    """'263808 usec' (INA231, scale 1e-6) or '35' (ina2xx update_interval, ms) -> seconds."""
    try:
        return int(text.split()[0]) * scale_s
    except (AttributeError, IndexError, ValueError):
        return None


class PowerMeter(object):
    def __init__(self, rails=(), total="sum", interval_s=None, update_period_s=None, enable_paths=(),
                 guard=None, sysfs=None, reason=None, note=""):
        self.rails = list(rails)
        self.total = total
        self.update_period_s = update_period_s
        self.interval_s = interval_s or update_period_s or 0.1
        self.enable_paths = list(enable_paths)
        self.guard = guard
        self.sysfs = sysfs
        self.reason = reason if (reason or self.rails) else "no power sensors"
        self.note = note
        self.kind = None  # which of the board's power specs was found
        self.unit = "W"  # the unit the kernel files use (read() always returns watts)
        self.result = None
        self._samples = []
        self._thread = None
        self._stop = threading.Event()
        self._t0 = None

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def unavailable(cls, reason):
        return cls(reason=reason)

    @classmethod
    def from_board(cls, board, sysfs, guard, interval_s=None):
        """The first of the board's power specs (kernel variants, in order) whose sensors are found."""
        if not board.power:
            return cls.unavailable("board %s declares no power sensors; reporting time only" % board.name)
        reasons = []
        for spec in board.power:
            meter = cls._from_spec(spec, sysfs, guard, interval_s)
            if meter.available:
                return meter
            reasons.append("%s: %s" % (spec["kind"], meter.reason))
        return cls.unavailable("no power sensors found under %s: %s; reporting time only"
                               % (sysfs.root, " | ".join(reasons)))

    @classmethod
    def _from_spec(cls, p, sysfs, guard, interval_s):
        rails, missing, enable_paths = [], [], []
        for s in p["sensors"]:
            n = s.get("channel")
            fmt = (lambda t, n=n: t.format(n=n)) if n is not None else (lambda t: t)
            cands = s.get("dir_candidates", p.get("dir_candidates", []))
            d = sysfs.first_dir(cands, must_contain=fmt(p["power_file"]))
            if d is None:
                missing.append("%s (%s)" % (s["name"], ", ".join(cands)))
                continue
            path = os.path.join(d, fmt(p["power_file"]))
            if not os.access(path, os.R_OK):
                missing.append("%s (%s is not readable: %s)" % (s["name"], path, SENSOR_FIX))
                continue
            name = s["name"]
            if p.get("name_from_file", True) and p.get("name_file"):
                name = sysfs.try_read(os.path.join(d, fmt(p["name_file"]))) or name
            rails.append(Rail(name, path, float(p["scale_to_w"])))
            if p.get("enable_file"):
                enable_paths.append(os.path.join(d, p["enable_file"]))
        if not rails:
            return cls.unavailable("; ".join(missing) or "no sensors declared")
        enable_paths = sorted(set(e for e in enable_paths if os.path.exists(e)))
        guard.allow(*enable_paths)
        disabled = [e for e in enable_paths if sysfs.try_read(e) == "0"]
        locked = [e for e in disabled if not sysfs.writable(e)]
        if locked:
            return cls.unavailable("power sensors are disabled (%s = 0) and cannot be enabled: %s"
                                   % (locked[0], SENSOR_FIX))
        period = None
        if p.get("update_period_file"):
            d = os.path.dirname(rails[0].path)
            period = _parse_period_s(sysfs.try_read(os.path.join(d, p["update_period_file"])),
                                     p.get("update_period_scale_s", 1e-6))
        period = period or p.get("default_update_period_s")
        interval = interval_s or p.get("sample_period_s") or period
        total = p.get("total", "sum")
        names = [r.name for r in rails]
        notes = [p.get("total_note", "")]
        if total != "sum" and total not in names:
            notes.append("total rail %s not found, summing %s" % (total, ", ".join(names)))
            total = "sum"
        if missing:
            notes.append("missing sensors: " + "; ".join(missing))
        meter = cls(rails, total, interval, period, enable_paths, guard, sysfs, None, "; ".join(n for n in notes if n))
        meter.kind = p["kind"]
        meter.unit = p.get("unit", "W")
        return meter

    # -- state ---------------------------------------------------------------------------------
    @property
    def available(self):
        return self.reason is None

    def __bool__(self):
        return self.available

    __nonzero__ = __bool__

    @property
    def rail_names(self):
        return [r.name for r in self.rails]

    @property
    def running(self):
        return self._thread is not None

    def __repr__(self):
        if not self.available:
            return "PowerMeter(unavailable: %s)" % self.reason
        return "PowerMeter(%s, total=%s, every %.3f s)" % (", ".join(self.rail_names), self.total, self.interval_s)

    # -- reading -------------------------------------------------------------------------------
    def _read_values(self):
        """Watts per rail in rail order, or None if any file could not be read/parsed right now."""
        out = []
        for r in self.rails:
            try:
                with open(r.path, "r") as f:
                    out.append(float(f.read().split()[0]) * r.scale_to_w)
            except (OSError, IOError, ValueError, IndexError):
                return None
        return out

    def read(self):
        """Instantaneous power: OrderedDict rail name -> watts."""
        if not self.available:
            raise PlatformError(self.reason)
        vals = self._read_values()
        if vals is None:
            raise PlatformError("could not read power sensors %s" % ", ".join(r.path for r in self.rails))
        return OrderedDict(zip(self.rail_names, vals))

    def _total(self, per_rail):
        if self.total == "sum":
            return sum(per_rail.values())
        return per_rail[self.total]

    def read_total_w(self):
        return self._total(self.read())

    # -- energy --------------------------------------------------------------------------------
    def _ensure_enabled(self):
        enabled = False
        for e in self.enable_paths:
            if self.sysfs.try_read(e) == "0":
                self.guard.write(e, "1")
                enabled = True
        if enabled and self.update_period_s:
            time.sleep(self.update_period_s)  # first values appear one update later

    def _sample(self):
        t = time.monotonic()
        vals = self._read_values()
        if vals is not None:
            self._samples.append((t, vals))

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self):
        """Begin sampling in a background thread."""
        if not self.available:
            raise PlatformError(self.reason)
        if self._thread is not None:
            raise PlatformError("power meter is already running; call stop() first")
        self._ensure_enabled()
        self._samples = []
        self._stop.clear()
        self.result = None
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="dynn-power")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        """Stop sampling; return Energy(energy_j, mean_power_w, duration_s, samples, rails_j)."""
        if self._thread is None:
            raise PlatformError("power meter is not running; call start() first")
        t1 = time.monotonic()
        self._stop.set()
        self._thread.join()
        self._thread = None
        samples = [s for s in self._samples if s[0] <= t1]
        if not samples:
            raise PlatformError("no power sample could be read between start() and stop()")
        rails_j = OrderedDict((name, 0.0) for name in self.rail_names)
        for i, (t, vals) in enumerate(samples):
            # sample-and-hold; the first reading also covers [t0, its own time]
            dt = (samples[i + 1][0] if i + 1 < len(samples) else t1) - (self._t0 if i == 0 else t)
            for name, w in zip(self.rail_names, vals):
                rails_j[name] += w * dt
        duration = t1 - self._t0
        energy = self._total(rails_j)
        self.result = Energy(energy, energy / duration if duration > 0 else 0.0, duration, len(samples), rails_j)
        return self.result

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self._thread is not None:
            self.stop()
        return False

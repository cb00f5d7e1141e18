"""`Platform`: the one object the runtime holds (see the package docstring for the API)."""
import os
from collections import OrderedDict

from .board import GENERIC, Board, detect_board, generic_board, list_boards, load_board
from .dvfs import CpuCluster, Gpu
from .errors import PlatformError
from .guard import Guard
from .mapping import Affinity
from .power import PowerMeter
from .sysfs import Sysfs


def _resolve_board(board, sysfs):
    if isinstance(board, Board):
        return board
    if board is None:
        found = detect_board(sysfs)
        return found if found is not None else generic_board(os.sched_getaffinity(0))
    if board == GENERIC:
        return generic_board(os.sched_getaffinity(0))
    return load_board(board)


class Platform(object):
    def __init__(self, board, sysfs, guard, dvfs=True, power_interval_s=None):
        self.board = board
        self.sysfs = sysfs
        self._guard = guard
        self._affinity = Affinity()
        self._clusters = OrderedDict()
        self._alias = {}
        for spec in board.clusters:
            c = CpuCluster(spec, board.cpufreq, sysfs, guard)
            self._clusters[c.name] = c
            for key in (c.name,) + c.aliases:
                self._alias.setdefault(key, c.name)
        self._gpu = Gpu(board.gpu, sysfs, guard) if board.gpu else None
        self.power = PowerMeter.from_board(board, sysfs, guard, power_interval_s)
        if not dvfs:
            self.dvfs_reason = "DVFS is off (dvfs=False): clocks are left as they are"
        elif board.generic:
            self.dvfs_reason = ("DVFS unavailable: this machine is not a known board (%s has no device-tree match "
                                "for %s); pass board= to force one" % (sysfs.root, ", ".join(list_boards())))
        else:
            reasons = [c.reason for c in self._clusters.values() if c.reason]
            ok = [c for c in self._clusters.values() if c.available]
            self.dvfs_reason = None if ok else "DVFS unavailable: " + (reasons[0] if reasons else "no CPU clusters")
        self.dvfs_available = self.dvfs_reason is None
        self._dvfs = dvfs

    @classmethod
    def open(cls, board=None, sysfs_root="/", state_dir=None, dvfs=True, signals=True, power_interval_s=None):
        """Describe the board under `sysfs_root`; nothing is written until a set_* call."""
        sysfs = Sysfs(sysfs_root)
        b = _resolve_board(board, sysfs)
        guard = Guard(sysfs, state_dir=state_dir, board_name=b.name, signals=signals)
        return cls(b, sysfs, guard, dvfs=dvfs, power_interval_s=power_interval_s)

    # -- description ---------------------------------------------------------------------------
    @property
    def clusters(self):
        """OrderedDict name -> ClusterInfo(name, cpus, core, aliases, policy_dir, frequencies_khz, ...)."""
        return OrderedDict((n, c.info()) for n, c in self._clusters.items())

    @property
    def gpu(self):
        """GpuInfo(name, devfreq_dir, frequencies_hz, governor, available, reason) or None."""
        return self._gpu.info() if self._gpu else None

    @property
    def state_dir(self):
        return self._guard.state_dir

    def cluster(self, name):
        """Canonical cluster name for a name or alias ('big', 'little', 'cpu', ...)."""
        if name not in self._alias:
            raise PlatformError("board %s has no cluster %r; valid: %s"
                                % (self.board.name, name, ", ".join(sorted(self._alias))))
        return self._alias[name]

    def cores(self, cluster):
        return len(self._clusters[self.cluster(cluster)].cpus)

    def describe(self):
        """Plain dict for logs and profile records."""
        return OrderedDict([
            ("board", self.board.name), ("sysfs_root", self.sysfs.root),
            ("dvfs_available", self.dvfs_available), ("dvfs_reason", self.dvfs_reason),
            ("clusters", OrderedDict((n, OrderedDict([
                ("cpus", list(c.cpus)), ("core", c.core), ("method", c.method),
                ("frequencies_khz", c.frequencies()), ("cur_khz", c.current()), ("reason", c.reason)]))
                for n, c in self._clusters.items())),
            ("gpu", None if not self._gpu else OrderedDict([
                ("dir", self._gpu.dir), ("frequencies_hz", self._gpu.frequencies()),
                ("cur_hz", self._gpu.current()), ("reason", self._gpu.reason)])),
            ("power", OrderedDict([("available", self.power.available), ("reason", self.power.reason),
                                   ("rails", self.power.rail_names), ("total", self.power.total),
                                   ("interval_s", self.power.interval_s), ("note", self.power.note)])),
        ])

    # -- control -------------------------------------------------------------------------------
    def _require_dvfs(self):
        if not self.dvfs_available:
            raise PlatformError(self.dvfs_reason)

    def set_cpu_freq(self, cluster, khz):
        """Pin `cluster` (name or alias) to `khz`; returns the value set. Validated against the kernel's list."""
        self._require_dvfs()
        return self._clusters[self.cluster(cluster)].set_khz(khz)

    def set_gpu_freq(self, hz):
        """Pin the GPU devfreq to `hz` (min_freq = max_freq); returns the value set."""
        if not self._dvfs:
            raise PlatformError(self.dvfs_reason)
        if self._gpu is None:
            raise PlatformError("board %s declares no GPU devfreq node" % self.board.name)
        return self._gpu.set_hz(hz)

    def cpu_freq(self, cluster):
        """Current frequency of a cluster in kHz (scaling_cur_freq), None if unknown."""
        return self._clusters[self.cluster(cluster)].current()

    def gpu_freq(self):
        """Current GPU frequency in Hz (cur_freq), None if unknown."""
        return self._gpu.current() if self._gpu else None

    def pin(self, cluster):
        """Run this process and its threads on `cluster`'s CPUs only; returns the CPU set."""
        name = self.cluster(cluster)
        return self._affinity.pin(self._clusters[name].cpus, "cluster %s" % name)

    def unpin(self):
        self._affinity.restore()

    def restore(self):
        """Put back every changed clock and the original affinity; the platform stays usable."""
        try:
            self._affinity.restore()
        finally:
            self._guard.restore()

    def close(self):
        """restore(), then release the lock and the signal handlers. Idempotent."""
        try:
            if self.power.running:
                self.power.stop()
            self._affinity.restore()
        finally:
            self._guard.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "Platform(board=%s, root=%s, dvfs=%s)" % (self.board.name, self.sysfs.root,
                                                         "on" if self.dvfs_available else "off")

"""`Platform`: the one object the runtime holds (see the package docstring for the API)."""
import os
from collections import OrderedDict

from .board import GENERIC, Board, detect_board, generic_board, list_boards, load_board
from .dvfs import CpuCluster, Gpu
from .errors import PlatformError
from .guard import STATE_FILE, Guard, default_state_dir
from .mapping import Affinity
from .power import PowerMeter
from .powermode import read_power_mode
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

    def __repr__(self):
        return "Platform(board=%s, root=%s, dvfs=%s)" % (self.board.name, self.sysfs.root,
                                                         "on" if self.dvfs_available else "off")

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

    def online_cpus(self):
        """CPUs the kernel has online (nvpmodel 5W takes two Nano cores offline); the board's CPUs if unknown."""
        online = self.sysfs.online_cpus()
        if online is None:
            return frozenset(n for c in self._clusters.values() for n in c.cpus)
        return online

    def cluster_cpus(self, cluster):
        """The online CPUs of a cluster (name or alias)."""
        return tuple(n for n in self._clusters[self.cluster(cluster)].cpus if n in self.online_cpus())

    def cores(self, cluster):
        """How many of the cluster's CPUs are online: the most threads worth running there."""
        return len(self.cluster_cpus(cluster))

    def power_mode(self):
        """The power mode (nvpmodel id and name where the board has it) and the caps this session keeps to."""
        mode = read_power_mode(self.board, self.sysfs)
        caps = OrderedDict()
        for n, c in self._clusters.items():
            lo, hi = c.limits()
            caps[n] = OrderedDict([("min_khz", lo), ("max_khz", hi)])
        if self._gpu is not None:
            lo, hi = self._gpu.limits()
            caps["gpu"] = OrderedDict([("min_hz", lo), ("max_hz", hi)])
        mode["online_cpus"] = sorted(self.online_cpus())
        mode["caps"] = caps
        return mode

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
            ("power_mode", self.power_mode()),
            ("power", OrderedDict([("available", self.power.available), ("reason", self.power.reason),
                                   ("kind", self.power.kind), ("rails", self.power.rail_names), ("total", self.power.total),
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
        """Run this process and its threads on `cluster`'s online CPUs only; returns the CPU set."""
        name = self.cluster(cluster)
        cpus = self.cluster_cpus(name)
        if not cpus:
            raise PlatformError("cannot pin to cluster %s CPUs %s: none of them is online (online: %s; see "
                                "sys/devices/system/cpu/online and the power mode)"
                                % (name, list(self._clusters[name].cpus), sorted(self.online_cpus())))
        return self._affinity.pin(cpus, "cluster %s" % name)

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


def restore_from_state(state_dir=None, board=None, sysfs_root="/"):
    """Put the board back after a process died without restoring (SIGKILL, crash, power cut).

    What may be written is rebuilt from the board file (`board`, else detected under `sysfs_root`) and
    these arguments, never from the state file: a path it names that the board does not declare
    writable under `sysfs_root` stops the restore with one line. Returns the files written ([] when
    there was nothing to do); the state file is kept when something could not be written back.
    This is what `python -m runtime restore` calls."""
    state_dir = state_dir or default_state_dir()
    if not os.path.exists(os.path.join(state_dir, STATE_FILE)):
        return []
    with Platform.open(board=board, sysfs_root=sysfs_root, state_dir=state_dir, signals=False) as p:
        return p._guard.recover()


def online_cpus(sysfs_root="/"):
    """CPUs the kernel has online under `sysfs_root` (else the ones this process may use): bound threads by it."""
    online = Sysfs(sysfs_root).online_cpus()
    return online if online is not None else frozenset(os.sched_getaffinity(0))

"""Platform control for the on-board runtime: DVFS, task mapping, power sensors, safety.

Python 3.6+, stdlib plus the runtime's own helpers (schema, atomic writer). Board knowledge is data in runtime/boards/*.json (paths relative to a
sysfs root, units, detection rule, sources); this package only interprets it.

Facade
------
    from runtime.platform import Platform, PlatformError, restore_from_state

    p = Platform.open(board=None, sysfs_root="/", state_dir=None, dvfs=True, signals=True,
                      power_interval_s=None)
        board:      None = detect from <root>/proc/device-tree/{compatible,model} (falls back to the
                    "generic" board: one cluster "all" over the allowed CPUs, DVFS unavailable);
                    "jetson-nano" / "odroid-xu3" / "generic"; or a path to a board JSON file.
        sysfs_root: the one root every path is read/written under (a fake tree in tests).
        state_dir:  where state.json and the lock live (default $DYNN_STATE_DIR, /run/dynn for root,
                    else <tmp>/dynn-<uid>).
        dvfs:       False = never change clocks (set_* raise PlatformError); pinning and power still work.
        Opening writes nothing; the lock is taken at the first clock write.

    p.board                 Board (.name, .description, .generic, .data)
    p.dvfs_available        bool; p.dvfs_reason: one line saying why not (None when available)
    p.clusters              OrderedDict name -> ClusterInfo(name, cpus, core, aliases, policy_dir,
                            frequencies_khz, governors, method, available, reason)
                            Nano: "a57" (aliases big/cpu/all); XU3: "a15" (big), "a7" (little)
    p.cluster(name_or_alias) -> canonical name;  p.cores(cluster) -> number of its ONLINE CPUs
    p.online_cpus() -> frozenset;  p.cluster_cpus(cluster) -> its online CPUs (what pin() uses)
    p.power_mode()          OrderedDict(tool, id, name, source, reason, online_cpus, caps): nvpmodel's mode and
                            the min/max limits this session keeps to (also in describe(), hence in profiles)
    p.gpu                   GpuInfo(name, devfreq_dir, frequencies_hz, governor, available, reason) or None
    p.set_cpu_freq(cluster, khz) -> khz    userspace+scaling_setspeed, else scaling_min=max=khz; refused
                                           outside the caps found at the first change; read back after
    p.set_gpu_freq(hz) -> hz               devfreq min_freq = max_freq = hz (same caps and read-back)
    p.cpu_freq(cluster) -> kHz | None;  p.gpu_freq() -> Hz | None
    p.pin(cluster) -> frozenset(cpus)      sched_setaffinity on every thread; p.unpin()
    p.power                 PowerMeter; falsy with .available False and .reason when there are no sensors
        .read() -> {rail: W};  .read_total_w();  .rail_names;  .total ("sum" or a rail name)
        .start();  .stop() -> Energy(energy_j, mean_power_w, duration_s, samples, rails_j)
        (or `with p.power as m: ...; m.result`)
    p.describe() -> dict for logs/profiles
    p.restore()             clocks and affinity back to the originals; stays usable
    p.close()               restore + release lock + remove signal handlers; also on `with` exit

    restore_from_state(state_dir=None, board=None, sysfs_root="/") -> [files written]   after SIGKILL/crash
                            (`python -m runtime restore`); writes only what the board file declares
    online_cpus(sysfs_root="/") -> frozenset   online CPUs: the bound for engine threads

Safety: only files declared by the board file are written, and only under <root>/sys/ after resolving
`..` and symlinks (Sysfs.confine, the one check for writes and restores); each original is recorded in
<state_dir>/state.json before its first change and written back on close(), on exceptions (context
manager), at interpreter exit, and on SIGINT/SIGTERM (then the previous handler runs or the process
dies of the signal). A second process gets a PlatformError naming the PID holding the lock.
Every expected failure is a PlatformError with a one-line message.
"""
from .board import Board, detect_board, list_boards, load_board
from .errors import PlatformError
from .facade import Platform, online_cpus, restore_from_state
from .guard import default_state_dir
from .power import Energy, PowerMeter

__all__ = ["Board", "Energy", "Platform", "PlatformError", "PowerMeter", "default_state_dir", "detect_board",
           "list_boards", "load_board", "online_cpus", "restore_from_state"]

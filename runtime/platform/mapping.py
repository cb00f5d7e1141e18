"""Task mapping: pin this process and all its threads to a cluster's CPUs, and undo it."""
import os

from .errors import PlatformError


def _threads():
    """Thread ids of this process (Linux /proc/self/task), or just the process when unavailable."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


class Affinity(object):
    """Remembers the affinity found before the first pin() and puts it back on restore()."""

    def __init__(self):
        self._original = None

    @staticmethod
    def current():
        return frozenset(os.sched_getaffinity(0))

    def pin(self, cpus, what="cluster"):
        """Restrict the process (every existing thread; new ones inherit) to `cpus`."""
        cpus = frozenset(cpus)
        if not hasattr(os, "sched_setaffinity"):
            raise PlatformError("cannot pin to %s: os.sched_setaffinity is not available on this OS" % what)
        if self._original is None:
            self._original = self.current()
        try:
            self._apply(cpus)
        except OSError as e:
            raise PlatformError("cannot pin to %s CPUs %s: %s (CPUs this process may use: %s; are they offline? "
                                "see /sys/devices/system/cpu/online)"
                                % (what, sorted(cpus), e.strerror or e, sorted(self._original)))
        return cpus

    def restore(self):
        if self._original is not None:
            self._apply(self._original)
            self._original = None

    @staticmethod
    def _apply(cpus):
        os.sched_setaffinity(0, cpus)  # the caller first: errors surface here
        for tid in _threads():
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, PermissionError):
                pass  # thread exited meanwhile

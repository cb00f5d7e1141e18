"""Reading and writing sysfs files under one root ("/" on a board, a temporary tree in tests).

Paths in board files are relative to the root; everything below works on absolute paths made by
`Sysfs.path`. `Sysfs.write` is the one door to the files: it confines every write (and so every
restore) to <root>/sys/ after resolving `..` and symlinks. The allow-list and save/restore live in guard.py.
"""
import errno
import glob
import os

from .errors import PERMISSION_FIX, PlatformError

ONLINE_CPUS = "sys/devices/system/cpu/online"  # kernel ABI: Documentation/ABI/testing/sysfs-devices-system-cpu


class Sysfs(object):
    """One sysfs root, passed to every module that touches files (never copied as a global)."""

    def __init__(self, root="/"):
        self.root = os.path.abspath(root or "/")

    def __repr__(self):
        return "Sysfs(%r)" % self.root

    def path(self, rel):
        """Absolute, normalised path of `rel` (a board-file path relative to the root)."""
        return os.path.normpath(os.path.join(self.root, rel.lstrip("/")))

    def rel(self, path):
        """Path relative to the root (what the state file stores)."""
        return os.path.relpath(path, self.root)

    def glob(self, pattern):
        """Sorted absolute matches of a relative glob pattern."""
        return sorted(os.path.normpath(p) for p in glob.glob(self.path(pattern)))

    def first_dir(self, candidates, must_contain=None):
        """First existing directory among relative paths or globs (optionally holding a given file)."""
        for cand in candidates:
            for path in self.glob(cand) if glob.has_magic(cand) else [self.path(cand)]:
                if os.path.isdir(path) and (must_contain is None
                                            or os.path.exists(os.path.join(path, must_contain))):
                    return path
        return None

    def confine(self, path):
        """`path` itself if it resolves (normalised, symlinks followed) under <root>/sys/, else PlatformError.

        The only place that decides where the platform may write: used by every write and every restore."""
        top = os.path.realpath(os.path.join(self.root, "sys"))
        real = os.path.realpath(path)
        if not real.startswith(top + os.sep):
            raise PlatformError("refusing to write %s: it resolves to %s, outside %s%s; fix the board file "
                                "(paths must stay under sys/, without '..')" % (path, real, top, os.sep))
        return path

    # -- reading -----------------------------------------------------------------------------
    @staticmethod
    def try_read(path):
        """Stripped text of a file, or None if it is missing or unreadable."""
        try:
            with open(path, "r") as f:
                return f.read().strip()
        except (OSError, IOError, UnicodeDecodeError):
            return None

    def try_read_int(self, path):
        text = self.try_read(path)
        try:
            return int(text.split()[0]) if text else None
        except ValueError:
            return None

    def try_read_ints(self, path):
        """Whitespace-separated integers (e.g. available frequencies), sorted; None if absent."""
        text = self.try_read(path)
        if not text:
            return None
        try:
            return sorted(set(int(v) for v in text.split()))
        except ValueError:
            return None

    def online_cpus(self):
        """CPUs the kernel has online (<root>/sys/devices/system/cpu/online, e.g. "0-1,3"); None if unknown."""
        return parse_cpu_list(self.try_read(self.path(ONLINE_CPUS)))

    # -- writing -----------------------------------------------------------------------------
    @staticmethod
    def writable(path):
        return os.access(path, os.W_OK)

    def write(self, path, value):
        """Write `value` to one file under <root>/sys/; OSError becomes a PlatformError naming the file and fix."""
        text = str(value)
        self.confine(path)
        if not os.path.exists(path):  # never create files: sysfs attributes exist or the path is wrong
            raise write_error(path, text, OSError(errno.ENOENT, "No such file or directory"))
        try:
            raw_write(path, text)
        except (OSError, IOError) as e:
            raise write_error(path, text, e)


def raw_write(path, text):
    """The bare file write (what a test's fake kernel wraps to react like the kernel would)."""
    with open(path, "w") as f:
        f.write(text)


def parse_cpu_list(text):
    """Kernel CPU list syntax ("0-3", "0,2-3", "") -> frozenset of ints; None when text is None or malformed."""
    if text is None:
        return None
    cpus = set()
    try:
        for part in text.strip().split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        return None
    return frozenset(cpus)


def write_error(path, text, e):
    code = getattr(e, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        return PlatformError("no permission to write %s (%s): %s"
                             % (path, errno.errorcode.get(code, code), PERMISSION_FIX))
    if code == errno.ENOENT:
        return PlatformError("cannot write %r to %s: file does not exist (wrong board file or kernel?)"
                             % (text, path))
    if code == errno.EINVAL:
        return PlatformError("kernel rejected %r for %s (EINVAL): check the value against the available "
                             "ones and the current governor/limits" % (text, path))
    return PlatformError("cannot write %r to %s: %s" % (text, path, getattr(e, "strerror", None) or e))

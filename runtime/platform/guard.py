"""Safety around clock writes: allow-list, save-before-write, restore, state file, lock, signals.

Every write of the platform layer goes through `Guard.write`:
1. the path must be declared (allow-listed from the board file), else PlatformError;
2. on the first write of a session (`begin`) the guard takes an flock on `<state_dir>/lock` (a second
   process gets an error naming the holder's PID), restores any state left by a process that was killed,
   and installs SIGINT/SIGTERM handlers and an atexit hook;
3. the file's original value is recorded in `<state_dir>/state.json` BEFORE the file is changed;
4. `restore()` writes the originals back (min/max pairs in an order that keeps min <= max) and removes
   the state file; `recover()` does the same from the file after SIGKILL or a crash.
A state file is never trusted for where to write: each path it names must be one this guard's board
file declares writable under this guard's own root, and Sysfs.write confines every write to <root>/sys/.
"""
import atexit
import errno
import fcntl
import logging
import os
import signal
import sys
import tempfile
import threading
from collections import OrderedDict

from runtime.bundle import atomic_write_json
from runtime.cli import utc_now
from runtime.schema import field, load_json, require_dict

from .errors import PlatformError
from .sysfs import Sysfs

log = logging.getLogger("runtime.platform")

STATE_FILE = "state.json"
LOCK_FILE = "lock"
STATE_SCHEMA = "dynn-platform-state"
STATE_VERSION = 1
BOOT_ID = "proc/sys/kernel/random/boot_id"


def default_state_dir():
    """$DYNN_STATE_DIR, else /run/dynn for root, else <tmp>/dynn-<uid>."""
    env = os.environ.get("DYNN_STATE_DIR")
    if env:
        return env
    uid = os.geteuid()
    if uid == 0 and os.path.isdir("/run"):
        return "/run/dynn"
    return os.path.join(tempfile.gettempdir(), "dynn-%d" % uid)


def _check_dir(state_dir, create):
    """The state directory must be ours and not writable by others (it names files we write as root)."""
    if create:
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise PlatformError("cannot create state directory %s: %s; pass state_dir= or set DYNN_STATE_DIR"
                                % (state_dir, e.strerror or e))
    st = os.stat(state_dir)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PlatformError("state directory %s is owned by uid %d or writable by others; remove it or choose "
                            "another one (state_dir= / DYNN_STATE_DIR)" % (state_dir, st.st_uid))


def write_range(write, read_int, min_path, max_path, lo, hi):
    """Set a [min, max] pair with two writes ordered so that min <= max holds after each of them."""
    cur_max = read_int(max_path)
    if cur_max is not None and lo > cur_max:
        write(max_path, hi)
        write(min_path, lo)
    else:
        write(min_path, lo)
        write(max_path, hi)


def _restore_entries(sysfs, originals, pairs):
    """Write originals back, newest first; min/max pairs together. Returns a list of error strings."""
    values = dict(originals)
    done = set()
    errors = []
    for path, value in reversed(originals):
        if path in done:
            continue
        pair = pairs.get(path)
        try:
            if pair and pair[0] in values and pair[1] in values:
                done.update(pair)
                write_range(sysfs.write, sysfs.try_read_int, pair[0], pair[1],
                            int(values[pair[0]]), int(values[pair[1]]))
            else:
                done.add(path)
                sysfs.write(path, value)
        except (PlatformError, ValueError) as e:
            errors.append(str(e))
    return errors


class _Lock(object):
    """flock on a lock file that holds the owner's PID."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (OSError, IOError) as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PlatformError("cannot lock %s: %s" % (self.path, e.strerror or e))
            holder = Sysfs.try_read(self.path) or "unknown"
            mine = " (this process)" if holder == str(os.getpid()) else ""
            raise PlatformError("another process (PID %s%s) is changing the clocks (lock %s is held): wait for "
                                "it to finish or stop it; it restores the clocks when it exits"
                                % (holder, mine, self.path))
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self):
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


STATE_FIX = "check the clocks by hand, then delete the file"


def _read_state(path):
    """The state file, validated: one line naming the file and the field on anything unexpected."""
    where = "state file %s" % path
    state = load_json(path, STATE_FIX, PlatformError)
    require_dict(state, where, STATE_FIX, error=PlatformError)
    for key, t, check, expect in (
            ("schema", str, lambda v: v == STATE_SCHEMA, repr(STATE_SCHEMA)),
            ("version", int, lambda v: 1 <= v <= STATE_VERSION, "an integer from 1 to %d" % STATE_VERSION),
            ("board", str, None, None), ("sysfs_root", str, None, None),
            ("originals", list, lambda v: all(isinstance(e, list) and len(e) == 2 and
                                              all(isinstance(x, str) for x in e) for e in v),
             "a list of [path, value] string pairs")):
        field(state, key, t, where, STATE_FIX, check=check, expect=expect, error=PlatformError)
    state["boot_id"] = field(state, "boot_id", (str, type(None)), where, STATE_FIX, default=None, error=PlatformError)
    return state


class Guard(object):
    """Allow-list + save/restore for one process and one sysfs root."""

    def __init__(self, sysfs, state_dir=None, board_name="", signals=True):
        self.sysfs = sysfs
        self.state_dir = state_dir or default_state_dir()
        self.board_name = board_name
        self._signals = signals
        self._allowed = set()
        self._pairs = {}
        self._originals = OrderedDict()
        self._lock = None
        self._prev_handlers = {}
        self._active = False

    # -- declaration ---------------------------------------------------------------------------
    def allow(self, *paths):
        """Declare files this guard may write (absolute paths from the board file)."""
        for p in paths:
            self._allowed.add(os.path.normpath(p))

    def allow_pair(self, min_path, max_path):
        """Declare a min/max pair; restore writes it in an order that keeps min <= max."""
        self.allow(min_path, max_path)
        pair = (os.path.normpath(min_path), os.path.normpath(max_path))
        self._pairs[pair[0]] = self._pairs[pair[1]] = pair

    @property
    def changed(self):
        """Files changed so far, with their original values."""
        return OrderedDict(self._originals)

    @property
    def state_path(self):
        return os.path.join(self.state_dir, STATE_FILE)

    # -- writing -------------------------------------------------------------------------------
    def write(self, path, value):
        path = os.path.normpath(path)
        if path not in self._allowed:
            raise PlatformError("refusing to write %s: it is not declared in board file %r"
                                % (path, self.board_name))
        self.begin()
        new = path not in self._originals
        if new:
            original = self.sysfs.try_read(path)
            if original is None:
                raise PlatformError("cannot read the current value of %s, so it could not be restored; "
                                    "not changing it (run with sudo?)" % path)
            self._originals[path] = original
            self._save_state()
        try:
            self.sysfs.write(path, value)
        except PlatformError:
            if new:  # the file did not change: nothing to restore there
                del self._originals[path]
                if self._originals:
                    self._save_state()
                else:
                    self._remove_state()
            raise

    def write_range(self, min_path, max_path, lo, hi):
        write_range(self.write, self.sysfs.try_read_int, min_path, max_path, lo, hi)

    # -- restoring -----------------------------------------------------------------------------
    def restore(self):
        """Write every original value back and delete the state file. Returns the files written."""
        if not self._originals:
            return []
        items = list(self._originals.items())
        errors = _restore_entries(self.sysfs, items, self._pairs)
        if errors:
            raise PlatformError("could not restore all clocks: %s; retry with `python -m runtime restore` "
                                "(state kept in %s)" % ("; ".join(errors), self.state_path))
        self._originals.clear()
        self._remove_state()
        return [p for p, _ in items]

    def close(self):
        """Restore, release the lock, remove signal handlers. Safe to call twice."""
        try:
            self.restore()
        finally:
            self._deactivate()

    # -- after a crash: the state file, checked against this guard's own declarations -------------
    def recover(self):
        """Restore what a dead session's state file records (after SIGKILL, a crash, a power cut).

        Returns the files written ([] when there is no state file). Raises PlatformError while a live
        process holds the lock, or when the file names anything this board does not declare writable."""
        if not os.path.exists(self.state_path):
            return []
        _check_dir(self.state_dir, create=False)
        lock = _Lock(os.path.join(self.state_dir, LOCK_FILE))
        lock.acquire()
        try:
            return self._restore_saved()
        finally:
            lock.release()

    def _restore_saved(self):
        path = self.state_path
        state = _read_state(path)
        boot = self.sysfs.try_read(self.sysfs.path(BOOT_ID))
        if state["boot_id"] and boot and state["boot_id"] != boot:
            log.warning("state file %s is from an earlier boot; clocks were reset by the reboot, deleting it", path)
            os.unlink(path)
            return []
        if os.path.abspath(state["sysfs_root"]) != self.sysfs.root or state["board"] != self.board_name:
            raise PlatformError("state file %s was written for board %s under %s, not board %s under %s; not "
                                "restoring anything: run `python -m runtime restore --board %s --sysfs-root %s` if "
                                "that is this machine, else %s" % (path, state["board"], state["sysfs_root"],
                                                                   self.board_name, self.sysfs.root, state["board"],
                                                                   state["sysfs_root"], STATE_FIX))
        originals = []
        for rel, value in state["originals"]:
            p = self.sysfs.path(rel)
            if p not in self._allowed:
                raise PlatformError("state file %s names %s, which is outside what board file %r declares writable "
                                    "under %s; not restoring anything (%s)"
                                    % (path, p, self.board_name, self.sysfs.root, STATE_FIX))
            originals.append((p, value))
        errors = _restore_entries(self.sysfs, originals, self._pairs)
        if errors:
            raise PlatformError("could not restore all clocks from %s: %s" % (path, "; ".join(errors)))
        os.unlink(path)
        return [p for p, _ in originals]

    # -- session: lock, stale state, signals, atexit -------------------------------------------
    def begin(self):
        """Start the session before the first change: lock, undo a dead session, signal handlers."""
        if self._active:
            return
        _check_dir(self.state_dir, create=True)
        lock = _Lock(os.path.join(self.state_dir, LOCK_FILE))
        lock.acquire()
        try:
            if os.path.exists(self.state_path):
                log.warning("restoring clocks left changed by a process that did not exit cleanly (%s)",
                            self.state_path)
                self._restore_saved()
        except Exception:
            lock.release()
            raise
        self._lock = lock
        self._active = True
        atexit.register(self._at_exit)
        if self._signals:
            self._install_signals()

    def _deactivate(self):
        if not self._active:
            return
        self._active = False
        self._uninstall_signals()
        try:
            atexit.unregister(self._at_exit)
        except Exception:
            pass
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _save_state(self):
        boot = self.sysfs.try_read(self.sysfs.path(BOOT_ID))
        state = OrderedDict([
            ("schema", STATE_SCHEMA), ("version", STATE_VERSION), ("pid", os.getpid()),
            ("board", self.board_name), ("sysfs_root", self.sysfs.root), ("boot_id", boot),
            ("created", utc_now()),
            ("originals", [[self.sysfs.rel(p), v] for p, v in self._originals.items()]),
        ])
        atomic_write_json(self.state_path, state, mode=0o600)

    def _remove_state(self):
        try:
            os.unlink(self.state_path)
        except OSError:
            pass

    def _at_exit(self):
        try:
            self.close()
        except Exception as e:
            sys.stderr.write("dynn: %s\n" % e)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGINT/SIGTERM will not restore the clocks "
                        "(close() and atexit still do)")
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._prev_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _uninstall_signals(self):
        for sig, prev in self._prev_handlers.items():
            try:
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except ValueError:  # not the main thread
                pass
        self._prev_handlers = {}

    def _on_signal(self, signum, frame):
        prev = self._prev_handlers.get(signum)
        try:
            self.close()
        except Exception as e:
            sys.stderr.write("dynn: %s\n" % e)
        if callable(prev):
            return prev(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt
        if prev == signal.SIG_IGN:
            return None
        signal.signal(signum, signal.SIG_DFL)  # die of the signal, as without us
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
        # Seen here about once in 50 runs: the re-sent signal did not end the process. Exit anyway, with the
        # shell's code for "killed by signum"; the clocks are already restored.
        os._exit(128 + signum)

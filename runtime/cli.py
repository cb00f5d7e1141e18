"""What every command line of the project shares: one error wrapper, one UTC timestamp, one version list,
one fd-silencer."""
import contextlib
import os
import platform
import sys
import tempfile
import time

from runtime.errors import DynnError


def run_cli(func, args, resume_hint=None):
    """Call func(args) -> exit code; a DynnError becomes one line on stderr and exit 1 (or its exit_code).

    Ctrl-C exits 130 with one line (resume_hint says how to go on, e.g. for training)."""
    try:
        return func(args)
    except DynnError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return getattr(exc, "exit_code", 1)  # a tool with distinct statuses (deploy) sets its own
    except KeyboardInterrupt:
        print("interrupted%s" % ("; " + resume_hint if resume_hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `python -m runtime info B | head`: the reader left; say nothing more, exit as a pipe-killed tool does.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141


def utc_now():
    """ISO-8601 UTC timestamp to the second, the form every written record uses."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def module_versions(names):
    """{import name: version or None} for the modules that import here (what a record states it ran with)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            m = __import__(name)
        except Exception:  # noqa: BLE001 - any import failure means "not usable here"
            out[name] = None
            continue
        v = getattr(m, "__version__", None) or getattr(m, "VERSION_TEXT", None)
        out[name] = str(v) if v is not None else None
    return out


@contextlib.contextmanager
def quiet_fds(fds=(1, 2)):
    """Send what native code prints on these file descriptors (C++ and Python alike) to a temporary file;
    show its last lines on stderr only if the block fails. Converters and engine loaders print notices there."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    log = tempfile.TemporaryFile(mode="w+b")
    failed = False
    try:
        for fd in fds:
            os.dup2(log.fileno(), fd)
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
        if failed:
            log.seek(0)
            tail = log.read()[-4000:].decode("utf-8", "replace")
            if tail.strip():
                sys.stderr.write("output before the failure (last lines):\n%s\n" % tail)
        log.close()


def cpu_count():
    """Online CPUs usable by this process (affinity-aware where the OS offers it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

"""What every command line of the project shares: one error wrapper, one UTC timestamp, one version list."""
import os
import platform
import sys
import time

from runtime.errors import DynnError


def run_cli(func, args, resume_hint=None):
    """Call func(args) -> exit code; a DynnError becomes one line on stderr and exit 1.

    Ctrl-C exits 130 with one line (resume_hint says how to go on, e.g. for training)."""
    try:
        return func(args)
    except DynnError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted%s" % ("; " + resume_hint if resume_hint else ""), file=sys.stderr)
        return 130


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


def cpu_count():
    """Online CPUs usable by this process (affinity-aware where the OS offers it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

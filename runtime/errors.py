"""The project's one exception family. Every CLI (build.py, python -m runtime, deploy) catches DynnError
by class, prints its message as one line and exits 1; anything else is a bug and keeps its traceback.

compile/ subclasses it (compile.errors.UserError); the runtime and the platform layer raise the two below.
"""


class DynnError(Exception):
    """An expected failure a person can fix: the message says what was wrong, where, and what to do."""


class RuntimeUserError(DynnError):
    """Bad bundle, bad input, missing package on the board side."""


class PlatformError(RuntimeUserError):
    """DVFS, task mapping, power sensors or the board file (runtime/platform/)."""

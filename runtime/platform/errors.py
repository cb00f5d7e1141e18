"""The one exception type of the platform layer."""

# What to do when a clock file cannot be written; shared by every message that needs it.
PERMISSION_FIX = ("install the udev rule (sudo sh board_scripts/install_udev_rule.sh, then log in again), "
                  "or run with sudo, or run with DVFS off (dvfs=False)")


class PlatformError(Exception):
    """An expected failure: one line that says what was wrong, which file/value, and what to do.

    The CLI catches it, prints str(error) and exits 1 without a traceback.
    """

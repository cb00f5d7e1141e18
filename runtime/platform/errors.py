"""Messages of the platform layer; the exception type itself is runtime.errors.PlatformError."""
from runtime.errors import PlatformError  # noqa: F401 - re-exported for the platform modules

# What to do when a clock file or a power sensor is root-only; shared by every message that needs it.
_UDEV = "install the udev rule (sudo sh board_scripts/install_udev_rule.sh, then log in again), or run with sudo"
PERMISSION_FIX = _UDEV + ", or run with DVFS off (dvfs=False)"
SENSOR_FIX = _UDEV + "; energy is not measured until then"

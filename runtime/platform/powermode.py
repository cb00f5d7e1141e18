"""The board's power mode (nvpmodel on a Jetson), read from its files; never changed by the runtime.

nvpmodel records the active mode in a status file ("pmode:0001") and names the modes in its conf file
("< POWER_MODEL ID=1 NAME=5W >"); both are data in the board file (power_mode.*), with their source.
"""
import re
from collections import OrderedDict


def read_power_mode(board, sysfs):
    """OrderedDict(tool, id, name, source, reason); id/name None where the board has no such tool."""
    spec = board.power_mode
    out = OrderedDict([("tool", None), ("id", None), ("name", None), ("source", None), ("reason", None)])
    if not spec:
        out["reason"] = "board %s has no power-mode tool: the limits below are the kernel's" % board.name
        return out
    out["tool"] = spec.get("tool")
    out["source"] = spec["status_file"]
    status = sysfs.try_read(sysfs.path(spec["status_file"]))
    found = re.search(spec["status_pattern"], status or "")
    if not found:
        out["reason"] = "cannot read the power mode from %s (%s)" % (
            spec["status_file"], "missing or unreadable" if status is None else "unexpected text %r" % status[:40])
        return out
    out["id"] = int(found.group(1))
    names = dict(re.findall(spec["name_pattern"], sysfs.try_read(sysfs.path(spec["conf_file"])) or ""))
    out["name"] = names.get(str(out["id"]))
    return out

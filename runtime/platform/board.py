"""Board descriptions (runtime/boards/*.json) and auto-detection from the device tree."""
import json
import os

from .errors import PlatformError

BOARDS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "boards")
BOARD_SCHEMA = "dynn-board"
BOARD_VERSION = 1
GENERIC = "generic"


class Board(object):
    """One board file: plain data plus a few accessors. `generic` is the no-board result."""

    def __init__(self, data, path=None):
        self.data = data
        self.path = path
        self.name = data["name"]
        self.description = data.get("description", "")
        self.clusters = list(data.get("clusters", []))
        self.cpufreq = data.get("cpufreq", {})
        self.gpu = data.get("gpu")
        self.power = data.get("power")
        self.detect = data.get("detect", {})
        self.sources = data.get("sources", {})

    @property
    def generic(self):
        return self.name == GENERIC

    def __repr__(self):
        return "Board(%r)" % self.name

    def matches(self, sysfs):
        """True if the device tree under `sysfs` names this board (compatible strings, then model)."""
        wanted = set(self.detect.get("compatible", []))
        for rel in self.detect.get("compatible_files", []):
            text = _read_raw(sysfs.path(rel))
            if text and wanted.intersection(s.strip() for s in text.split("\0")):
                return True
        needles = [n.lower() for n in self.detect.get("model_contains", [])]
        for rel in self.detect.get("model_files", []):
            text = _read_raw(sysfs.path(rel))
            if text and any(n in text.replace("\0", "").lower() for n in needles):
                return True
        return False


def _read_raw(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (OSError, IOError):
        return None


def list_boards():
    """Names of the board files shipped in runtime/boards/."""
    try:
        return sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))
    except OSError:
        return []


def generic_board(cpus):
    """The no-board result: one cluster over the CPUs we may run on, no DVFS, no sensors."""
    return Board({"name": GENERIC, "description": "unrecognised machine: no DVFS, no power sensors",
                  "clusters": [{"name": "all", "aliases": ["big", "little", "cpu"], "core": "unknown",
                                "cpus": sorted(cpus), "policy_candidates": []}]})


def load_board(spec):
    """A Board from a shipped name ('jetson-nano') or a path to a JSON file."""
    if spec.endswith(".json") or os.sep in spec:
        path = spec
        if not os.path.isfile(path):
            raise PlatformError("board file %s does not exist" % path)
    else:
        path = os.path.join(BOARDS_DIR, spec + ".json")
        if not os.path.exists(path):
            raise PlatformError("unknown board %r: valid boards are %s, or a path to a board JSON file"
                                % (spec, ", ".join(list_boards() + [GENERIC])))
    try:
        with open(path, "r") as f:
            data = json.load(f)
    except (OSError, IOError, ValueError) as e:
        raise PlatformError("cannot read board file %s: %s" % (path, e))
    _validate(data, path)
    return Board(data, path)


def _validate(data, path):
    if data.get("schema") != BOARD_SCHEMA or data.get("schema_version", 0) > BOARD_VERSION:
        raise PlatformError("board file %s: expected schema %r version <= %d" % (path, BOARD_SCHEMA, BOARD_VERSION))
    for key in ("name", "clusters", "cpufreq"):
        if key not in data:
            raise PlatformError("board file %s: missing %r" % (path, key))
    for c in data["clusters"]:
        for key in ("name", "cpus", "policy_candidates"):
            if key not in c:
                raise PlatformError("board file %s: cluster %r is missing %r" % (path, c.get("name", "?"), key))


def detect_board(sysfs):
    """The shipped board whose device-tree rule matches under `sysfs`, or None."""
    for name in list_boards():
        board = load_board(name)
        if board.matches(sysfs):
            return board
    return None

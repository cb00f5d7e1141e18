"""Board descriptions (runtime/boards/*.json): loading, validation and auto-detection from the device tree."""
import os

from runtime.schema import field, load_json, require_dict

from .errors import PlatformError

BOARDS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "boards")
BOARD_SCHEMA = "dynn-board"
BOARD_VERSION = 1
GENERIC = "generic"
FIX = "correct the board file (see runtime/boards/*.json for the layout)"


class Board(object):
    """One validated board file: plain data plus a few accessors. `generic` is the no-board result."""

    def __init__(self, data, path=None):
        self.data = data
        self.path = path
        self.name = data["name"]
        self.description = data.get("description", "")
        self.clusters = list(data.get("clusters", []))
        self.cpufreq = data.get("cpufreq", {})
        self.gpu = data.get("gpu")
        power = data.get("power") or []
        self.power = power if isinstance(power, list) else [power]  # specs tried in order (kernel variants)
        self.power_mode = data.get("power_mode")
        self.detect = data.get("detect", {})

    @property
    def generic(self):
        return self.name == GENERIC

    def __repr__(self):
        return "Board(%r)" % self.name

    def match(self, sysfs):
        """Why the device tree under `sysfs` names this board ("compatible 'x' in FILE"), or None."""
        wanted = set(s.lower() for s in self.detect.get("compatible", []))  # 3.10 XU3: "Hardkernel,odroid-xu3"
        for rel in self.detect.get("compatible_files", []):
            text = _read_raw(sysfs.path(rel))
            found = [s.strip() for s in (text or "").split("\0") if s.strip().lower() in wanted]
            if found:
                return "compatible %r in %s" % (found[0], rel)
        needles = [n.lower() for n in self.detect.get("model_contains", [])]
        for rel in self.detect.get("model_files", []):
            text = (_read_raw(sysfs.path(rel)) or "").replace("\0", "").strip()
            if any(n in text.lower() for n in needles):
                return "model %r in %s" % (text, rel)
        return None

    def matches(self, sysfs):
        return self.match(sysfs) is not None


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
    data = load_json(path, "fix the board file, or name a built-in board (%s)" % ", ".join(list_boards()),
                     PlatformError)
    validate(data, "board file %s" % path)
    return Board(data, path)


# -- validation: every field the platform reads, once, with one-line errors ------------------------------
def _relative(p):
    """A path relative to the sysfs root that cannot climb out of it (globs allowed)."""
    return bool(p) and not os.path.isabs(p) and ".." not in p.replace("\\", "/").split("/")


def _name(p):
    """A bare file name inside a directory the board file found."""
    return bool(p) and "/" not in p and p not in (".", "..")


REL = "a list of paths relative to the sysfs root, without '..'"
NAME = "a file name without '/' or '..'"


def _get(doc, key, t, where, prefix="", **kw):
    return field(doc, key, t, where, FIX, prefix=prefix, error=PlatformError, **kw)


def _paths(doc, key, where, prefix, default=()):
    return _get(doc, key, [str], where, prefix, default=list(default),
                check=lambda v: all(_relative(p) for p in v), expect=REL)


def _files(doc, key, where, prefix):
    files = _get(doc, key, dict, where, prefix, default={})
    for role, name in files.items():
        _get(files, role, str, where, prefix + key + ".", check=_name, expect=NAME)
    return files


def validate(data, where):
    require_dict(data, where, FIX, error=PlatformError)
    _get(data, "schema", str, where, check=lambda v: v == BOARD_SCHEMA, expect=repr(BOARD_SCHEMA))
    _get(data, "schema_version", int, where, check=lambda v: 1 <= v <= BOARD_VERSION,
         expect="an integer from 1 to %d" % BOARD_VERSION)
    _get(data, "name", str, where, check=lambda v: v and "/" not in v, expect="a board name")
    detect = _get(data, "detect", dict, where, default={})
    for key in ("compatible_files", "model_files"):
        _paths(detect, key, where, "detect.")
    for key in ("compatible", "model_contains"):
        _get(detect, key, [str], where, "detect.", default=[])
    cpufreq = _get(data, "cpufreq", dict, where)
    # the code works in these units (kernel ABI): a board file that says otherwise is wrong, not converted
    _get(cpufreq, "unit", str, where, "cpufreq.", default="kHz", check=lambda v: v == "kHz", expect="'kHz'")
    _files(cpufreq, "files", where, "cpufreq.")
    _get(cpufreq, "writable", [str], where, "cpufreq.", default=[])
    clusters = _get(data, "clusters", [dict], where, check=len, expect="a non-empty list of objects")
    for i, c in enumerate(clusters):
        pre = "clusters[%d]." % i
        _get(c, "name", str, where, pre)
        _get(c, "cpus", [int], where, pre, check=lambda v: all(n >= 0 for n in v),
             expect="a list of CPU numbers")
        _paths(c, "policy_candidates", where, pre)
    gpu = _get(data, "gpu", (dict, type(None)), where, default=None)
    if gpu:
        _get(gpu, "unit", str, where, "gpu.", default="Hz", check=lambda v: v == "Hz", expect="'Hz'")
        _files(gpu, "files", where, "gpu.")
        _paths(gpu, "devfreq_candidates", where, "gpu.")
        _get(gpu, "writable", [str], where, "gpu.", default=[])
        for j, node in enumerate(_get(gpu, "no_devfreq", [dict], where, "gpu.", default=[])):
            _paths(node, "paths", where, "gpu.no_devfreq[%d]." % j)
            _get(node, "reason", str, where, "gpu.no_devfreq[%d]." % j)
    power = data.get("power") or []
    for j, spec in enumerate(power if isinstance(power, list) else [power]):
        _power_spec(spec, where, "power[%d]." % j if isinstance(power, list) else "power.")
    mode = _get(data, "power_mode", (dict, type(None)), where, default=None)
    if mode:
        for key in ("status_file", "conf_file"):
            _get(mode, key, str, where, "power_mode.", check=_relative, expect="a relative path without '..'")
        for key in ("status_pattern", "name_pattern"):
            _get(mode, key, str, where, "power_mode.")


def _power_spec(spec, where, pre):
    require_dict(spec, where, FIX, path=pre.rstrip("."), error=PlatformError)
    _get(spec, "kind", str, where, pre)
    for key in ("power_file", "name_file", "enable_file", "update_period_file"):
        if key in spec:
            _get(spec, key, str, where, pre, check=lambda v: _name(v.replace("{n}", "0")), expect=NAME)
    _get(spec, "power_file", str, where, pre)
    _get(spec, "scale_to_w", float, where, pre, check=lambda v: v > 0, expect="a positive number")
    _paths(spec, "dir_candidates", where, pre)
    for k, s in enumerate(_get(spec, "sensors", [dict], where, pre, check=len, expect="a non-empty list")):
        _get(s, "name", str, where, "%ssensors[%d]." % (pre, k))
        _paths(s, "dir_candidates", where, "%ssensors[%d]." % (pre, k))


def detect_board(sysfs):
    """The shipped board whose device-tree rule matches under `sysfs`, or None."""
    found = detect(sysfs)
    return found[0] if found else None


def detect(sysfs):
    """(board, why) for the shipped board that matches under `sysfs`, or None."""
    for name in list_boards():
        board = load_board(name)
        why = board.match(sysfs)
        if why:
            return board, why
    return None

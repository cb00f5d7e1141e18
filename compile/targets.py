"""The target registry: one JSON file per target in compile/targets/. Adding a board is adding a file."""
import json
import os

from compile.errors import UserError

TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")
ENGINES = ("tflite", "tensorrt")
REQUIRED = ("name", "description", "engine", "emit", "precision", "batch_sizes")


def _read(path):
    try:
        with open(path) as f:
            t = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError("target file %s is unreadable (%s)" % (path, exc))
    missing = [k for k in REQUIRED if k not in t]
    if missing:
        raise UserError("target file %s lacks %s" % (path, ", ".join(missing)))
    if t["engine"] not in ENGINES:
        raise UserError("target file %s: engine %r is not one of %s" % (path, t["engine"], ", ".join(ENGINES)))
    if not t["batch_sizes"] or 1 not in t["batch_sizes"]:
        raise UserError("target file %s: batch_sizes must include 1" % path)
    return t


def list_targets():
    return [_read(os.path.join(TARGET_DIR, f)) for f in sorted(os.listdir(TARGET_DIR))
            if f.endswith(".json") and f != "tflite_op_versions.json"]


def get_target(name):
    names = [t["name"] for t in list_targets()]
    if name not in names:
        raise UserError("unknown target %r; known targets: %s (python build.py --list-targets)"
                        % (name, ", ".join(names)))
    return _read(os.path.join(TARGET_DIR, name + ".json"))


def op_version_table():
    with open(os.path.join(TARGET_DIR, "tflite_op_versions.json")) as f:
        return json.load(f)["ops"]

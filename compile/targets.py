"""The target registry: one JSON file per target in compile/targets/. Adding a board is adding a file."""
import json
import os

from compile.errors import UserError
from compile.validate import check_target
from runtime.schema import load_json

TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")
DATA_FILES = ("tflite_op_versions.json", "tensorrt82_onnx_ops.json")  # tables, not targets


def _read(path):
    return check_target(load_json(path, "fix or restore the target file", UserError), path)  # every field it uses, one line naming file and field


def list_targets():
    return [_read(os.path.join(TARGET_DIR, f)) for f in sorted(os.listdir(TARGET_DIR))
            if f.endswith(".json") and f not in DATA_FILES]


def get_target(name):
    names = [t["name"] for t in list_targets()]
    if name not in names:
        raise UserError("unknown target %r; known targets: %s (python build.py --list-targets)"
                        % (name, ", ".join(names)))
    return _read(os.path.join(TARGET_DIR, name + ".json"))


def op_version_table():
    with open(os.path.join(TARGET_DIR, "tflite_op_versions.json")) as f:
        return json.load(f)["ops"]

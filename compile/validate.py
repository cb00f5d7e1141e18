"""Checks on what the compiler is given, made before any work is done: training flags, batch sizes, the
output directory, target files, the checkpoint sidecar and tensor header, run-directory state and the
training loss. Each failure is one UserError line naming the flag or file, what was expected and what to do.

No torch at import time (it is imported only where a model must be built), so the CLI refuses bad input
in a fraction of a second and before anything is written.
"""
import functools
import math
import os
import re

from compile.errors import UserError
from runtime import schema
from runtime.cli import cpu_count
from runtime.errors import DynnError

SCHEMES = ("grouped", "dense", "static")
MAX_GROUPS = 8
MAX_BATCH = 1024          # a larger batch gains nothing on the boards and is a typo more often than not
INPUT_SIZES = (16, 224)   # the image sizes the architectures are built for (issue 11)
MAX_CLASSES = 1000
CHANNELS = (1, 3)
CHECKPOINT_FORMAT = "dynn-checkpoint"  # the "format" of a sidecar (compile/checkpoint.py writes it)
ENGINES = ("tflite", "tensorrt")
EMITS = ("tflite", "onnx", "group-onnx")
PRECISIONS = ("fp32", "fp16")
TFLITE_PRECISIONS = ("fp32", "int8", "both")  # what the TFLite file carries (issue 13); compile/quantize.py
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(lo, hi):
    return (lambda v: lo <= v <= hi), "an integer from %d to %d" % (lo, hi)


# ---- training flags ------------------------------------------------------------------------------

def _recipe_rules(scheme):
    lo = 1 if scheme == "static" else 2
    return (
        ("groups",) + _int_in(lo, MAX_GROUPS),
        ("epochs", _epochs_ok, "a number of epochs from 1 to 10000, or one per step such as 10,10,15,20"),
        ("batch_size",) + _int_in(1, 65536),
        ("input_size",) + _int_in(*INPUT_SIZES),
        ("seed",) + _int_in(0, 2 ** 31 - 1),
        ("classes",) + _int_in(2, MAX_CLASSES),  # info --archs
        ("threads",) + _int_in(1, cpu_count()),
        ("lr", lambda v: _finite(v) and 0 < v <= 10, "a finite number above 0 and at most 10"),
        ("own_loss_weight", lambda v: _finite(v) and 0 <= v <= 100, "a finite number from 0 to 100"),
        ("distill", lambda v: _finite(v) and 0 <= v <= 100, "a finite number from 0 to 100"),
        ("teacher_weight", lambda v: _finite(v) and 0 <= v <= 100, "a finite number from 0 to 100"),
        ("teacher_temp", lambda v: _finite(v) and 0 < v <= 100, "a finite number above 0 and at most 100"),
        ("teacher_epochs",) + _int_in(1, 10000),
        ("holdout", lambda v: _finite(v) and 0 < v <= 0.5, "a fraction above 0 and at most 0.5"),
        ("label_smoothing", lambda v: _finite(v) and 0 <= v < 1, "a finite number from 0 to below 1"),
        ("weight_decay", lambda v: _finite(v) and 0 <= v <= 1, "a finite number from 0 to 1"),
        ("cutout",) + _int_in(0, INPUT_SIZES[1]),
    )


def parse_epochs(value, groups):
    """--epochs N (every step) or N,N,.. (one per step; a static width-k model gets step k's): an int when
    all steps agree, so recipes of single-number runs stay what they were."""
    try:
        vals = [int(v) for v in value.split(",")] if isinstance(value, str) else \
            (list(value) if isinstance(value, (list, tuple)) else [int(value)])
    except ValueError:
        raise UserError("--epochs must be a number or one number per step such as 10,10,15,20, got %r" % (value,))
    if len(vals) not in (1, groups):
        raise UserError("--epochs has %d values but the model has %d groups; give one number, or one per step"
                        % (len(vals), groups))
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10000 for v in vals):
        raise UserError("--epochs must be whole numbers from 1 to 10000, got %r" % (value,))
    return vals[0] if len(set(vals)) == 1 else vals


def _epochs_ok(value):
    """The values alone; their count against the groups is parse_epochs's, which names both numbers."""
    parts = value.split(",") if isinstance(value, str) else (value if isinstance(value, list) else [value])
    try:
        return all(1 <= int(v) <= 10000 and float(v) == int(v) for v in parts)
    except (TypeError, ValueError):
        return False


def check_recipe(cfg):
    """cfg: command-line flags (train, info) or default_config's dict (None = the default). Raises on the
    first bad one, naming its flag."""
    for key, ok, expect in _recipe_rules(cfg.get("scheme") or "grouped"):
        value = cfg.get(key)
        if value is not None and not ok(value):
            raise UserError("--%s must be %s, got %s" % (key.replace("_", "-"), expect, value))
    return cfg


def check_loss(total, where, run_dir):
    """Stop a run whose loss is no longer finite: training on would only write a NaN checkpoint."""
    if not math.isfinite(total):
        raise UserError("the training loss became %s at %s; no checkpoint was written. Train again with a "
                        "lower --lr or --own-loss-weight and a new --run-dir (or delete %s)" % (total, where, run_dir))


# ---- batch sizes and the output directory --------------------------------------------------------

def parse_batch_sizes(text):
    """--batch-sizes B,B -> sorted list, or None when the flag was not given."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError("--batch-sizes must be comma-separated integers such as 1,32, got %r" % text)
    return check_batch_sizes(values, "--batch-sizes")


def check_batch_sizes(values, where):
    if not (isinstance(values, list) and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise UserError("%s must be a non-empty list of integers, got %r" % (where, values))
    bad = [v for v in values if not 1 <= v <= MAX_BATCH]
    if bad or 1 not in values or len(set(values)) != len(values):
        raise UserError("%s must be distinct batch sizes from 1 to %d including 1, got %s"
                        % (where, MAX_BATCH, ",".join(map(str, values))))
    return sorted(values)


def check_replaceable(out_dir):
    """The bundle directory may be replaced only if it is absent, empty, or holds a bundle this tool wrote."""
    if os.path.islink(out_dir):
        raise UserError("output %s is a symbolic link; pass the directory it points to, or another --out" % out_dir)
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise UserError("output %s exists and is not a directory; choose another --out" % out_dir)
    if not os.listdir(out_dir):
        return
    refuse = ("output %s holds files that are not a dynn bundle (%%s); refusing to replace it: choose another "
              "--out, or move those files away" % out_dir)
    if not os.path.isfile(os.path.join(out_dir, "manifest.json")):
        raise UserError(refuse % "no manifest.json")
    from runtime.bundle import SCHEMA_VERSION, read_manifest
    try:
        man = read_manifest(out_dir)
    except DynnError as exc:
        raise UserError(refuse % exc)
    if man.get("schema_version") not in range(1, SCHEMA_VERSION + 1):
        raise UserError(refuse % ("manifest schema_version %r" % man.get("schema_version")))


def check_checkpoint_out(out_dir, scheme, groups):
    """Training writes model.safetensors, model.json and training.md into out_dir (static: out_dir/width-k/);
    it may overwrite them only when they are a checkpoint this tool wrote, never someone's own model.json."""
    dirs = [os.path.join(out_dir, "width-%d" % k) for k in range(1, groups + 1)] if scheme == "static" else [out_dir]
    for d in dirs:
        present = [n for n in ("model.safetensors", "model.json", "training.md") if os.path.lexists(os.path.join(d, n))]
        if present and not _our_checkpoint(os.path.join(d, "model.json")):
            raise UserError("--out %s already holds %s that is not a checkpoint this tool wrote; refusing to overwrite "
                            "it: choose another --out" % (d, ", ".join(present)))


def _our_checkpoint(side):
    try:
        doc = schema.load_json(side, "", UserError)
    except UserError:
        return False
    return isinstance(doc, dict) and doc.get("format") == CHECKPOINT_FORMAT


# ---- target files ----------------------------------------------------------------------------------

def check_target(t, path):
    fix = "fix the file (the other files in %s show every field)" % os.path.dirname(path)
    f = functools.partial(schema.field, where=path, fix=fix, error=UserError)
    schema.require_dict(t, path, fix, error=UserError)
    stem = os.path.splitext(os.path.basename(path))[0]
    f(t, "name", str, check=lambda v: v == stem, expect="the file's name without .json (%r)" % stem)
    f(t, "description", str, check=bool, expect="a non-empty string")
    f(t, "engine", str, check=lambda v: v in ENGINES, expect="one of " + ", ".join(ENGINES))
    f(t, "emit", [str], check=lambda v: v and set(v) <= set(EMITS), expect="a list of " + ", ".join(EMITS))
    f(t, "precision", str, check=lambda v: v in PRECISIONS, expect="one of " + ", ".join(PRECISIONS))
    t["tflite_precision"] = f(t, "tflite_precision", str, default="fp32", check=lambda v: v in TFLITE_PRECISIONS,
      expect="one of " + ", ".join(TFLITE_PRECISIONS))
    f(t, "board", (str, type(None)), default=None)
    f(t, "tflite_min_runtime", str, default=None, check=_version, expect="a version such as \"2.7.0\"")
    check_batch_sizes(f(t, "batch_sizes", list), "%s: batch_sizes" % path)
    return t


def _version(text):
    from packaging.version import Version
    return Version(text) is not None


# ---- checkpoint sidecar and tensor header -----------------------------------------------------------

def check_sidecar(meta, side):
    """The fields that build the model and the bundle, with bounds, so that a bad sidecar is refused before
    any model is built (a sidecar saying groups: 10000000 used to exhaust memory)."""
    fix = "the sidecar is damaged or not from this tool; restore it or train again (python build.py train)"
    f = functools.partial(schema.field, where=side, fix=fix, error=UserError)
    schema.require_dict(meta, side, fix, error=UserError)
    scheme = f(meta, "scheme", str, check=lambda v: v in SCHEMES, expect="one of " + ", ".join(SCHEMES))
    f(meta, "arch", str, check=bool, expect="a non-empty string")
    ok, expect = _int_in(1 if scheme == "static" else 2, MAX_GROUPS)
    groups = f(meta, "groups", int, check=ok, expect=expect)
    classes = f(meta, "num_classes", int, check=_int_in(2, MAX_CLASSES)[0], expect=_int_in(2, MAX_CLASSES)[1])
    f(meta, "class_names", ([str], type(None)), default=None, check=lambda v: v is None or len(v) == classes,
      expect="null or a list of %d names" % classes)
    f(meta, "level_scale", [float], check=lambda v: len(v) == groups and all(_finite(x) and x > 0 for x in v),
      expect="a list of %d positive numbers" % groups)
    f(meta, "group_widths", [float], default=None, check=lambda v: len(v) == groups and all(
        _finite(x) and 0.1 <= x <= 8 for x in v), expect="a list of %d channel multipliers from 0.1 to 8" % groups)
    f(meta, "level_weights", [list], default=None, check=lambda v: len(v) == groups and all(
        len(r) == k and all(_finite(x) for x in r) for k, r in enumerate(v, 1)),
      expect="%d lists, list k holding the k finite weights of level k" % groups)
    heads = f(meta, "level_heads", (dict, type(None)), default=None)
    if heads is not None:
        if scheme != "grouped":
            raise UserError("%s: level_heads needs scheme grouped, the sidecar says %s; %s" % (side, scheme, fix))
        f(heads, "fits", [dict], prefix="level_heads.", check=lambda v: len(v) == groups,
          expect="a list of %d records, one per level" % groups)
    f(meta, "arch_spec", dict, default=None)  # its blocks are checked where the spec is read (compile/arch)
    inp = f(meta, "input", dict)
    f(inp, "size", int, prefix="input.", check=_int_in(*INPUT_SIZES)[0], expect=_int_in(*INPUT_SIZES)[1])
    chans = f(inp, "channels", int, prefix="input.", check=lambda v: v in CHANNELS, expect="1 or 3")
    for key, low in (("mean", -math.inf), ("std", 0)):
        f(inp, key, [float], prefix="input.", check=lambda v: len(v) == chans and all(_finite(x) and x > low for x in v),
          expect="a list of %d finite numbers%s" % (chans, " above 0" if low == 0 else ""))
    levels = f(meta, "levels", [dict], check=lambda v: 1 <= len(v) <= groups, expect="a list of 1 to %d levels" % groups)
    for i, lv in enumerate(levels):
        p = "levels[%d]." % i
        f(lv, "level", int, prefix=p, check=lambda v: 1 <= v <= groups, expect="an integer from 1 to %d" % groups)
        f(lv, "params", int, prefix=p, check=lambda v: v >= 0, expect="a count (integer >= 0)")
        f(lv, "macs", float, prefix=p, check=lambda v: _finite(v) and v >= 0, expect="a number >= 0")
        f(lv, "test_accuracy", float, prefix=p, check=lambda v: 0 <= v <= 1, expect="a fraction from 0 to 1")
    tensors = f(meta, "tensors", dict)
    f(tensors, "sha256", str, prefix="tensors.", check=_HEX64.match, expect="64 lowercase hex digits")
    return meta


def check_tensor_header(path, meta, make_model):
    """Names and shapes in the safetensors header (no tensor data is read) against the model the sidecar
    describes, built on torch's meta device (no memory is allocated for it)."""
    import torch
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError("%s is not a readable safetensors file (%s)" % (path, str(exc).splitlines()[0]))
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in make_model().state_dict().items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise UserError("%s does not fit the model its sidecar describes (%s groups of %s): missing %s, unexpected %s"
                        % (path, meta["groups"], meta["arch"], missing[:3], extra[:3]))
    for k in sorted(want):
        if want[k] != have[k]:
            raise UserError("%s: tensor %s has shape %s, the model its sidecar describes needs %s"
                            % (path, k, have[k], want[k]))


# ---- run-directory state ------------------------------------------------------------------------------

def _corrupt(path, run_dir, why):
    return UserError("%s is corrupt (%s); delete the run directory %s to start over, or pass another --run-dir"
                     % (path, why, run_dir))


def read_run_state(path, run_dir):
    """state.json of a run directory, checked for what resuming uses."""
    fix = "delete the run directory %s to start over, or pass another --run-dir" % run_dir
    st = schema.load_json(path, fix, UserError)
    f = functools.partial(schema.field, where=path, fix=fix, error=UserError)
    schema.require_dict(st, path, fix, error=UserError)
    f(st, "recipe", dict)
    f(st, "data", str)
    f(st, "stage", int, check=lambda v: 1 <= v <= MAX_GROUPS + 1, expect=_int_in(1, MAX_GROUPS + 1)[1])
    f(st, "epoch", int, check=lambda v: v >= 0, expect="an integer >= 0")
    f(st, "history", list)
    f(st, "stage_seconds", dict)
    f(st, "done", [int])
    return st


def read_run_tensors(path, run_dir):
    """state.safetensors of a run directory (weights and momentum of the last finished epoch)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, run_dir, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def restore_run_weights(model, tensors, path, run_dir):
    """Load the run directory's weights into `model`; tensors that do not fit it (names or shapes, weights or
    momentum) mean the state file is not this run's."""
    names = dict(model.named_parameters())
    for k, v in tensors.items():
        if k.startswith("momentum.") and (k[9:] not in names or tuple(names[k[9:]].shape) != tuple(v.shape)):
            raise _corrupt(path, run_dir, "momentum %s does not fit the model" % k[9:])
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:  # missing, unexpected or mis-shaped weights
        raise _corrupt(path, run_dir, " ".join(str(exc).split())[:160])

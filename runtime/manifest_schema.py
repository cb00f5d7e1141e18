"""The fields of manifest.json the runtime relies on, checked once when runtime.bundle.read_manifest reads it.

Every failure is one line naming the file, the field, what was expected and what to do (runtime/schema.py).
Paths (files, engines.*.file, the golden file) must be canonical relative paths that stay inside the bundle
after symlinks are resolved, and every engine and golden file must be listed in `files` with its sha256, so
that nothing the runtime loads escapes verify_files.
"""
import math
import os
import posixpath
import re

from runtime.schema import _MISSING, fail, field, require_dict

ENGINES = ("tflite", "onnx", "tensorrt")
PRECISIONS = ("fp32", "int8")  # of a TFLite engine's signatures (compile/quantize.py)
FIX = "rebuild the bundle (python build.py --target NAME) and deploy it again"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Generous bounds that still stop absurd values before they allocate anything (issue 10: a batch size of 0
# looped forever; a huge one would allocate the batch).
MAX_BATCH, MAX_GROUPS, MAX_CLASSES, MAX_SIDE = 4096, 256, 100000, 4096


def _finite(v, low=None):
    return math.isfinite(v) and (low is None or v >= low)


class _Checker(object):
    def __init__(self, path, bundle_dir):
        self.where, self.bundle_dir = path, bundle_dir
        self.root = os.path.realpath(bundle_dir)
        self.int8 = False  # set when a TFLite engine carries int8 signatures (then golden.int8 is required)
        self.onnx_int8 = False  # set when the ONNX engine carries model_int8.onnx (then golden.onnx_int8 is)

    def section(self, doc, key, default=None, optional=False):
        if optional and key not in doc:
            return default
        return field(doc, key, dict, self.where, FIX, expect="an object")

    def f(self, doc, key, t, prefix, **kw):
        return field(doc, key, t, self.where, FIX, prefix=prefix, **kw)

    def rel_path(self, doc, key, prefix, value=None):
        """A path inside the bundle: relative, canonical, no '..', and inside it after realpath."""
        rel = self.f(doc, key, str, prefix) if value is None else value
        canonical = (rel and "\\" not in rel and "\0" not in rel and not rel.startswith("/")
                     and posixpath.normpath(rel) == rel and ".." not in rel.split("/"))
        full = os.path.realpath(os.path.join(self.root, rel)) if canonical else ""
        if not canonical or not full.startswith(self.root + os.sep):
            fail(self.where, prefix + key, "a relative path inside the bundle (no '..', no leading '/', no "
                 "symlink out of it)", rel, FIX)
        return rel

    def batch_sizes(self, doc, prefix):
        return sorted(self.f(doc, "batch_sizes", [int], prefix,
                             check=lambda v: v and 1 in v and len(set(v)) == len(v) and min(v) >= 1
                             and max(v) <= MAX_BATCH,
                             expect="a list of distinct batch sizes in 1..%d that includes 1" % MAX_BATCH))


def check_manifest(man, path, bundle_dir):
    """Raise RuntimeUserError (one line) unless `man` is a manifest this runtime can run safely."""
    c = _Checker(path, bundle_dir)
    require_dict(man, path, FIX)
    target = c.section(man, "target")
    c.f(target, "name", str, "target.", check=len, expect="a non-empty string")
    c.f(target, "engine", str, "target.", check=lambda v: v in ENGINES, expect="one of %s" % ", ".join(ENGINES))
    c.f(target, "board", (str, type(None)), "target.", default=None)
    c.f(target, "description", str, "target.", default="")

    model = c.section(man, "model")
    groups = c.f(model, "groups", int, "model.", check=lambda v: 1 <= v <= MAX_GROUPS,
                 expect="an integer in 1..%d" % MAX_GROUPS)
    for key in ("arch", "scheme"):
        c.f(model, key, str, "model.")
    levels = c.f(man, "levels", [dict], "", check=lambda v: 1 <= len(v) <= groups,
                 expect="a list of 1..%d level objects (model.groups)" % groups)
    for i, lv in enumerate(levels):
        p = "levels[%d]." % i
        c.f(lv, "level", int, p, check=lambda v: v == i + 1, expect="%d (levels are 1, 2, ... in order)" % (i + 1))
        c.f(lv, "params", int, p, check=lambda v: v >= 0, expect="a non-negative integer")
        c.f(lv, "macs", float, p, check=lambda v: _finite(v, 0), expect="a non-negative number")
        for key in ("test_accuracy", "test_accuracy_int8"):
            c.f(lv, key, (float, type(None)), p, default=None,
                check=lambda v: v is None or 0 <= v <= 1, expect="a number in 0..1 or null")
    n = len(levels)
    c.f(model, "level_scale", [float], "model.", check=lambda v: len(v) == n and all(_finite(s, 0) for s in v),
        expect="a list of %d finite non-negative numbers (one per level)" % n)
    c.f(model, "level_weights", [[float]], "model.", default=None,
        check=lambda v: len(v) == n and all(len(w) == k + 1 and all(_finite(x) for x in w) for k, w in enumerate(v)),
        expect="a list of %d lists, entry k-1 holding the k finite weights of level k" % n)
    classes = _check_io(c, man, model)
    heads = c.f(model, "level_heads", (dict, type(None)), "model.", default=None)
    if heads is not None:  # schema 3: group g outputs its contributions to levels g..G (docs/bundle.md)
        c.f(heads, "classes", int, "model.level_heads.", check=lambda v: v == classes,
            expect="%d (output.shape[1])" % classes)
        c.f(heads, "group_outputs", [int], "model.level_heads.",
            check=lambda v: v == [(groups - g) * classes for g in range(groups)],
            expect="%s (group g: (G-g+1) x classes columns)" % [(groups - g) * classes for g in range(groups)])
    c.f(model, "class_names", ([str], type(None)), "model.", default=None,
        check=lambda v: v is None or len(v) == classes, expect="null or a list of %d names" % classes)
    listed = _check_files(c, man)
    _check_engines(c, man, groups, listed)
    golden = c.section(man, "golden", optional=True)
    if golden is not None:
        _need_listed(c, listed, c.rel_path(golden, "file", "golden."), "golden.file")
        c.f(golden, "count", int, "golden.", check=lambda v: v >= 1, expect="a positive integer")
        for key in ("atol", "rtol", "atol_fp16"):
            c.f(golden, key, float, "golden.", check=lambda v: _finite(v, 0), expect="a finite non-negative number",
                **({"default": None} if key == "atol_fp16" else {}))
        if c.int8:  # an int8 engine is verified against its own golden logits
            _check_int8_golden(c, golden, n)
        if c.onnx_int8:
            _check_int8_golden(c, golden, n, "onnx_int8")
    return man


def _check_io(c, man, model):
    inp = c.section(man, "input")
    shape = c.f(inp, "shape", list, "input.",
                check=lambda v: len(v) == 4 and v[0] is None and all(isinstance(d, int) and not isinstance(d, bool)
                                                                     and 1 <= d <= MAX_SIDE for d in v[1:]),
                expect="[null, C, H, W] with C, H, W integers in 1..%d" % MAX_SIDE)
    channels = shape[1]
    c.f(inp, "name", str, "input.", default="input")
    norm = c.section(inp, "normalisation")
    c.f(norm, "scale", float, "input.normalisation.", check=lambda v: _finite(v) and v > 0,
        expect="a positive finite number")
    c.f(norm, "mean", [float], "input.normalisation.", check=lambda v: len(v) == channels and all(map(_finite, v)),
        expect="a list of %d finite numbers (one per channel)" % channels)
    c.f(norm, "std", [float], "input.normalisation.",
        check=lambda v: len(v) == channels and all(_finite(s) and s > 0 for s in v),
        expect="a list of %d positive numbers (one per channel)" % channels)
    out = c.section(man, "output")
    classes = c.f(model, "num_classes", int, "model.", check=lambda v: 2 <= v <= MAX_CLASSES,
                  expect="an integer in 2..%d" % MAX_CLASSES)
    c.f(out, "shape", list, "output.", check=lambda v: v == [None, classes],
        expect="[null, %d] (model.num_classes)" % classes)
    c.f(out, "name", str, "output.", default="logits")
    return classes


def _check_files(c, man):
    files = c.section(man, "files")
    for rel in sorted(files):
        p = "files[%r]." % rel
        c.rel_path(None, "[%r]" % rel, "files", value=rel)
        info = c.f(files, rel, dict, "files.")
        c.f(info, "size", int, p, check=lambda v: v >= 0, expect="a non-negative integer")
        c.f(info, "sha256", str, p, check=_SHA256.match, expect="64 lowercase hex digits")
    return files


def _need_listed(c, listed, rel, name):
    if rel not in listed:
        fail(c.where, name, "a file listed in `files` with its sha256", rel, FIX)


def _check_engines(c, man, groups, listed):
    engines = c.section(man, "engines")
    if not any(name in engines for name in ENGINES):
        fail(c.where, "engines", "an object with at least one of %s" % ", ".join(ENGINES), engines, FIX)
    for name in ENGINES:
        eng = c.section(engines, name, optional=True)
        if eng is None:
            continue
        p = "engines.%s." % name
        files = [("file", c.rel_path(eng, "file", p))] if name != "tensorrt" else _trt_files(c, eng, p, groups)
        for key, rel in files:
            _need_listed(c, listed, rel, p + key)
        if name == "onnx":
            for key in ("input", "output", "level_input"):
                c.f(eng, key, str, p)
            precs = c.f(eng, "precisions", [str], p, default=["fp32"], check=lambda v: v in (["fp32"], ["fp32", "int8"]),
                        expect='["fp32"] or ["fp32", "int8"]')
            if "int8" in precs:  # the int8 peer (compile/quantize_onnx.py), same interface as the float file
                q = c.f(eng, "int8", dict, p)
                _need_listed(c, listed, c.rel_path(q, "file", p + "int8."), p + "int8.file")
                c.f(q, "test_accuracy", [float], p + "int8.", check=lambda v: len(v) == groups and all(
                    0 <= x <= 1 for x in v), expect="a list of %d accuracies in 0..1 (one per level)" % groups)
                c.onnx_int8 = True
        elif name == "tflite":
            if "int8" in _check_signatures(c, eng, p, groups):
                c.int8 = True
        else:
            c.batch_sizes(eng, p)


def _trt_files(c, eng, p, groups):
    """TensorRT: the ONNX files it builds from are shipped and listed; plan and record are made on the board."""
    for key in ("plan", "record"):
        if key in eng:
            c.rel_path(eng, key, p)
    out = [("onnx", c.rel_path(eng, "onnx", p))]
    group_onnx = c.f(eng, "group_onnx", [str], p, default=[],
                     check=lambda v: len(v) in (0, groups), expect="a list of %d paths (one per group)" % groups)
    for i, rel in enumerate(group_onnx):
        out.append(("group_onnx[%d]" % i, c.rel_path(None, "group_onnx[%d]" % i, p, value=rel)))
    return out


def _check_signatures(c, eng, p, groups):
    sizes = c.batch_sizes(eng, p)
    precs = c.f(eng, "precisions", [str], p, default=["fp32"],
                check=lambda v: v and len(set(v)) == len(v) and set(v) <= set(PRECISIONS),
                expect="a non-empty list of distinct precisions from %s" % ", ".join(PRECISIONS))
    sigs = c.f(eng, "signatures", dict, p)
    want = {}
    for prec in precs:  # float signatures keep the old names and records; int8 ones say so (issue 13)
        for g in range(1, groups + 1):
            for b in sizes:
                want["group%d_b%d" % (g, b) + ("" if prec == "fp32" else "_" + prec)] = dict(
                    {"group": g, "batch": b}, **({} if prec == "fp32" else {"precision": prec}))
    grids = ("input_quantization", "output_quantization")
    for name in sorted(set(want) | set(sigs)):
        got = sigs.get(name)
        if want.get(name) is None or not isinstance(got, dict) or \
                dict((k, got.get(k)) for k in want[name]) != want[name] or \
                set(got) - set(want[name]) - (set(grids) if "precision" in want[name] else set()):
            fail(c.where, p + "signatures." + name, "{group: G, batch: B[, precision: P]} for every group 1..%d, "
                 "batch size %s and precision %s (and no other signature)" % (groups, sizes, precs),
                 got if name in sigs else _MISSING, FIX)
        if "precision" in want[name]:
            for key in grids:  # what the runtime quantizes the input and dequantizes the output with
                c.f(got, key, list, p + "signatures.%s." % name, check=_grid, expect="[scale > 0, zero point -128..127]")
    return precs


def _grid(v):
    return (len(v) == 2 and isinstance(v[0], float) and _finite(v[0], 0) and v[0] > 0
            and isinstance(v[1], int) and not isinstance(v[1], bool) and -128 <= v[1] <= 127)


def _check_int8_golden(c, golden, n, key="int8"):
    q = c.f(golden, key, dict, "golden.")
    p = "golden.%s." % key
    c.f(q, "keys", str, p, check=lambda v: "{k}" in v, expect="a key pattern holding {k}")
    c.f(q, "atol", [float], p, check=lambda v: len(v) == n and all(_finite(x, 0) for x in v),
        expect="a list of %d finite non-negative tolerances (one per level)" % n)

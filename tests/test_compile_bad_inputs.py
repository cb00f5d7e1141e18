"""Bad input on the host side, generated over every flag of build.py (train, info, --target build) and every
field of the checkpoint sidecar and of a target file: each case runs build.py in its own subprocess under a
timeout, from an empty working directory, and must exit with one line "error: ...", no traceback, and leave
every file it was given, and the working directory, exactly as they were.

Only reject-before-work cases: nothing here trains or converts. The cases run a few at a time (a pool of
subprocesses started once for the selected cases) to keep the suite fast on two cores.
"""
import collections
import concurrent.futures
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import ROOT, make_cifar_like

BUILD = os.path.join(ROOT, "build.py")
CKPT = os.path.join(ROOT, "artifacts", "default")
TIMEOUT = 120
# Run build.main with the target registry pointed at a test folder (argv: folder, then build.py's flags).
WITH_TARGETS = ("import sys; sys.path.insert(0, %r); import compile.targets as t; t.TARGET_DIR = sys.argv[1]; "
                "import build; sys.exit(build.main(sys.argv[2:]))" % ROOT)

Case = collections.namedtuple("Case", "id setup code words")  # setup(tmp) -> argv after the interpreter


def _edit(path, mutate=None, raw=None):
    """Change the JSON file at path by mutate(doc), or replace its text by raw."""
    if mutate is not None:
        with open(path) as f:
            doc = json.load(f)
        mutate(doc)
        raw = json.dumps(doc)
    if raw is not None:
        with open(path, "w") as f:
            f.write(raw)


def _ckpt(tmp, mutate=None, raw=None):
    """A copy of the shipped checkpoint in tmp/ck, its sidecar edited."""
    d = os.path.join(tmp, "ck")
    shutil.copytree(CKPT, d, ignore=shutil.ignore_patterns("*.md"))
    _edit(os.path.join(d, "model.json"), mutate, raw)
    return os.path.join(d, "model.safetensors")


def _build(tmp, *flags, **kw):
    ck = kw.get("ckpt") or _ckpt(tmp)
    return [BUILD, "--target", kw.get("target", "host-cpu"), "--checkpoint", ck,
            "--out", kw.get("out") or os.path.join(tmp, "out")] + list(flags)


def _drop(path):
    def mutate(doc):
        *parents, last = path
        for p in parents:
            doc = doc[p]
        del doc[last]
    return mutate


def _put(path, value):
    def mutate(doc):
        *parents, last = path
        for p in parents:
            doc = doc[p]
        doc[last] = value
    return mutate


def _name(path):
    return "".join("[%d]" % p if isinstance(p, int) else ("." + p if i else p) for i, p in enumerate(path))


# ---- train flags: each checked before torch is imported or anything is written ------------------------
TRAIN_BAD = {
    "--groups": ["0", "1", "9", "100", "-3"], "--epochs": ["0", "-1", "10001"], "--batch-size": ["0", "-1", "65537"],
    "--lr": ["nan", "inf", "-inf", "-0.1", "0", "11"], "--own-loss-weight": ["-1", "nan", "inf", "101"],
    "--input-size": ["0", "-32", "8", "225", "100000"], "--seed": ["-1", "2147483648"],
    "--threads": ["-1", "0", "100000"], "--distill": ["-1", "nan", "101"],
    "--label-smoothing": ["-0.1", "1", "nan"], "--weight-decay": ["-1", "2", "inf"], "--cutout": ["-1", "225"],
}
TRAIN_BAD["--epochs"] += ["1.5", "10,0", "a,b", "10,10", "10,,10"]
TRAIN_UNPARSABLE = {"--groups": "x", "--distill": "x", "--cutout": "1.5", "--label-smoothing": "x", "--batch-size": "", "--lr": "fast", "--own-loss-weight": "w",
                    "--input-size": "32px", "--seed": "s", "--threads": "all", "--scheme": "sparse",
                    "--dataset": "imagenet"}


def _train(tmp, *flags):
    return [BUILD, "train", "--data", os.path.join(tmp, "no-data")] + list(flags)


def train_cases():
    for flag, values in sorted(TRAIN_BAD.items()):
        for v in values:
            yield Case("train%s=%s" % (flag, v), lambda tmp, f=flag, v=v: _train(tmp, f + "=" + v), 1, [flag])
    yield Case("train--scheme=static--groups=0", lambda tmp: _train(tmp, "--scheme", "static", "--groups", "0"), 1,
               ["--groups", "from 1 to 8"])
    for flag, v in sorted(TRAIN_UNPARSABLE.items()):
        yield Case("train%s=%r(unparsable)" % (flag, v), lambda tmp, f=flag, v=v: _train(tmp, f + "=" + v), 2, [flag])
    yield Case("train-without-data", lambda tmp: [BUILD, "train"], 2, ["--data"])
    for name, files in (("foreign-model.json", {"model.json": '{"model": "mine"}', "weights.bin": "x"}),
                        ("model.json-a-list", {"model.json": "[]"}), ("training.md-only", {"training.md": "# notes"})):
        yield Case("train--out=" + name, lambda tmp, fs=files: _train(tmp, "--out", _dir_with(tmp, fs)), 1,
                   ["refusing to overwrite"])
    yield Case("train--out=static-width-dir-foreign", lambda tmp: _train(
        tmp, "--scheme", "static", "--groups", "2", "--out", _static_out(tmp)), 1, ["width-2", "refusing to overwrite"])
    for v in ("1,2", "0,1,1,1", "a", "1,1,1,100"):
        yield Case("train--group-widths=%s" % v, lambda tmp, v=v: _train(tmp, "--group-widths=" + v), 1,
                   ["--group-widths"])
    yield Case("train--only-without-static", lambda tmp: _train(tmp, "--only", "1"), 1, ["--only", "static"])
    yield Case("train--only=5-of-4", lambda tmp: _train(tmp, "--scheme", "static", "--only", "5"), 1, ["--only"])
    for v in ("tpu", "cuda:x", "cuda"):  # this machine has no GPU: cuda is refused too, in one line
        yield Case("train--device=%s" % v, lambda tmp, v=v: _train(tmp, "--device", v), 1, ["--device"])
    yield Case("train--arch=missing.json", lambda tmp: _train(tmp, "--arch", os.path.join(tmp, "x.json")), 1,
               ["x.json"])
    yield Case("train--channels=2", lambda tmp: _train(tmp, "--channels", "2"), 2, ["--channels"])
    for flag, v in (("--input-size", "0"), ("--input-size", "100000"), ("--classes", "1"), ("--classes", "100000")):
        yield Case("info--archs%s=%s" % (flag, v), lambda tmp, f=flag, v=v: [BUILD, "info", "--archs", f, v], 1, [flag])
    yield Case("train-data-missing", lambda tmp: _train(tmp), 1, ["does not exist"])


# ---- build flags -----------------------------------------------------------------------------------------
BATCH_BAD = ["0,1", "2,32", "1,1", "1,2000", "-1,1", "a,b", "", "1,,2", "1.5", "1;32"]


def _dir_with(tmp, files):
    d = os.path.join(tmp, "existing")
    os.makedirs(d)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


FOREIGN_OUT = {  # what --out may hold that is not ours: it must be refused, every file kept
    "browser-extension": {"manifest.json": '{"manifest_version": 3, "name": "ext"}', "background.js": "x"},
    "bundle-schema-v99": {"manifest.json": '{"schema": "dynn-bundle", "schema_version": 99}', "model.tflite": "x"},
    "manifest-not-json": {"manifest.json": "{", "notes.txt": "mine"},
    "manifest-a-list": {"manifest.json": "[1, 2]", "notes.txt": "mine"},
    "non-empty-no-manifest": {"thesis.tex": "years of work"},
}


def _static_out(tmp):
    d = _dir_with(tmp, {})
    os.makedirs(os.path.join(d, "width-2"))
    with open(os.path.join(d, "width-2", "model.safetensors"), "w") as f:
        f.write("someone's tensors")
    return d


def build_cases():
    for v in BATCH_BAD:
        yield Case("build--batch-sizes=%r" % v, lambda tmp, v=v: _build(tmp, "--batch-sizes=" + v), 1,
                   ["--batch-sizes"])
    for name in ("nope", "../targets/host-cpu", ""):
        yield Case("build--target=%r" % name, lambda tmp, n=name: _build(tmp, target=n), 1, ["unknown target"])
    for name, files in sorted(FOREIGN_OUT.items()):
        yield Case("build--out=" + name, lambda tmp, fs=files: _build(tmp, out=_dir_with(tmp, fs)), 1,
                   ["refusing to replace it"])

    def out_file(tmp):
        p = os.path.join(tmp, "a-file")
        open(p, "w").close()
        return _build(tmp, out=p)

    def out_link(tmp):
        os.symlink(_dir_with(tmp, {}), os.path.join(tmp, "link"))
        return _build(tmp, out=os.path.join(tmp, "link"))

    yield Case("build--out=a-file", out_file, 1, ["not a directory"])
    yield Case("build--out=symlink", out_link, 1, ["symbolic link"])
    yield Case("build--checkpoint=missing", lambda tmp: _build(tmp, ckpt=os.path.join(tmp, "none.safetensors")), 1,
               ["none.json"])
    yield Case("build--data=missing", lambda tmp: _build(tmp, "--data", os.path.join(tmp, "none")), 1,
               [os.sep + "none"])
    yield Case("build--precision=int8-without-data", lambda tmp: _build(tmp, "--precision", "int8"), 1,
               ["--data", "--precision fp32"])
    yield Case("build--precision=int4", lambda tmp: _build(tmp, "--precision", "int4"), 2, ["--precision"])
    yield Case("build-without-target-or-command", lambda tmp: [BUILD, "--checkpoint", _ckpt(tmp)], 2, [])
    yield Case("info-missing", lambda tmp: [BUILD, "info", os.path.join(tmp, "none.safetensors")], 1,
               ["does not exist"])
    yield Case("info-dir-without-checkpoint", lambda tmp: [BUILD, "info", tmp], 1, ["does not exist"])


# ---- target file fields (through build.py --target, registry pointed at a copy) -------------------------
TARGET_FIELDS = {"name": 1, "description": [], "engine": 3, "emit": "tflite", "precision": 16, "batch_sizes": "1,32"}
TARGET_VALUES = [("engine", "cuda"), ("emit", ["exe"]), ("emit", []), ("precision", "int4"), ("batch_sizes", [0, 1]),
                 ("batch_sizes", [2, 32]), ("batch_sizes", [1, 1]), ("batch_sizes", [1, 5000]), ("batch_sizes", []),
                 ("tflite_min_runtime", "two"), ("tflite_min_runtime", 2), ("name", "other"), ("board", 5)]


def _targets(tmp, mutate=None, raw=None):
    d = os.path.join(tmp, "targets")
    shutil.copytree(os.path.join(ROOT, "compile", "targets"), d)
    _edit(os.path.join(d, "host-cpu.json"), mutate, raw)
    return ["-c", WITH_TARGETS, d] + _build(tmp)[1:]


def target_cases():
    for key, wrong in sorted(TARGET_FIELDS.items()):
        yield Case("target-%s-missing" % key, lambda tmp, k=key: _targets(tmp, _drop([k])), 1, ["host-cpu.json", key])
        yield Case("target-%s=%r" % (key, wrong), lambda tmp, k=key, w=wrong: _targets(tmp, _put([k], w)), 1,
                   ["host-cpu.json", key])
    for key, bad in TARGET_VALUES:
        yield Case("target-%s=%r" % (key, bad), lambda tmp, k=key, b=bad: _targets(tmp, _put([k], b)), 1,
                   ["host-cpu.json", key])
    for name, raw in (("not-json", "{"), ("a-list", "[]"), ("empty", "")):
        yield Case("target-" + name, lambda tmp, r=raw: _targets(tmp, raw=r), 1, ["host-cpu.json"])
    yield Case("target-broken-in---list-targets", lambda tmp: _targets(tmp, _drop(["engine"]))[:3] + ["--list-targets"],
               1, ["host-cpu.json", "engine"])


# ---- checkpoint sidecar fields --------------------------------------------------------------------------
SIDECAR_FIELDS = [  # (path, a value of the wrong type); every one is also deleted in turn
    (["scheme"], 1), (["arch"], 7), (["groups"], "4"), (["num_classes"], 10.5), (["level_scale"], "mean"),
    (["input"], [32]), (["input", "size"], "32"), (["input", "channels"], True), (["input", "mean"], 0.5),
    (["input", "std"], {"r": 1}), (["levels"], {}), (["levels", 0, "level"], "1"), (["levels", 0, "params"], 1.5),
    (["levels", 0, "macs"], None), (["levels", 0, "test_accuracy"], "80%"), (["tensors"], "model.safetensors"),
    (["tensors", "sha256"], 12), (["class_names"], "airplane"),
]
OPTIONAL = (["class_names"],)
SIDECAR_VALUES = [  # in range for the JSON type, out of range for a model
    (["scheme"], "sparse"), (["arch"], ""), (["groups"], 10000000), (["groups"], 0), (["groups"], -4),
    (["num_classes"], 1), (["num_classes"], 10 ** 9), (["input", "size"], 10 ** 6), (["input", "size"], 0),
    (["input", "channels"], 4), (["input", "std"], [0.2, 0.0, 0.2]), (["input", "mean"], [0.5, 0.5]),
    (["level_scale"], [1.0, 0.5, float("nan"), 0.25]), (["levels", 0, "level"], 9),
    (["levels", 0, "test_accuracy"], 80.3), (["tensors", "sha256"], "abc"), (["class_names"], ["cat"]),
    (["format"], "keras"), (["format_version"], 2), (["group_widths"], [1.0, 1.0]), (["group_widths"], [1, 1, 1, 100]),
    (["group_widths"], "1,1,1,1"), (["level_weights"], [[1.0]]), (["level_weights"], "mean"),
    (["level_weights"], [[1], [0.5, 0.5], [1, 1, 1], [1, 1, 1, float("nan")]]), (["arch_spec"], "resnet"),
]


def _header_mismatch(meta):  # a self-consistent sidecar for another model than the tensors hold
    meta.update(groups=8, level_scale=[1.0 / k for k in range(1, 9)], group_widths=[1.0] * 8,
                level_weights=[[1.0 / k] * k for k in range(1, 9)])
    meta.pop("level_heads", None)


def sidecar_cases():
    for path, wrong in SIDECAR_FIELDS:
        words = ["model.json", _name(path)]
        if path not in OPTIONAL:
            yield Case("sidecar-%s-missing" % _name(path), lambda tmp, p=path: _build(tmp, ckpt=_ckpt(tmp, _drop(p))),
                       1, words)
        yield Case("sidecar-%s=%r" % (_name(path), wrong),
                   lambda tmp, p=path, w=wrong: _build(tmp, ckpt=_ckpt(tmp, _put(p, w))), 1, words)
    for path, bad in SIDECAR_VALUES:
        yield Case("sidecar-%s=%r" % (_name(path), bad), lambda tmp, p=path, b=bad: _build(tmp, ckpt=_ckpt(tmp, _put(p, b))),
                   1, ["model.json", "format version" if path == ["format_version"] else path[0]])
    for name, raw in (("not-json", "{"), ("a-list", "[]"), ("empty", ""), ("number", "4")):
        yield Case("sidecar-" + name, lambda tmp, r=raw: [BUILD, "info", _ckpt(tmp, raw=r)], 1, ["model.json"])
    yield Case("sidecar-for-another-model", lambda tmp: [BUILD, "info", _ckpt(tmp, _header_mismatch)], 1,
               ["does not fit the model"])
    yield Case("sidecar-input-size-64", lambda tmp: _build(tmp, ckpt=_ckpt(tmp, _put(["input", "size"], 64))), 1,
               ["has shape"])
    yield Case("sidecar-num-classes-100", lambda tmp: [BUILD, "info", _ckpt(tmp, _hundred_classes)], 1, ["has shape"])


def _hundred_classes(meta):
    meta.update(num_classes=100, class_names=None)


# ---- training inputs: data and run directory ----------------------------------------------------------
def _png_header_only(path, width, height):
    """A PNG that claims width x height pixels: PIL reads the header and must refuse before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _bomb_set(tmp):
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = os.path.join(tmp, "imgs", split, cls)
            os.makedirs(d)
            Image.new("RGB", (8, 8)).save(os.path.join(d, "ok.png"))
    _png_header_only(os.path.join(tmp, "imgs", "train", "a", "bomb.png"), 100000, 100000)
    return _train(tmp)[:2] + ["--data", os.path.join(tmp, "imgs"), "--out", os.path.join(tmp, "o")]


def _run_dir(tmp, state=None, tensors=b"not a safetensors file"):
    """The tiny CIFAR-like set and a run directory whose state matches the CLI defaults on it."""
    from compile.data import load_dataset
    from compile.recipes import load_recipe, merge
    from compile.train import RECIPE_KEYS, default_config
    data = make_cifar_like(os.path.join(tmp, "data"), n_train=64, n_test=32)
    cfg = default_config(**merge(load_recipe("default"), {}, "grouped"))  # what `train` runs without flags
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    doc = {"recipe": {k: cfg[k] for k in RECIPE_KEYS}, "data": load_dataset(data).fingerprint, "stage": 1,
           "epoch": 1, "history": [], "stage_seconds": {}, "done": []}
    with open(os.path.join(run, "state.json"), "w") as f:
        f.write(json.dumps(doc) if state is None else state(doc))
    with open(os.path.join(run, "state.safetensors"), "wb") as f:
        f.write(tensors)
    return [BUILD, "train", "--data", data, "--run-dir", run, "--out", os.path.join(tmp, "o")]


def _other_tensors():
    """A valid safetensors file whose tensors belong to no model of this run."""
    from safetensors.numpy import save
    import numpy as np
    return save({"model.nothing": np.zeros(3, np.float32), "momentum.nothing": np.zeros(3, np.float32)})


def data_cases():
    yield Case("data-decompression-bomb", _bomb_set, 1, ["bomb.png"])
    yield Case("run-dir-tensors-corrupt", _run_dir, 1, ["state.safetensors", "delete the run directory"])
    yield Case("run-dir-state-not-json", lambda tmp: _run_dir(tmp, lambda d: "{"), 1,
               ["state.json", "delete the run directory"])
    yield Case("run-dir-tensors-of-another-model", lambda tmp: _run_dir(tmp, tensors=_other_tensors()), 1,
               ["state.safetensors", "delete the run directory"])
    yield Case("run-dir-state-a-list", lambda tmp: _run_dir(tmp, lambda d: "[]"), 1, ["state.json"])
    yield Case("run-dir-state-stage-text", lambda tmp: _run_dir(tmp, lambda d: json.dumps(dict(d, stage="1"))), 1,
               ["state.json", "stage"])


CASES = list(train_cases()) + list(build_cases()) + list(target_cases()) + list(sidecar_cases()) + list(data_cases())


# ---- running them --------------------------------------------------------------------------------------
def _tree(root):
    """Every path under root with its size and sha256 (directories as None): what a case must not change."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root)] = None
        for n in files:
            p = os.path.join(d, n)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = os.readlink(p)
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _run(case, tmp):
    argv = case.setup(tmp)
    before = _tree(tmp)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        res = subprocess.run([sys.executable] + argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return None, before, _tree(tmp)
    return res, before, _tree(tmp)


@pytest.fixture(scope="session")
def outcomes(request, tmp_path_factory):
    """Run every selected case once, a few at a time (each its own subprocess with its own timeout)."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)]
    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {c.id: pool.submit(_run, c, str(tmp_path_factory.mktemp("case"))) for c in wanted}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_no_file(case, outcomes):
    res, before, after = outcomes[case.id]
    assert res is not None, "no answer within %d s" % TIMEOUT
    assert res.returncode == case.code, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    if case.code == 2 and not case.words:  # no command at all: the help, nothing else
        assert "usage:" in res.stdout and not lines
        return
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in case.words:
        assert w in lines[0], lines[0]
    assert after == before, "files changed: %s" % sorted(set(after.items()) ^ set(before.items()))


def test_the_suite_covers_at_least_one_hundred_inputs():
    assert len(CASES) >= 100 and len(set(c.id for c in CASES)) == len(CASES)

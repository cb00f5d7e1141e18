"""Bad inputs to the runtime (issue 10): every one gets one line from the project's error type, none hangs
(each runs under a timer), none writes anything. The manifest cases are generated from the fields of a
real bundle's manifest (delete each, give each a wrong type), the rest cover paths, batch sizes, golden
files, the Python API and the runtime CLI's flags."""
import contextlib
import copy
import json
import os
import shutil
import signal
import zipfile

import numpy as np
import pytest

from conftest import ROOT, run_cli
from runtime import load
from runtime.bundle import load_golden, sha256_file
from runtime.errors import DynnError

TIMEOUT_S = 30
# The fields the runtime reads (runtime/manifest_schema.py), "#" for any list element and "*" for any key.
# Deleting one, or anything holding one, or giving it a wrong type must be refused; every other field is a
# record for people and tools (target notes, tools, timings, operator tables, ...) and any value loads.
READ = ("schema", "schema_version", "target.name", "target.engine", "model.groups", "model.arch", "model.scheme",
        "model.num_classes", "model.level_scale", "levels.#.level", "levels.#.params", "levels.#.macs",
        "input.shape", "input.normalisation.scale", "input.normalisation.mean", "input.normalisation.std",
        "output.shape", "engines.onnx.file", "engines.onnx.input", "engines.onnx.output", "engines.onnx.level_input",
        "engines.tflite.file", "engines.tflite.batch_sizes", "engines.tflite.signatures.*", "golden.file",
        "golden.count", "golden.atol", "golden.rtol", "files.*")
# Read when present: deleting loads (a default applies), a wrong type is refused.
OPTIONAL = ("target.board", "target.description", "model.class_names", "model.level_weights", "input.name",
            "output.name", "golden.atol_fp16", "levels.#.test_accuracy", "engines.tflite.precisions",
            "golden", "engines.onnx", "engines.tflite")  # no golden vectors; either engine of a two-engine bundle


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds=TIMEOUT_S):
    """Fail instead of hanging (a batch size of 0 once looped forever)."""
    def alarm(*_):
        raise Hang("no answer in %d s" % seconds)
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def snapshot(d):
    return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getsize(os.path.join(r, f)),
                   os.path.getmtime(os.path.join(r, f))) for r, _, fs in os.walk(d) for f in fs)


def one_line_error(func):
    """Run func under the deadline; return its DynnError's message after checking it is one line."""
    with deadline():
        try:
            func()
        except DynnError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg and "Traceback" not in msg, msg
            return msg
    raise AssertionError("no error raised")


def wrong_value(v):
    """A value of another JSON type than v."""
    if isinstance(v, bool) or isinstance(v, (int, float)):
        return "x"
    if isinstance(v, str) or v is None:
        return 42
    return [1] if isinstance(v, dict) else {"x": 1}


def field_paths(doc, prefix=""):
    """(dotted path, parent, key) of every object field; lists contribute their first and last element."""
    items = list(doc.items()) if isinstance(doc, dict) else \
        [(0, doc[0]), (-1, doc[-1])] if doc and isinstance(doc[0], dict) else []
    for key, value in items:
        path = (prefix + "." + key if prefix else key) if isinstance(doc, dict) else "%s[%d]" % (prefix, key)
        yield path, doc, key
        if isinstance(value, (dict, list)):
            for sub in field_paths(value, path):
                yield sub


def _segments(path):
    return path.replace("[0]", ".#").replace("[-1]", ".#").split(".")


def _matches(pattern, segs):
    return len(segs) == len(pattern) and all(p in ("*", s) for p, s in zip(pattern, segs))


def expectation(path, op):
    """'refuse' or 'load' for deleting / mistyping the field at `path`."""
    segs = _segments(path)
    if any(_matches(p.split("."), segs) for p in OPTIONAL):
        return "load" if op == "delete" else "refuse"
    for p in READ:
        pat = p.split(".")
        # the field itself, a part of it, or an object holding it
        if _matches(pat[:len(segs)], segs) or _matches(pat, segs[:len(pat)]):
            return "refuse"
    return "load"


@pytest.fixture()
def bundle(host_bundle, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(host_bundle, b)
    return b


def write_manifest(b, man):
    with open(os.path.join(b, "manifest.json"), "w") as f:
        json.dump(man, f)


def manifest_of(b):
    with open(os.path.join(b, "manifest.json")) as f:
        return json.load(f)


def test_every_manifest_field_deleted_or_mistyped_gets_one_line_naming_it(bundle):
    base = manifest_of(bundle)
    cases = [(p, op) for p, _, _ in field_paths(base) for op in ("delete", "wrong type")]
    failures, refused = [], 0
    for path, op in cases:
        man = copy.deepcopy(base)
        parent, key = [(par, k) for p, par, k in field_paths(man) if p == path][0]
        if op == "delete":
            del parent[key]
        else:
            parent[key] = wrong_value(parent[key])
        write_manifest(bundle, man)
        before = snapshot(bundle)
        should_load = expectation(path, op) == "load"
        try:
            if should_load:
                with deadline():
                    with load(bundle, threads=1) as m:
                        m.infer(np.zeros((2,) + m.input_shape, np.float32))
            else:
                msg = one_line_error(lambda: load(bundle, threads=1))
                # a field by its name; a missing list element by the list or what no longer matches it
                leaf = "" if path.endswith("]") else path.split(".")[-1]
                if "manifest.json" not in msg or leaf not in msg:
                    failures.append("%s %s: message does not name the file and %r: %s" % (op, path, leaf, msg))
                refused += 1
        except (AssertionError, Exception) as exc:  # noqa: BLE001 - collected, every case is reported
            failures.append("%s %s: %s: %s" % (op, path, type(exc).__name__, exc))
        assert snapshot(bundle) == before, "%s %s wrote into the bundle" % (op, path)
    print("manifest field cases: %d (%d refused with one line, %d loaded as they should)"
          % (len(cases), refused, len(cases) - refused - len(failures)))
    assert not failures, "%d of %d cases:\n%s" % (len(failures), len(cases), "\n".join(failures))
    assert len(cases) >= 100


def _set(man, path, value):
    keys = path.split(".")
    d = man
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


def _listed_engine_path(value):
    return lambda man: _set(man, "engines.tflite.file", value)


MANIFEST_CASES = {
    "engine path with ..": (_listed_engine_path("../b/model.tflite"), "engines.tflite.file"),
    "absolute engine path": (_listed_engine_path("/etc/passwd"), "engines.tflite.file"),
    "non-canonical engine path": (_listed_engine_path("./model.tflite"), "engines.tflite.file"),
    "engine not listed in files": (lambda man: man["files"].pop("model.tflite"), "engines.tflite.file"),
    "golden not listed in files": (lambda man: man["files"].pop("golden.npz"), "golden.file"),
    "files entry outside the bundle": (lambda man: man["files"].__setitem__(
        "../../etc/passwd", {"size": 1, "sha256": "0" * 64}), "files"),
    "golden path absolute": (lambda man: _set(man, "golden.file", "/etc/hostname"), "golden.file"),
    "batch size 0": (lambda man: _set(man, "engines.tflite.batch_sizes", [0, 1]), "batch_sizes"),
    "batch sizes without 1": (lambda man: _set(man, "engines.tflite.batch_sizes", [32]), "batch_sizes"),
    "batch sizes repeated": (lambda man: _set(man, "engines.tflite.batch_sizes", [1, 1]), "batch_sizes"),
    "huge batch size": (lambda man: _set(man, "engines.tflite.batch_sizes", [1, 10 ** 9]), "batch_sizes"),
    "batch size without signatures": (lambda man: man["engines"]["tflite"]["batch_sizes"].append(64),
                                      "signatures"),
    "signature for another batch": (lambda man: man["engines"]["tflite"]["signatures"].__setitem__(
        "group1_b7", {"group": 1, "batch": 7}), "signatures"),
    "signature with wrong group": (lambda man: man["engines"]["tflite"]["signatures"]["group1_b1"].__setitem__(
        "group", 2), "signatures"),
    "level scale NaN": (lambda man: man["model"]["level_scale"].__setitem__(0, float("nan")), "level_scale"),
    "level scale too short": (lambda man: man["model"]["level_scale"].pop(), "level_scale"),
    "levels out of order": (lambda man: man["levels"].reverse(), "level"),
    "more levels than groups": (lambda man: _set(man, "model.groups", len(man["levels"]) - 1), "levels"),
    "zero groups": (lambda man: _set(man, "model.groups", 0), "groups"),
    "negative std": (lambda man: man["input"]["normalisation"]["std"].__setitem__(0, -1.0), "std"),
    "one mean for three channels": (lambda man: _set(man, "input.normalisation.mean", [0.5]), "mean"),
    "input size 0": (lambda man: _set(man, "input.shape", [None, 3, 0, 32]), "input.shape"),
    "fixed batch in input shape": (lambda man: man["input"]["shape"].__setitem__(0, 1), "input.shape"),
    "classes disagree": (lambda man: _set(man, "output.shape", [None, 11]), "output.shape"),
    "accuracy above 1": (lambda man: man["levels"][0].__setitem__("test_accuracy", 80.3), "test_accuracy"),
    "bad sha256": (lambda man: man["files"]["model.tflite"].__setitem__("sha256", "XYZ"), "sha256"),
    "negative golden tolerance": (lambda man: _set(man, "golden.atol", -1), "atol"),
    "level weights of the wrong shape": (lambda man: _set(man, "model.level_weights", [[1.0]]), "level_weights"),
    "unknown engine only": (lambda man: _set(man, "engines", {"cuda": {}}), "engines"),
    "schema version 0": (lambda man: _set(man, "schema_version", 0), "schema_version"),
    "schema version from the future": (lambda man: _set(man, "schema_version", 99), "schema version 99"),
    "schema version as text": (lambda man: _set(man, "schema_version", "1"), "schema_version"),
    "another tool's manifest": (lambda man: _set(man, "schema", "chrome-extension"), "not a dynn bundle"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_value_is_refused_in_one_line(bundle, case):
    change, expect = MANIFEST_CASES[case]
    man = manifest_of(bundle)
    change(man)
    write_manifest(bundle, man)
    before = snapshot(bundle)
    msg = one_line_error(lambda: load(bundle, threads=1))
    assert expect in msg, msg
    assert snapshot(bundle) == before


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", "\"dynn-bundle\"", "\xff\xfe"])
def test_manifest_that_is_not_a_json_object_is_refused_in_one_line(bundle, text):
    with open(os.path.join(bundle, "manifest.json"), "w", encoding="latin-1") as f:
        f.write(text)
    msg = one_line_error(lambda: load(bundle))
    assert "manifest.json" in msg


def test_engine_symlinked_out_of_the_bundle_is_refused(bundle, tmp_path):
    outside = str(tmp_path / "elsewhere.tflite")
    shutil.move(os.path.join(bundle, "model.tflite"), outside)
    os.symlink(outside, os.path.join(bundle, "model.tflite"))
    msg = one_line_error(lambda: load(bundle))
    assert "model.tflite" in msg and "inside the bundle" in msg


def _rewrite_golden(bundle, change):
    path = os.path.join(bundle, "golden.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)
    man = manifest_of(bundle)
    man["files"]["golden.npz"] = {"size": os.path.getsize(path), "sha256": sha256_file(path)}
    write_manifest(bundle, man)


GOLDEN_CASES = {
    "missing level": (lambda a: a.pop("level1"), "level1"),
    "wrong shape": (lambda a: a.__setitem__("input", a["input"][:, :1]), "input"),
    "wrong dtype": (lambda a: a.__setitem__("images", a["images"].astype(np.float32)), "images"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_file_with_bad_keys_is_refused_in_one_line(bundle, case):
    change, key = GOLDEN_CASES[case]
    _rewrite_golden(bundle, change)
    with load(bundle, threads=1) as m:
        msg = one_line_error(lambda: load_golden(m.bundle_dir, m.manifest))
    assert "golden.npz" in msg and key in msg


def test_corrupt_golden_file_is_refused_in_one_line(bundle):
    path = os.path.join(bundle, "golden.npz")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", b"not an array")
    man = manifest_of(bundle)
    man["files"]["golden.npz"] = {"size": os.path.getsize(path), "sha256": sha256_file(path)}
    write_manifest(bundle, man)
    with load(bundle, threads=1) as m:
        assert "golden.npz" in one_line_error(lambda: load_golden(m.bundle_dir, m.manifest))


API_CASES = {
    "set_level(2.0)": (lambda m: m.set_level(2.0), "level 2.0 does not exist"),
    "set_level(True)": (lambda m: m.set_level(True), "level True does not exist"),
    "set_level('1')": (lambda m: m.set_level("1"), "does not exist"),
    "set_level(0)": (lambda m: m.set_level(0), "does not exist"),
    "infer(level=1.0)": (lambda m: m.infer(np.zeros((1,) + m.input_shape, np.float32), 1.0), "does not exist"),
    "infer(list)": (lambda m: m.infer([[0.0]]), "float32 array"),
    "infer(float64)": (lambda m: m.infer(np.zeros((1,) + m.input_shape)), "float32 array"),
    "threads=1000000": (lambda m: m.set_operating_point(threads=1000000), "threads must be an integer from 1"),
    "threads=0": (lambda m: m.set_operating_point(threads=0), "threads must be"),
    "threads=2.5": (lambda m: m.set_operating_point(threads=2.5), "threads must be"),
    "threads=True": (lambda m: m.set_operating_point(threads=True), "threads must be"),
    "level in operating point": (lambda m: m.set_operating_point(level=9), "level 9 does not exist"),
    "infer after close": (lambda m: (m.close(), m.infer(np.zeros((1,) + m.input_shape, np.float32))), "closed"),
    "operating point after close": (lambda m: (m.close(), m.set_operating_point(threads=1)), "closed"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_bad_api_call_gets_one_line(host_bundle, case):
    call, expect = API_CASES[case]
    with load(host_bundle, threads=1) as m:
        level = m.level
        assert expect in one_line_error(lambda: call(m))
        assert m.level == level


@pytest.mark.parametrize("kw", [{"threads": 1000000}, {"threads": -1}, {"threads": "2"}, {"backend": "cuda"}])
def test_bad_load_argument_gets_one_line(host_bundle, kw):
    assert list(kw)[0] in one_line_error(lambda: load(host_bundle, **kw))


CLI_CASES = [
    (["info", "{b}", "--threads", "-1"], "threads must be an integer from 1"),
    (["info", "{b}", "--threads", "0"], "threads must be"),
    (["verify", "{b}", "--threads", "1000000"], "threads must be"),
    (["run", "{b}", "--batch", "0"], "--batch must be from 1"),
    (["run", "{b}", "--batch", "-3"], "--batch must be from 1"),
    (["run", "{b}", "--batch", "100000"], "--batch must be from 1"),
    (["run", "{b}", "--runs", "0"], "--runs must be from 1"),
    (["run", "{b}", "--level", "0", "--runs", "1"], "level 0 does not exist"),
    (["run", "{b}", "--level", "99", "--runs", "1"], "level 99 does not exist"),
    (["info", "{b}/missing"], "does not exist"),
    (["verify", "{b}/manifest.json"], "does not exist"),
    (["info", "{b}", "--backend", "tensorrt"], "cannot run bundle"),
]


@pytest.mark.parametrize("argv,expect", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_runtime_cli_bad_flag_exits_1_with_one_line(host_bundle, tmp_path, argv, expect):
    before = snapshot(host_bundle)
    res = run_cli(["-m", "runtime"] + [a.format(b=host_bundle) for a in argv], cwd=str(tmp_path),
                  timeout=TIMEOUT_S * 2, env=dict(os.environ, PYTHONPATH=ROOT))
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("INFO:")]
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], \
        res.stderr
    assert snapshot(host_bundle) == before and os.listdir(str(tmp_path)) == []

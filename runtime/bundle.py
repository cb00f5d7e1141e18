"""Reading and verifying a bundle directory (docs/bundle.md): manifest, checksums, golden vectors."""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from runtime.errors import RuntimeUserError
from runtime.manifest_schema import check_manifest
from runtime.schema import load_json

SCHEMA = "dynn-bundle"
SCHEMA_VERSION = 3  # reads 1 (uniform weights only), 2 (level_weights) and 3 (level_heads); docs/bundle.md


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB chunks: the one checksum every record of the project uses."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path, data, mode=0o644):
    """Write `data` to `path` so that readers see the old file or the new one, never half of either.

    The temporary file has a unique name in the same directory (two writers never share it) and is
    removed if anything fails before the rename."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path, doc, mode=0o644):
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8"), mode)


def read_manifest(bundle_dir):
    """The bundle's manifest, checked once here against runtime/manifest_schema.py (one-line errors)."""
    path = os.path.join(bundle_dir, "manifest.json")
    if not os.path.isdir(bundle_dir):
        raise RuntimeUserError("bundle directory %s does not exist; build one with: python build.py --target NAME"
                               % bundle_dir)
    if not os.path.isfile(path):
        raise RuntimeUserError("%s has no manifest.json; it is not a bundle (build one with: "
                               "python build.py --target NAME)" % bundle_dir)
    man = load_json(path, "rebuild or re-deploy the bundle")
    if not isinstance(man, dict) or man.get("schema") != SCHEMA:
        raise RuntimeUserError("%s is not a dynn bundle manifest (schema %r); point at a directory made by "
                               "python build.py --target NAME" % (path, man.get("schema") if isinstance(man, dict)
                                                                   else type(man).__name__))
    version = man.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RuntimeUserError("%s: schema_version must be a positive integer, got %r; rebuild the bundle"
                               % (path, version))
    if version > SCHEMA_VERSION:
        raise RuntimeUserError("%s has schema version %s but this runtime reads up to %d; update the runtime "
                               "together with the bundle" % (path, version, SCHEMA_VERSION))
    return check_manifest(man, path, bundle_dir)


def verify_files(bundle_dir, manifest):
    """Check size and sha256 of every file the manifest lists; raise on the first mismatch.

    The manifest came through read_manifest, so every path is inside the bundle and every engine and
    golden file is among those checked here."""
    for rel, info in sorted(manifest["files"].items()):
        p = os.path.join(bundle_dir, rel)
        if not os.path.isfile(p):
            raise RuntimeUserError("%s is missing from the bundle %s; re-deploy it" % (rel, bundle_dir))
        if os.path.getsize(p) != info["size"] or sha256_file(p) != info["sha256"]:
            raise RuntimeUserError("%s in %s fails its checksum (expected sha256 %s..., size %d): the file is "
                                   "corrupt or was changed; re-deploy the bundle"
                                   % (rel, bundle_dir, info["sha256"][:12], info["size"]))


def load_golden(bundle_dir, manifest):
    """The golden vectors, with their keys and shapes checked against the manifest."""
    g = manifest.get("golden")
    if not g:
        raise RuntimeUserError("the manifest of %s names no golden vectors; rebuild the bundle" % bundle_dir)
    path = os.path.join(bundle_dir, g["file"])
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RuntimeUserError("%s cannot be read as golden vectors (%s); re-deploy the bundle"
                               % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    n, shape = g["count"], manifest["input"]["shape"][1:]
    c, h, w = shape
    want = {"images": ((n, h, w, c), np.uint8), "input": ((n, c, h, w), np.float32)}
    for lv in manifest["levels"]:
        want["level%d" % lv["level"]] = ((n, manifest["output"]["shape"][1]), np.float32)
    for key, (shp, dtype) in sorted(want.items()):
        a = out.get(key)
        if not isinstance(a, np.ndarray) or a.shape != shp or a.dtype != dtype:
            raise RuntimeUserError("%s: %s must be a %s array of shape %s, got %s; rebuild the bundle"
                                   % (path, key, np.dtype(dtype).name, list(shp),
                                      "%s %s" % (a.dtype, list(a.shape)) if isinstance(a, np.ndarray)
                                      else "nothing" if a is None else "no array"))
    return out


def level_weights(manifest):
    """Per level, None where the level is the plain mean of its groups (sum, then times level_scale[k-1]:
    old bundles' exact arithmetic) or the k float32 weights of sum_g w[k][g] * contribution_g (issue 11)."""
    weights = manifest["model"].get("level_weights")
    out = []
    for k, scale in enumerate(manifest["model"]["level_scale"], 1):
        w = weights[k - 1] if weights is not None else None
        uniform = w is None or all(abs(x - 1.0 / k) <= 1e-12 for x in w) and abs(scale - 1.0 / k) <= 1e-12
        out.append(None if uniform else np.asarray(w, np.float32))
    return out


def golden_record(manifest, backend, precision):
    """The golden record a backend's `precision` levels are verified against: None for float32 (golden.atol and
    the level{k} logits), golden.int8 for TFLite's int8 signatures, golden.onnx_int8 for model_int8.onnx."""
    if precision == "fp32":
        return None
    return manifest["golden"].get(precision if backend != "onnx" else "onnx_" + precision)


def level_heads(manifest):
    """True when the bundle's groups carry per-level heads (schema 3, model.level_heads): group g outputs its
    contributions to levels g..G side by side, runtime.backends.base.Combiner adds them."""
    return bool(manifest["model"].get("level_heads"))


# ---- engine.json (TensorRT's on-device record)
# Written by runtime.trt.builder on the board, read by runtime.trt.backend and selftest: this section is its
# only reader and validator. Schema version 2 added `profiles` (the optimisation profile of each carried
# batch size); a version-1 record is refused with the rebuild command, like any other unusable record.
ENGINE_RECORD = "engine.json"
ENGINE_SCHEMA, ENGINE_SCHEMA_VERSION = "dynn-trt-engine", 2


def engine_record(mode, precision, tensorrt_version, gpu, profiles, workspace_mb, files, sources, built,
                  build_seconds, fallback=None):
    """The record of one successful build. files: {plan relpath: {size, sha256}} in group order;
    profiles: [[min, opt, max] batch] per optimisation profile; fallback: why the asked-for mode was not built."""
    return {"schema": ENGINE_SCHEMA, "schema_version": ENGINE_SCHEMA_VERSION, "mode": mode,
            "precision": precision, "tensorrt_version": tensorrt_version, "gpu": gpu,
            "batch_max": max(p[2] for p in profiles), "profiles": [list(p) for p in profiles],
            "workspace_mb": workspace_mb, "engines": list(files), "files": files, "sources": sources,
            "built": built, "build_seconds": build_seconds, "fallback": fallback}


def _is_profile_list(profiles):
    return profiles and all(len(p) == 3 and 1 <= p[0] <= p[1] <= p[2] for p in profiles)


def read_engine_record(bundle_dir, manifest, fix):
    """engine.json, its fields checked and (unless manifest is None) its sources compared with the
    manifest's ONNX files. fix: what to do (the rebuild command), appended to every error."""
    from runtime.schema import field, require_dict
    from runtime.trt import MODES
    path = os.path.join(bundle_dir, ENGINE_RECORD)
    if not os.path.isfile(path):
        raise RuntimeUserError("no TensorRT engine in %s; %s" % (bundle_dir, fix))
    doc = require_dict(load_json(path, fix), path, fix)
    field(doc, "schema", str, path, fix, check=lambda v: v == ENGINE_SCHEMA, expect=repr(ENGINE_SCHEMA))
    field(doc, "schema_version", int, path, fix, check=lambda v: v == ENGINE_SCHEMA_VERSION,
          expect="%d (this runtime's)" % ENGINE_SCHEMA_VERSION)
    field(doc, "mode", str, path, fix, check=lambda v: v in MODES, expect="one of %s" % ", ".join(MODES))
    field(doc, "precision", str, path, fix, check=lambda v: v in ("fp16", "fp32"), expect="fp16 or fp32")
    field(doc, "tensorrt_version", str, path, fix)
    field(doc, "gpu", (str, type(None)), path, fix)
    field(doc, "built", str, path, fix)
    doc["fallback"] = field(doc, "fallback", (str, type(None)), path, fix, default=None)
    field(doc, "profiles", [[int]], path, fix, check=_is_profile_list,
          expect="a list of [min, opt, max] batch sizes")
    files = field(doc, "files", dict, path, fix)
    for rel, meta in files.items():
        field(meta, "size", int, path, fix, prefix="files.%s." % rel)
        field(meta, "sha256", str, path, fix, prefix="files.%s." % rel)
    field(doc, "engines", [str], path, fix, check=lambda v: v and all(r in files for r in v),
          expect="a non-empty list of files named in `files`")
    sources = field(doc, "sources", dict, path, fix)
    stale = sorted(rel for rel, sha in sources.items() if manifest is not None
                   if manifest.get("files", {}).get(rel, {}).get("sha256", sha) != sha)
    if stale:
        raise RuntimeUserError("the TensorRT engine in %s was built from an older %s; %s"
                               % (bundle_dir, ", ".join(stale), fix))
    return doc


def read_checked_file(bundle_dir, rel, meta, listed_in, fix):
    """The bytes of bundle file `rel` (a '/'-separated name inside the bundle), checked against the size and
    sha256 in `meta` (from manifest.json or engine.json, named by listed_in)."""
    parts = rel.split("/")
    fs_path = os.path.join(bundle_dir, *parts)
    if os.path.isabs(rel) or ".." in parts or not os.path.isfile(fs_path):
        raise RuntimeUserError("%s lists %s, which is missing from %s; %s" % (listed_in, rel, bundle_dir, fix))
    with open(fs_path, "rb") as f:
        data = f.read()
    if len(data) != meta.get("size") or sha256_bytes(data) != meta.get("sha256"):
        raise RuntimeUserError("%s does not match %s (size or sha256); %s" % (rel, listed_in, fix))
    return data


def read_engine_plans(bundle_dir, record, fix):
    """{plan relpath: bytes} of record["engines"], each checked against engine.json (read once)."""
    return {rel: read_checked_file(bundle_dir, rel, record["files"][rel], ENGINE_RECORD, fix)
            for rel in record["engines"]}


# ---- profile.json (operating points measured on the board: runtime/profile_schema.py, docs/manager.md)
# Written by runtime.profiler, read by runtime.manager and the host tools: this section is its only reader
# and validator. Every failure is one line naming the file and the field; given the manifest of the loaded
# bundle, a profile measured on another bundle (target, groups, accuracies, engine file) is refused.
PROFILE_FIX = "measure it again on the board: python -m runtime profile BUNDLE"


def read_profile(path, manifest=None):
    """The profile in a profile.json file, or in the one a bundle directory holds, checked (check_profile)."""
    from runtime import profile_schema as ps
    if os.path.isdir(path):
        path = os.path.join(path, ps.PROFILE_FILE)
    if not os.path.isfile(path):
        raise RuntimeUserError("no profile at %s; measure one on the board: python -m runtime profile BUNDLE "
                               "(on the host: python build.py profile BUNDLE)" % path)
    return check_profile(load_json(path, PROFILE_FIX), path, manifest)


def _positive(v):
    return v is None or 0 < v < float("inf")  # NaN fails both comparisons


def check_profile(doc, where="profile", manifest=None):
    """Raise RuntimeUserError (one line) unless doc is a profile the manager can use; returns doc."""
    from runtime import profile_schema as ps
    from runtime.schema import field, require_dict

    def f(d, key, t, prefix="", **kw):
        return field(d, key, t, where, PROFILE_FIX, prefix=prefix, **kw)

    none = type(None)
    require_dict(doc, where, PROFILE_FIX)
    f(doc, "schema", str, check=lambda v: v == ps.SCHEMA, expect=repr(ps.SCHEMA))
    f(doc, "schema_version", int, check=lambda v: v in ps.READ_VERSIONS,
      expect="one of %s (the versions this runtime reads)" % list(ps.READ_VERSIONS))
    points = f(doc, "points", [dict], check=len, expect="a non-empty list of operating points")
    for i, p in enumerate(points):
        pre = "points[%d]." % i
        f(p, "id", int, pre)
        f(p, "level", int, pre, check=lambda v: v >= 1, expect="a level number (1 or more)")
        for key in ("backend", "pe", "cluster"):
            f(p, key, (str, none), pre)
        for key in ("threads", "cpu_freq_khz", "gpu_freq_hz"):
            f(p, key, (int, none), pre, check=_positive, expect="a positive integer or null")
        f(p, "accuracy", (float, none), pre, check=lambda v: v is None or 0 <= v <= 1,
          expect="a fraction in 0..1 or null")
        f(p, "precision", (str, none), pre, default=None, check=lambda v: v is None or v in ps.PRECISIONS,
          expect="one of %s or null" % ", ".join(ps.PRECISIONS))
        lat = f(p, "latency_ms", dict, pre)
        for key in ("median", "p95"):  # zero would divide by zero in the manager: no call takes no time
            f(lat, key, float, pre + "latency_ms.", check=_positive, expect="a positive number of milliseconds")
        for key in ("energy_mj", "power_w"):
            f(p, key, (float, none), pre, check=_positive, expect="a positive number or null")
        _check_placement(f, p, pre)
    plat = f(doc, "platform", dict, default={})
    f(plat, "dvfs_available", bool, "platform.", default=False)
    for name, c in f(plat, "clusters", dict, "platform.", default={}).items():
        f(c, "frequencies_khz", ([int], none), "platform.clusters.%s." % name, default=None)
    f(f(doc, "settings", dict, default={}), "park_other_clusters", bool, "settings.", default=False)
    energy = f(doc, "energy", dict, default={})
    f(energy, "available", bool, "energy.", default=False)
    f(energy, "reason", (str, none), "energy.", default=None)
    if manifest is not None:
        _check_profile_identity(doc, where, manifest, set(p["backend"] for p in points))
    return doc


def _check_placement(f, p, pre):
    """A placement point's fields (schema 3); runtime.placement.parse checks the rest when it is applied."""
    none = type(None)
    pl = f(p, "placement", (dict, none), pre, default=None)
    f(p, "predicted_ms", (float, none), pre, check=_positive, expect="a positive number or null", default=None)
    for name, khz in (f(p, "cpu_freqs_khz", (dict, none), pre, default=None) or {}).items():
        f({name: khz}, name, int, pre + "cpu_freqs_khz.", check=_positive, expect="a positive integer in kHz")
    for pe, part in (pl or {}).items():
        where = pre + "placement.%s." % pe
        f(part, "groups", [int], where, check=len, expect="a non-empty list of group numbers")
        f(part, "engine", str, where)
        f(part, "threads", (int, none), where, check=_positive, expect="a positive integer or null", default=None)


def _check_profile_identity(doc, where, manifest, backends):
    from runtime import profile_schema as ps
    from runtime.schema import field
    ident = field(doc, "bundle", dict, where, PROFILE_FIX)
    want = ps.bundle_identity(manifest)
    for key, what in (("target", "target"), ("groups", "number of groups"), ("accuracies", "level accuracies")):
        got = ident.get(key)
        if got != want[key]:
            raise RuntimeUserError("%s was measured on another bundle: its %s is %s, the loaded bundle's is %s; %s"
                                   % (where, what, got, want[key], PROFILE_FIX))
    engines = field(ident, "engines", dict, where, PROFILE_FIX, prefix="bundle.")
    for name in sorted(b for b in backends if b in want["engines"]):
        if engines.get(name) != want["engines"][name]:
            raise RuntimeUserError("%s was measured with another %s engine file (sha256 %s, the loaded bundle's is "
                                   "%s); %s" % (where, name, str(engines.get(name))[:12],
                                                str(want["engines"][name])[:12], PROFILE_FIX))

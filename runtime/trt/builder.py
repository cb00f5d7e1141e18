"""python -m runtime trt-build BUNDLE: build a nano-gpu bundle's TensorRT engine(s) on the device that runs them.

Modes:
  per-group  (default) one engine per group, BUNDLE/groups/group{g}.plan, from groups/group{g}.onnx; the
             runtime runs groups 1..k and adds them up, so lower levels skip work for certain.
  if         one engine, BUNDLE/model.plan, from model.onnx: every level behind ONNX `If`s. Public reports say
             TensorRT may compute untaken branches anyway (boards.md 6: TensorRT #4059 on 8.2, #4402 on
             10.7), so keep it only where `python -m runtime trt-selftest BUNDLE --mode if` shows it faster.
             Needs TensorRT 8.2+; if its build fails, per-group engines are built instead (engine.json
             `fallback` says why).
Each engine gets one optimisation profile per carried batch size (plus batch 1), recorded in engine.json.
Nothing is replaced unless every engine built; the old mode's engines go after a successful rebuild.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

from runtime.bundle import (ENGINE_RECORD, atomic_write_json, engine_record, read_checked_file, read_manifest,
                            sha256_bytes)
from runtime.cli import utc_now
from runtime.trt import MODES, ParseError, TensorRTError
from runtime.trt.cuda import gpu_name
from runtime.trt.version import api_major, import_tensorrt, require_if_support

PRECISIONS = ("fp16", "fp32")
TMP_PREFIX = ".trt-build-"


# ---------------------------------------------------------------- TensorRT 8 / 10 builder calls (boards.md 4.1)

def _network_trt8(trt, builder):
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def _network_trt10(trt, builder):
    return builder.create_network(0)  # every network is explicit-batch; the flag is deprecated


def _workspace_trt8(trt, config, nbytes):
    config.max_workspace_size = nbytes  # set_memory_pool_limit only arrives in 8.4


def _workspace_trt10(trt, config, nbytes):
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)  # max_workspace_size is gone


BUILDER_API = {8: (_network_trt8, _workspace_trt8), 10: (_network_trt10, _workspace_trt10)}


# ---------------------------------------------------------------- what the manifest asks for

RECOMPILE = "compile the bundle for nano-gpu on the host (python build.py --target nano-gpu) and copy it again"


def engine_jobs(manifest, mode, bundle):
    """[(onnx relpath, plan relpath)] in group order."""
    spec = manifest["engines"]["tensorrt"]
    if mode == "if":
        return [(spec.get("onnx", "model.onnx"), spec.get("plan", "model.plan"))]
    groups = spec.get("group_onnx") or []
    if not groups:
        raise TensorRTError("manifest.json of %s lists no per-group ONNX files (engines.tensorrt.group_onnx); %s"
                            % (bundle, RECOMPILE))
    return [(rel, os.path.splitext(rel)[0] + ".plan") for rel in groups]


def batch_profiles(batch_sizes):
    """One (min, opt, max) batch range per carried size, plus batch 1 (most board use): each size is the
    profile's opt and max, and its range starts right above the previous size."""
    sizes = sorted(set([1] + [int(b) for b in batch_sizes]))
    return [(prev + 1, b, b) for prev, b in zip([0] + sizes[:-1], sizes)]


class Shapes(object):
    """What the optimisation profiles need, read from the manifest."""

    def __init__(self, manifest, bundle):
        spec = manifest["engines"]["tensorrt"]
        self.input_name = manifest["input"]["name"]
        self.sample = tuple(int(d) for d in manifest["input"]["shape"][1:])
        self.level_name = manifest.get("engines", {}).get("onnx", {}).get("level_input", "level")
        sizes = spec.get("batch_sizes") or [1]
        if any(int(b) < 1 for b in sizes):
            raise TensorRTError("engines.tensorrt.batch_sizes of %s must be positive, got %s; %s"
                                % (bundle, sizes, RECOMPILE))
        self.profiles = batch_profiles(sizes)


def load_manifest(bundle):
    manifest = read_manifest(bundle)
    if not manifest.get("engines", {}).get("tensorrt"):
        raise TensorRTError("bundle %s (target %s) has no TensorRT entry; %s"
                            % (bundle, manifest.get("target", {}).get("name"), RECOMPILE))
    return manifest


# ---------------------------------------------------------------- building

def build_engine(trt, api, logger, onnx_bytes, source, shapes, precision, workspace_bytes, with_level):
    """Serialized engine (an IHostMemory) of one ONNX file, one optimisation profile per batch range."""
    create_network, set_workspace = api
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        lines = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise ParseError(source, lines or ["(the parser gave no message)"])

    config = builder.create_builder_config()
    set_workspace(trt, config, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 on Ampere and later too

    names = sorted(network.get_input(i).name for i in range(network.num_inputs))
    wanted = sorted([shapes.input_name] + ([shapes.level_name] if with_level else []))
    if names != wanted:
        raise TensorRTError("%s has inputs %s, expected %s; %s" % (source, names, wanted, RECOMPILE))
    for lo, opt, hi in shapes.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(shapes.input_name, (lo,) + shapes.sample, (opt,) + shapes.sample, (hi,) + shapes.sample)
        if with_level:
            profile.set_shape(shapes.level_name, (1,), (1,), (1,))
        config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError("TensorRT could not build an engine from %s (its messages are above)" % source)
    return plan


def _build_mode(trt, sources, shapes, precision, workspace_mb, mode, tmp, log):
    """Build every engine of one mode into tmp; returns {plan relpath: {size, sha256}} in group order."""
    api = BUILDER_API[api_major(trt)]
    logger = trt.Logger(trt.Logger.WARNING)
    files = {}
    for onnx_rel, plan_rel, onnx_bytes in sources:
        log("building %s from %s: %s, batch profiles %s, TensorRT %s"
            % (plan_rel, onnx_rel, precision, " ".join("%d-%d" % (p[0], p[2]) for p in shapes.profiles),
               trt.__version__))
        try:
            plan = build_engine(trt, api, logger, onnx_bytes, onnx_rel, shapes, precision, workspace_mb << 20,
                                with_level=(mode == "if"))
        except TensorRTError:
            raise
        except Exception as e:  # TensorRT's own exceptions (a refused profile shape, ...): one line
            raise TensorRTError("TensorRT failed while building %s from %s: %s: %s"
                                % (plan_rel, onnx_rel, type(e).__name__, " ".join(str(e).split())))
        data = bytes(memoryview(plan))
        dst = os.path.join(tmp, *plan_rel.split("/"))
        if not os.path.isdir(os.path.dirname(dst)):
            os.makedirs(os.path.dirname(dst))
        with open(dst, "wb") as f:  # a private temp dir: made atomic by commit()'s renames
            f.write(data)
        files[plan_rel] = {"size": len(data), "sha256": sha256_bytes(data)}
    return files


def commit(bundle, tmp, record, stale_plans, log):
    """Move the new engines from tmp into the bundle, record last.

    The old engine.json goes first and the new one lands last, so at any moment the bundle has either no
    record or one that matches its engines. Plans of the other mode (stale_plans) go afterwards."""
    record_path = os.path.join(bundle, ENGINE_RECORD)
    if os.path.exists(record_path):
        os.remove(record_path)
    for rel in record["files"]:
        dst = os.path.join(bundle, *rel.split("/"))
        if not os.path.isdir(os.path.dirname(dst)):
            os.makedirs(os.path.dirname(dst))
        os.replace(os.path.join(tmp, *rel.split("/")), dst)
    atomic_write_json(record_path, record)
    for rel in stale_plans:
        path = os.path.join(bundle, *rel.split("/"))
        if rel not in record["files"] and os.path.isfile(path):
            os.remove(path)
            log("removed %s (engine of the previous build)" % rel)


def _sources(bundle, manifest, mode):
    fix = "the bundle is damaged or was edited; copy it again"
    return [(onnx_rel, plan_rel, read_checked_file(bundle, onnx_rel, manifest["files"].get(onnx_rel, {}),
                                                   "manifest.json", fix))
            for onnx_rel, plan_rel in engine_jobs(manifest, mode, bundle)]


def build(bundle, mode="per-group", precision=None, workspace_mb=256, log=print):
    """Build every engine of `mode` into a temp dir inside the bundle, then commit; return the record.

    mode "if" falls back to per-group when TensorRT cannot parse or build the single engine."""
    if mode not in MODES:
        raise TensorRTError("unknown mode %r (choose from: %s)" % (mode, ", ".join(MODES)))
    manifest = load_manifest(bundle)
    spec = manifest["engines"]["tensorrt"]
    precision = precision or spec.get("precision", "fp16")
    if precision not in PRECISIONS:
        raise TensorRTError("unknown precision %r (choose from: %s)" % (precision, ", ".join(PRECISIONS)))
    if workspace_mb < 1:
        raise TensorRTError("--workspace-mb must be at least 1, got %d" % workspace_mb)
    shapes = Shapes(manifest, bundle)
    sources = _sources(bundle, manifest, mode)
    trt = import_tensorrt()
    api_major(trt)  # refuses 9, 11+ and unknown versions before any work
    if mode == "if":
        require_if_support(trt)
    started = time.time()
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=bundle)
    fallback = None
    try:
        try:
            files = _build_mode(trt, sources, shapes, precision, workspace_mb, mode, tmp, log)
        except TensorRTError as e:
            if mode != "if":
                raise
            for line in getattr(e, "lines", []):
                log("%s: %s" % (e.source, line))
            fallback = "the if build failed (%s); built per-group engines instead" % e
            log(fallback)
            mode, sources = "per-group", _sources(bundle, manifest, "per-group")
            files = _build_mode(trt, sources, shapes, precision, workspace_mb, mode, tmp, log)
        record = engine_record(
            mode, precision, str(trt.__version__), gpu_name(), shapes.profiles, workspace_mb, files,
            {rel: manifest["files"][rel]["sha256"] for rel, _, _ in sources}, utc_now(),
            round(time.time() - started, 1), fallback)
        other = [plan for m in MODES for _, plan in _jobs_or_none(manifest, m, bundle)]
        commit(bundle, tmp, record, other, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _jobs_or_none(manifest, mode, bundle):
    try:
        return engine_jobs(manifest, mode, bundle)
    except TensorRTError:
        return []


# ---------------------------------------------------------------- python -m runtime trt-build

def add_arguments(p):
    p.description = __doc__.split("\n\n")[0].split(": ", 1)[1]
    p.epilog, p.formatter_class = __doc__.split("\n\n", 1)[1], argparse.RawDescriptionHelpFormatter
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory compiled for nano-gpu")
    p.add_argument("--mode", choices=MODES, default="per-group",
                   help="per-group: one engine per group (default); if: one engine with every level, kept only "
                        "if trt-selftest shows it faster (falls back to per-group when its build fails)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the manifest's engines.tensorrt.precision")
    p.add_argument("--workspace-mb", type=int, default=256, metavar="N",
                   help="builder workspace limit in MiB (default 256)")


def main(args):
    try:
        record = build(args.bundle, args.mode, args.precision, args.workspace_mb)
    except ParseError as e:
        for line in e.lines:
            print("%s: %s" % (e.source, line), file=sys.stderr)
        raise
    except OSError as e:
        raise TensorRTError("cannot write the engine into %s: %s" % (args.bundle, e))
    size = sum(f["size"] for f in record["files"].values())
    print("wrote %s + %s in %s: %s mode, %s, batch profiles %s, TensorRT %s, GPU %s, %.1f MB, %.0f s" % (
        ", ".join(record["engines"]), ENGINE_RECORD, args.bundle, record["mode"], record["precision"],
        record["profiles"], record["tensorrt_version"], record["gpu"] or "unknown", size / 1e6,
        record["build_seconds"]))
    if record["mode"] == "if":
        print("the If engine may compute every branch on this board: check it with python3 -m runtime trt-selftest "
              "%s --mode if, which keeps it only if it is faster than the per-group engines" % args.bundle)
    return 0

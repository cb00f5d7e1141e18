#!/usr/bin/env python3
"""Build the TensorRT engine(s) of a nano-gpu bundle, on the device that will run them.

  python3 board_scripts/trt_build.py BUNDLE [--mode if|per-group] [--precision fp16|fp32] [--workspace-mb N]

Modes:
  if         (default) one engine, BUNDLE/model.plan, from model.onnx: every level behind ONNX `If`s,
             inputs `input` [N,C,H,W] (N = 1..max batch) and `level` int32 [1].
  per-group  one engine per group, BUNDLE/groups/group{g}.plan, from groups/group{g}.onnx; the runtime runs
             groups 1..k and sums. The fallback when trt_selftest.py shows the `If` ladder is flat.

Writes BUNDLE/engine.json (TensorRT version, GPU, mode, files with sha256). Nothing is replaced unless every
engine built. Needs only TensorRT's Python bindings (JetPack: python3-libnvinfer) and the standard library;
runs on Python 3.6 with TensorRT 8.2 (Jetson Nano, JetPack 4.6.1) and on TensorRT 10.
Expected failures print one line and exit 1.
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

RECORD = "engine.json"
RECORD_SCHEMA, RECORD_SCHEMA_VERSION = "dynn-trt-engine", 1
BUNDLE_SCHEMA, BUNDLE_SCHEMA_VERSION = "dynn-bundle", 1
MODES = ("if", "per-group")
PRECISIONS = ("fp16", "fp32")
TMP_PREFIX = ".trt-build-"


class BuildError(Exception):
    """Expected failure: the message says what went wrong and what to do."""


class ParseError(BuildError):
    """The ONNX parser refused a file; `lines` holds the parser's own messages."""

    def __init__(self, source, lines):
        BuildError.__init__(self, "TensorRT's ONNX parser rejected %s (%d error%s above)"
                            % (source, len(lines), "" if len(lines) == 1 else "s"))
        self.source, self.lines = source, lines


# ---------------------------------------------------------------- TensorRT version differences

def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise BuildError("the TensorRT Python package `tensorrt` is not importable (%s): on a Jetson install "
                         "JetPack's python3-libnvinfer (sudo apt-get install python3-libnvinfer) and run this "
                         "with the system python3 (3.6 on JetPack 4.6); elsewhere `pip install tensorrt`" % e)
    return tensorrt


def trt_major(trt):
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        raise BuildError("cannot read the TensorRT version %r" % (trt.__version__,))


def create_network_trt8(trt, builder):
    """TensorRT 8: the ONNX parser needs an explicit-batch network, asked for with a flag."""
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def create_network_trt10(trt, builder):
    """TensorRT 10: every network is explicit-batch; the flag is deprecated."""
    return builder.create_network(0)


def set_workspace_trt8(trt, config, nbytes):
    """TensorRT 8.2: max_workspace_size (set_memory_pool_limit only arrives in 8.4)."""
    config.max_workspace_size = nbytes


def set_workspace_trt10(trt, config, nbytes):
    """TensorRT 10: max_workspace_size is gone; the workspace is a memory pool."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)


def version_api(trt):
    """(create_network, set_workspace) for the installed TensorRT."""
    major = trt_major(trt)
    if major < 8:
        raise BuildError("TensorRT %s is too old: this builder supports 8.2 (JetPack 4.6.1) and 10.x"
                         % trt.__version__)
    if major < 10:
        return create_network_trt8, set_workspace_trt8
    return create_network_trt10, set_workspace_trt10


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def gpu_name():
    """The CUDA device name through pycuda or cuda-python, or None when neither can tell."""
    try:
        import pycuda.driver as cuda
        cuda.init()
        return str(cuda.Device(0).name())
    except Exception:  # optional information: any failure just means "unknown"
        pass
    try:
        cudart = _import_cudart()
        err, prop = cudart.cudaGetDeviceProperties(0)
        if err == cudart.cudaError_t.cudaSuccess:
            name = prop.name
            if isinstance(name, bytes):
                name = name.split(b"\0")[0].decode("utf-8", "replace")
            return str(name)
    except Exception:
        pass
    return None


# ---------------------------------------------------------------- the bundle

def _fs_path(bundle, rel):
    """Path of a bundle-relative name (always '/'-separated), refusing names that leave the bundle."""
    if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise BuildError("manifest.json names a file outside the bundle: %r" % rel)
    return os.path.join(bundle, *rel.split("/"))


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def load_manifest(bundle):
    path = os.path.join(bundle, "manifest.json")
    if not os.path.isfile(path):
        raise BuildError("%s is not a bundle: it has no manifest.json" % bundle)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise BuildError("%s is not valid JSON (%s): copy the bundle again" % (path, e))
    if manifest.get("schema") != BUNDLE_SCHEMA:
        raise BuildError("%s is not a dynn bundle manifest (schema %r)" % (path, manifest.get("schema")))
    if int(manifest.get("schema_version", 0)) > BUNDLE_SCHEMA_VERSION:
        raise BuildError("bundle schema_version %s is newer than this builder understands (%d): update "
                         "board_scripts/" % (manifest.get("schema_version"), BUNDLE_SCHEMA_VERSION))
    if not manifest.get("engines", {}).get("tensorrt"):
        raise BuildError("bundle %s (target %s) has no TensorRT entry: compile it for nano-gpu on the host"
                         % (bundle, manifest.get("target", {}).get("name")))
    return manifest


def read_verified(bundle, manifest, rel):
    """The bytes of bundle file `rel`, after checking them against manifest.json's size and sha256."""
    entry = manifest.get("files", {}).get(rel)
    if entry is None:
        raise BuildError("%s is not listed in manifest.json `files`: the bundle is incomplete" % rel)
    path = _fs_path(bundle, rel)
    if not os.path.isfile(path):
        raise BuildError("%s is missing from %s: copy the bundle again" % (rel, bundle))
    with open(path, "rb") as f:
        data = f.read()
    if len(data) != entry.get("size") or _sha256(data) != entry.get("sha256"):
        raise BuildError("%s does not match manifest.json (size or sha256): the bundle is damaged or was "
                         "edited; copy it again" % rel)
    return data


def engine_jobs(manifest, mode):
    """[(onnx relpath, plan relpath)] in group order."""
    spec = manifest["engines"]["tensorrt"]
    if mode == "if":
        return [(spec.get("onnx", "model.onnx"), spec.get("plan", "model.plan"))]
    groups = spec.get("group_onnx") or []
    if not groups:
        raise BuildError("manifest.json lists no per-group ONNX files (engines.tensorrt.group_onnx): "
                         "--mode per-group needs a bundle compiled for nano-gpu")
    return [(rel, os.path.splitext(rel)[0] + ".plan") for rel in groups]


class Shapes(object):
    """What the optimisation profile needs, read from the manifest."""

    def __init__(self, manifest):
        spec = manifest["engines"]["tensorrt"]
        self.input_name = manifest["input"]["name"]
        self.sample = tuple(int(d) for d in manifest["input"]["shape"][1:])
        self.level_name = manifest.get("engines", {}).get("onnx", {}).get("level_input", "level")
        self.batch_max = max(int(b) for b in (spec.get("batch_sizes") or [1]))
        if self.batch_max < 1:
            raise BuildError("engines.tensorrt.batch_sizes must hold positive batch sizes")


# ---------------------------------------------------------------- building

def build_engine(trt, api, logger, onnx_bytes, source, shapes, precision, workspace_bytes, with_level):
    """Serialized engine (an IHostMemory) of one ONNX file."""
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

    profile = builder.create_optimization_profile()
    full = (shapes.batch_max,) + shapes.sample
    seen = set()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        seen.add(name)
        if name == shapes.input_name:
            profile.set_shape(name, (1,) + shapes.sample, full, full)
        elif with_level and name == shapes.level_name:
            profile.set_shape(name, (1,), (1,), (1,))
        else:
            raise BuildError("%s has an unexpected input %r" % (source, name))
    wanted = {shapes.input_name, shapes.level_name} if with_level else {shapes.input_name}
    if seen != wanted:
        raise BuildError("%s has inputs %s, expected %s" % (source, sorted(seen), sorted(wanted)))
    config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT could not build an engine from %s (its messages are above)" % source)
    return plan


def _write(path, data):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_record(bundle):
    try:
        with open(os.path.join(bundle, RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def commit(bundle, tmp, record, log):
    """Move the new engines and their record from `tmp` into the bundle.

    The old engine.json goes first and the new one lands last, so at any moment the bundle either has no
    record or a record that matches its engines. Engines of the previous record that the new one does not
    list (the other mode) are removed afterwards."""
    old = _read_record(bundle)
    record_path = os.path.join(bundle, RECORD)
    if os.path.exists(record_path):
        os.remove(record_path)
    for rel in record["files"]:
        dst = _fs_path(bundle, rel)
        if not os.path.isdir(os.path.dirname(dst)):
            os.makedirs(os.path.dirname(dst))
        os.replace(_fs_path(tmp, rel), dst)
    os.replace(os.path.join(tmp, RECORD), record_path)
    for rel in sorted(set((old or {}).get("files", {})) - set(record["files"])):
        if rel.endswith(".plan"):
            try:
                os.remove(_fs_path(bundle, rel))
                log("removed %s (engine of the previous %s build)" % (rel, old.get("mode")))
            except (OSError, BuildError):
                pass


def build(bundle, mode="if", precision=None, workspace_mb=256, log=print):
    """Build every engine of `mode` into a temp dir inside the bundle, then commit; return the record."""
    if mode not in MODES:
        raise BuildError("unknown mode %r (choose from: %s)" % (mode, ", ".join(MODES)))
    manifest = load_manifest(bundle)
    spec = manifest["engines"]["tensorrt"]
    precision = precision or spec.get("precision", "fp16")
    if precision not in PRECISIONS:
        raise BuildError("unknown precision %r (choose from: %s)" % (precision, ", ".join(PRECISIONS)))
    if workspace_mb < 1:
        raise BuildError("--workspace-mb must be at least 1")
    shapes = Shapes(manifest)
    jobs = engine_jobs(manifest, mode)
    sources = [(onnx_rel, plan_rel, read_verified(bundle, manifest, onnx_rel)) for onnx_rel, plan_rel in jobs]

    trt = import_tensorrt()
    api = version_api(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    started = time.time()
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=bundle)
    try:
        files, engines = {}, []
        for onnx_rel, plan_rel, onnx_bytes in sources:
            log("building %s from %s: %s, batch 1..%d, TensorRT %s"
                % (plan_rel, onnx_rel, precision, shapes.batch_max, trt.__version__))
            plan = build_engine(trt, api, logger, onnx_bytes, onnx_rel, shapes, precision,
                                workspace_mb << 20, with_level=(mode == "if"))
            data = bytes(memoryview(plan))
            _write(_fs_path(tmp, plan_rel), data)
            files[plan_rel] = {"size": len(data), "sha256": _sha256(data)}
            engines.append(plan_rel)
        record = {
            "schema": RECORD_SCHEMA, "schema_version": RECORD_SCHEMA_VERSION,
            "mode": mode, "precision": precision,
            "tensorrt_version": str(trt.__version__), "gpu": gpu_name(),
            "batch_max": shapes.batch_max, "workspace_mb": workspace_mb,
            "engines": engines,
            "files": files,
            "sources": {rel: manifest["files"][rel]["sha256"] for rel, _ in jobs},
            "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "build_seconds": round(time.time() - started, 1),
        }
        _write(os.path.join(tmp, RECORD), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        commit(bundle, tmp, record, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def build_parser():
    p = argparse.ArgumentParser(prog="trt_build.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory compiled for nano-gpu")
    p.add_argument("--mode", choices=MODES, default="if",
                   help="if: one engine with every level (default); per-group: one engine per group")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the manifest's engines.tensorrt.precision")
    p.add_argument("--workspace-mb", type=int, default=256, metavar="N",
                   help="builder workspace limit in MiB (default 256)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        record = build(args.bundle, args.mode, args.precision, args.workspace_mb)
    except ParseError as e:
        for line in e.lines:
            print("%s: %s" % (e.source, line), file=sys.stderr)
        print("error: %s" % e, file=sys.stderr)
        return 1
    except BuildError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("error: cannot write the engine into %s: %s" % (args.bundle, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the bundle was left as it was", file=sys.stderr)
        return 130
    size = sum(f["size"] for f in record["files"].values())
    print("wrote %s + %s in %s: %s mode, %s, batch 1..%d, TensorRT %s, GPU %s, %.1f MB, %.0f s" % (
        ", ".join(record["engines"]), RECORD, args.bundle, record["mode"], record["precision"],
        record["batch_max"], record["tensorrt_version"], record["gpu"] or "unknown", size / 1e6,
        record["build_seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The TensorRT path, as far as it can be checked without TensorRT or a GPU.

The board-side code (board_scripts/trt_build.py, board_scripts/trt_selftest.py,
runtime/trt/backend.py) must stay Python 3.6 and free of host-only packages; the builder's
TensorRT 8.2 / 10 dispatch, its all-or-nothing writing and the backend's level arithmetic are exercised
against a small fake `tensorrt` (and a fake CUDA memory for the backend). Real engines are checked only
on a board, by trt_selftest.py.
"""
import ast
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "board_scripts")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if SCRIPTS not in sys.path:  # last: board_scripts/profile.py must not shadow the stdlib's `profile`
    sys.path.append(SCRIPTS)

import trt_build  # noqa: E402
import trt_selftest  # noqa: E402
from runtime.backends import tensorrt_backend  # noqa: E402
from runtime.trt.backend import TensorRTBackend, TensorRTError  # noqa: E402

FILES = [os.path.join(ROOT, "board_scripts", "trt_build.py"),
         os.path.join(ROOT, "board_scripts", "trt_selftest.py"),
         os.path.join(ROOT, "runtime", "backends", "tensorrt_backend.py")]
VERMIN = os.path.join(ROOT, ".venv", "bin", "vermin")
PY36 = next((p for p in ["/usr/bin/python3.6", "/root/.pyenv/versions/3.6.15/bin/python3.6"]
             if os.path.exists(p)), None)
BLOCK = "import sys\nfor m in ('tensorrt', 'pycuda', 'cuda', 'torch', 'onnx', 'compile'):\n    sys.modules[m] = None\n"

GROUPS, CLASSES, SCALE = 3, 10, [1.0, 0.5, 1.0 / 3]


# ---------------------------------------------------------------- (a), (b): Python 3.6, no host packages

@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_python36_syntax_per_vermin(path):
    if not os.path.exists(VERMIN):
        pytest.skip("vermin is not installed in .venv")
    r = subprocess.run([VERMIN, "-q", "--no-tips", "-t=3.6-", "--eval-annotations", "--violations", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert r.stdout.strip() == "", r.stdout


@pytest.mark.skipif(PY36 is None, reason="no python3.6 interpreter here")
def test_compiles_under_real_python36():
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')\n"
    r = subprocess.run([PY36, "-c", code] + FILES, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_imports_without_tensorrt_cuda_torch_onnx():
    code = BLOCK + ("sys.path[:0] = [%r, %r]\nimport runtime.trt.backend\nimport trt_build\n"
                    "import trt_selftest\nprint('ok')\n" % (ROOT, SCRIPTS))
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_never_imports_host_packages(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    banned = {"torch", "onnx", "onnxruntime", "compile"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in banned]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in banned:
                found.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module"):
            found += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.split(".")[0] in banned]
    assert found == []
    if path.endswith("tensorrt_backend.py"):  # tensorrt itself only inside functions
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top
                                                          if isinstance(n, ast.ImportFrom)]
        assert not any(x.split(".")[0] in ("tensorrt", "pycuda", "cuda") for x in names)


# ---------------------------------------------------------------- a bundle with fake ONNX files

def _fake_onnx(inputs, plan):
    """What the fake parser reads: the network's inputs and what its engine will compute."""
    return json.dumps({"inputs": inputs, "plan": plan}, sort_keys=True).encode()


def expected(x, level):
    """What the fake engines compute: group g contributes g * (the first CLASSES input values)."""
    return SCALE[level - 1] * sum(g * x.reshape(len(x), -1)[:, :CLASSES] for g in range(1, level + 1))


def make_bundle(path, batch_sizes=(1, 4), precision="fp16", golden_error=0.0):
    os.makedirs(os.path.join(path, "groups"))
    blobs = {"model.onnx": _fake_onnx(["input", "level"], {"kind": "if", "scale": SCALE})}
    for g in range(1, GROUPS + 1):
        blobs["groups/group%d.onnx" % g] = _fake_onnx(["input"], {"kind": "group", "g": g})
    x = np.random.RandomState(1).randn(6, 3, 4, 4).astype(np.float32)
    golden = {"input": x}
    for k in range(1, GROUPS + 1):
        golden["level%d" % k] = expected(x, k).astype(np.float32) + (golden_error if k == 2 else 0.0)
    buf = __import__("io").BytesIO()
    np.savez(buf, **golden)
    blobs["golden.npz"] = buf.getvalue()
    files = {}
    for rel, data in blobs.items():
        with open(os.path.join(path, *rel.split("/")), "wb") as f:
            f.write(data)
        files[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "schema": "dynn-bundle", "schema_version": 1, "target": {"name": "nano-gpu"},
        "model": {"groups": GROUPS, "num_classes": CLASSES, "level_scale": SCALE},
        "levels": [{"level": k, "macs": 1000 * k} for k in range(1, GROUPS + 1)],
        "golden": {"file": "golden.npz", "atol": 1e-4, "rtol": 1e-4, "atol_fp16": 0.05},
        "input": {"name": "input", "shape": [None, 3, 4, 4], "dtype": "float32"},
        "output": {"name": "logits", "shape": [None, CLASSES], "dtype": "float32"},
        "engines": {"onnx": {"file": "model.onnx", "level_input": "level", "level_dtype": "int32"},
                    "tensorrt": {"onnx": "model.onnx", "precision": precision, "batch_sizes": list(batch_sizes),
                                 "group_onnx": ["groups/group%d.onnx" % g for g in range(1, GROUPS + 1)],
                                 "plan": "model.plan", "record": "engine.json"}},
        "files": files,
    }
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


@pytest.fixture
def bundle(tmp_path):
    path = str(tmp_path / "bundle")
    make_bundle(path)
    return path


def engine_files(bundle):
    """Every engine file and engine.json in the bundle, and any leftover build directory."""
    out = []
    for d, dirs, files in os.walk(bundle):
        out += [os.path.relpath(os.path.join(d, x), bundle) for x in dirs if x.startswith(trt_build.TMP_PREFIX)]
        out += [os.path.relpath(os.path.join(d, x), bundle).replace(os.sep, "/") for x in files
                if x.endswith(".plan") or x == "engine.json"]
    return sorted(out)


def snapshot(bundle):
    snap = {}
    for rel in engine_files(bundle):
        with open(os.path.join(bundle, rel), "rb") as f:
            snap[rel] = f.read()
    return snap


# ---------------------------------------------------------------- (c): no tensorrt installed

@pytest.mark.parametrize("python", [sys.executable, PY36], ids=["venv", "python3.6"])
def test_build_without_tensorrt_says_what_to_install(bundle, python):
    if python is None:
        pytest.skip("no python3.6 interpreter here")
    code = BLOCK + "sys.argv = ['trt_build.py', %r]\nimport runpy\nrunpy.run_path(%r, run_name='__main__')\n" % (
        bundle, os.path.join(SCRIPTS, "trt_build.py"))
    r = subprocess.run([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "tensorrt" in lines[0] and "python3-libnvinfer" in lines[0]
    assert engine_files(bundle) == []


def test_backend_without_engine_says_how_to_build(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    with pytest.raises(TensorRTError) as e:
        TensorRTBackend(bundle, manifest)
    assert str(e.value) == ("no TensorRT engine in %s; build it on the device with: "
                            "python3 board_scripts/trt_build.py %s" % (bundle, bundle))


# ---------------------------------------------------------------- (d): a fake tensorrt

def fake_tensorrt(version, fail_on_build=None, parse_errors=None):
    """Just enough of TensorRT's Python API for trt_build and the backend, per major version:
    8.x has EXPLICIT_BATCH + max_workspace_size and no memory pools; 10.x the reverse."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log = []  # (call, args) in order
    trt.builds = 0
    trt10 = int(version.split(".")[0]) >= 10

    class Logger(object):
        WARNING = 2

        def __init__(self, severity):
            pass

    class BuilderFlag(object):
        FP16, TF32 = "FP16", "TF32"

    class Tensor(object):
        def __init__(self, name):
            self.name = name

    class Network(object):
        def __init__(self, flags):
            self.flags, self.inputs, self.plan = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser(object):
        def __init__(self, network, logger):
            self.network, self.num_errors = network, len(parse_errors or [])

        def parse(self, data):
            if parse_errors:
                return False
            doc = json.loads(data.decode())
            self.network.inputs = [Tensor(n) for n in doc["inputs"]]
            self.network.plan = doc["plan"]
            return True

        def get_error(self, i):
            return parse_errors[i]

    class Profile(object):
        def set_shape(self, name, lo, opt, hi):
            trt.log.append(("set_shape", (name, tuple(lo), tuple(opt), tuple(hi))))

    class Config8(object):
        __slots__ = ("max_workspace_size",)

        def set_flag(self, flag):
            trt.log.append(("set_flag", flag))

        def clear_flag(self, flag):
            trt.log.append(("clear_flag", flag))

        def add_optimization_profile(self, p):
            pass

    class Config10(object):
        __slots__ = ()
        set_flag, clear_flag, add_optimization_profile = (Config8.set_flag, Config8.clear_flag,
                                                          Config8.add_optimization_profile)

        def set_memory_pool_limit(self, pool, nbytes):
            trt.log.append(("set_memory_pool_limit", (pool, nbytes)))

    class Builder(object):
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.log.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            self.config = Config10() if trt10 else Config8()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds += 1
            if not trt10:
                trt.log.append(("max_workspace_size", config.max_workspace_size))
            if trt.builds == fail_on_build:
                return None
            return json.dumps(network.plan).encode()

    # ---- runtime side: one fake engine answering both the 8.x and the 10.x calls
    class DataType(object):
        FLOAT, INT32 = "float32", "int32"

    class TensorIOMode(object):
        INPUT, OUTPUT = "in", "out"

    class Engine(object):
        def __init__(self, plan):
            self.plan = plan
            self.io = [("input", True, DataType.FLOAT, (-1, 3, 4, 4))]
            if plan["kind"] == "if":
                self.io.append(("level", True, DataType.INT32, (1,)))
            self.io.append(("logits", False, DataType.FLOAT, (-1, CLASSES)))
            self.num_bindings = self.num_io_tensors = len(self.io)

        def _io(self, key):
            return next(t for i, t in enumerate(self.io) if key in (i, t[0]))

        def create_execution_context(self):
            return Context(self)

        # 8.x
        def get_binding_name(self, i):
            return self.io[i][0]

        def binding_is_input(self, i):
            return self.io[i][1]

        def is_shape_binding(self, i):
            return False

        def get_binding_dtype(self, i):
            return self.io[i][2]

        def get_binding_shape(self, i):
            return self.io[i][3]

        def get_profile_shape(self, profile, i):
            return [(1, 3, 4, 4), (4, 3, 4, 4), (4, 3, 4, 4)]

        # 10.x
        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if self._io(name)[1] else TensorIOMode.OUTPUT

        def is_shape_inference_io(self, name):
            return False

        def get_tensor_dtype(self, name):
            return self._io(name)[2]

        def get_tensor_shape(self, name):
            return self._io(name)[3]

        def get_tensor_profile_shape(self, name, profile):
            return self.get_profile_shape(profile, 0)

    class Context(object):
        def __init__(self, engine):
            self.engine, self.batch, self.addr = engine, None, {}

        def _compute(self):
            mem = trt.device_memory
            x = mem.read(self.addr["input"], np.float32, (self.batch, 48))[:, :CLASSES]
            plan = self.engine.plan
            if plan["kind"] == "group":
                y = plan["g"] * x
            else:
                k = int(mem.read(self.addr["level"], np.int32, (1,))[0])
                y = plan["scale"][k - 1] * sum(g * x for g in range(1, k + 1))
            mem.write(self.addr["logits"], y.astype(np.float32))
            return True

        def set_binding_shape(self, i, shape):
            assert not trt10
            trt.log.append(("set_binding_shape", (i, tuple(shape))))
            self.batch = shape[0]
            return True

        def get_binding_shape(self, i):
            return (self.batch, CLASSES) if self.engine.io[i][0] == "logits" else self.engine.io[i][3]

        def execute_async_v2(self, bindings, stream_handle):
            assert not trt10
            trt.log.append(("execute_async_v2", self.engine.plan.get("g")))
            self.addr = {t[0]: p for t, p in zip(self.engine.io, bindings)}
            return self._compute()

        def set_input_shape(self, name, shape):
            assert trt10
            trt.log.append(("set_input_shape", (name, tuple(shape))))
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name):
            return (self.batch, CLASSES) if name == "logits" else self.engine._io(name)[3]

        def set_tensor_address(self, name, ptr):
            assert trt10
            self.addr[name] = ptr

        def execute_async_v3(self, stream_handle):
            assert trt10
            trt.log.append(("execute_async_v3", self.engine.plan.get("g")))
            return self._compute()

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(bytes(data).decode()))

    def nptype(dtype):
        return np.dtype(dtype).type

    trt.Logger, trt.BuilderFlag, trt.OnnxParser, trt.Builder = Logger, BuilderFlag, OnnxParser, Builder
    trt.DataType, trt.Runtime, trt.nptype = DataType, Runtime, nptype
    if trt10:
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.TensorIOMode = TensorIOMode
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    return trt


class FakeCuda(object):
    """Device memory as numpy buffers keyed by fake pointers."""

    def __init__(self):
        self.buffers, self.closed = {}, False

    @contextlib.contextmanager
    def active(self):
        yield

    def malloc(self, nbytes):
        ptr = 0x1000 * (len(self.buffers) + 1)
        self.buffers[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def read(self, ptr, dtype, shape):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.buffers[ptr][:n].view(dtype).reshape(shape)

    def write(self, ptr, arr):
        raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
        self.buffers[ptr][:raw.size] = raw

    def host_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def htod(self, ptr, host):
        self.write(ptr, host)

    def dtoh(self, host, ptr):
        host[...] = self.read(ptr, host.dtype, host.shape)

    def sync(self):
        pass

    def stream_handle(self):
        return 0

    def close(self):
        self.closed = True


@pytest.fixture
def use_trt(monkeypatch):
    """Install a fake tensorrt (and block real CUDA packages); returns a function version -> fake."""
    for name in ("pycuda", "pycuda.driver", "cuda"):
        monkeypatch.setitem(sys.modules, name, None)

    def install(version, **kw):
        trt = fake_tensorrt(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt
    return install


def read_record(bundle):
    with open(os.path.join(bundle, "engine.json")) as f:
        return json.load(f)


def test_trt82_uses_explicit_batch_and_max_workspace_size(bundle, use_trt):
    trt = use_trt("8.2.1.8")
    assert trt_build.main([bundle, "--workspace-mb", "64"]) == 0
    calls = dict(trt.log)
    assert calls["create_network"] == 1 << 0  # 1 << EXPLICIT_BATCH
    assert calls["max_workspace_size"] == 64 << 20
    assert "set_memory_pool_limit" not in calls
    assert ("set_flag", "FP16") in trt.log
    assert ("set_shape", ("input", (1, 3, 4, 4), (4, 3, 4, 4), (4, 3, 4, 4))) in trt.log
    assert ("set_shape", ("level", (1,), (1,), (1,))) in trt.log
    rec = read_record(bundle)
    assert (rec["schema"], rec["mode"], rec["tensorrt_version"], rec["batch_max"]) == (
        "dynn-trt-engine", "if", "8.2.1.8", 4)
    with open(os.path.join(bundle, "model.plan"), "rb") as f:
        plan = f.read()
    assert rec["files"] == {"model.plan": {"size": len(plan), "sha256": hashlib.sha256(plan).hexdigest()}}
    assert rec["gpu"] is None and engine_files(bundle) == ["engine.json", "model.plan"]


def test_trt10_uses_memory_pool_and_no_flag(bundle, use_trt):
    trt = use_trt("10.0.1")
    assert trt_build.main([bundle, "--mode", "per-group", "--precision", "fp32", "--workspace-mb", "32"]) == 0
    assert ("create_network", 0) in trt.log
    assert ("set_memory_pool_limit", ("WORKSPACE", 32 << 20)) in trt.log
    assert "max_workspace_size" not in dict(trt.log)
    assert ("clear_flag", "TF32") in trt.log and ("set_flag", "FP16") not in trt.log
    assert trt.builds == GROUPS
    rec = read_record(bundle)
    assert rec["engines"] == ["groups/group%d.plan" % g for g in range(1, GROUPS + 1)]
    assert sorted(rec["files"]) == rec["engines"] and rec["precision"] == "fp32"


def test_version_dispatch_is_by_major_version(use_trt):
    assert trt_build.version_api(fake_tensorrt("8.2.1.8")) == (trt_build.create_network_trt8,
                                                                 trt_build.set_workspace_trt8)
    assert trt_build.version_api(fake_tensorrt("10.0.1")) == (trt_build.create_network_trt10,
                                                                trt_build.set_workspace_trt10)
    with pytest.raises(trt_build.BuildError):
        trt_build.version_api(fake_tensorrt("7.1.3"))


def test_failed_second_group_leaves_nothing_behind(bundle, use_trt, capsys):
    trt = use_trt("8.2.1.8", fail_on_build=2)
    assert trt_build.main([bundle, "--mode", "per-group"]) == 1
    assert trt.builds == 2
    assert engine_files(bundle) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "groups/group2.onnx" in err[0]


def test_failed_build_keeps_the_good_engine(bundle, use_trt):
    use_trt("8.2.1.8")
    assert trt_build.main([bundle]) == 0
    good = snapshot(bundle)
    assert sorted(good) == ["engine.json", "model.plan"]
    use_trt("8.2.1.8", fail_on_build=2)
    assert trt_build.main([bundle, "--mode", "per-group"]) == 1
    assert snapshot(bundle) == good


def test_rebuild_in_other_mode_replaces_the_old_engine(bundle, use_trt):
    use_trt("8.2.1.8")
    assert trt_build.main([bundle]) == 0
    assert trt_build.main([bundle, "--mode", "per-group"]) == 0
    assert engine_files(bundle) == ["engine.json"] + ["groups/group%d.plan" % g for g in range(1, GROUPS + 1)]


def test_parser_errors_one_per_line(bundle, use_trt, capsys):
    use_trt("8.2.1.8", parse_errors=["In node 3 (importIf): bad\nbranch", "second problem"])
    assert trt_build.main([bundle]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["model.onnx: In node 3 (importIf): bad branch", "model.onnx: second problem",
                   "error: TensorRT's ONNX parser rejected model.onnx (2 errors above)"]
    assert engine_files(bundle) == []


def test_onnx_checksum_is_verified_before_parsing(bundle, use_trt, capsys):
    trt = use_trt("8.2.1.8")
    with open(os.path.join(bundle, "groups", "group3.onnx"), "ab") as f:
        f.write(b" ")
    assert trt_build.main([bundle, "--mode", "per-group"]) == 1
    assert trt.builds == 0 and engine_files(bundle) == []
    assert "groups/group3.onnx does not match manifest.json" in capsys.readouterr().err


# ---------------------------------------------------------------- the backend against the fakes

def fake_cuda(monkeypatch):
    """Route the backend's CUDA memory to a FakeCuda that the current fake tensorrt's engines read."""
    made = []

    def open_cuda(major):
        made.append(FakeCuda())
        sys.modules["tensorrt"].device_memory = made[-1]
        return made[-1]
    monkeypatch.setattr(tensorrt_backend, "open_cuda", open_cuda)
    return made


def open_backend(bundle, monkeypatch):
    made = fake_cuda(monkeypatch)
    with open(os.path.join(bundle, "manifest.json")) as f:
        return TensorRTBackend(bundle, json.load(f)), made[-1]


@pytest.mark.parametrize("version,execute", [("8.2.1.8", "execute_async_v2"), ("10.0.1", "execute_async_v3")])
@pytest.mark.parametrize("mode", ["if", "per-group"])
def test_backend_levels_batches_and_version_calls(bundle, use_trt, monkeypatch, version, execute, mode):
    trt = use_trt(version)
    assert trt_build.main([bundle, "--mode", mode]) == 0
    backend, mem = open_backend(bundle, monkeypatch)
    assert (backend.name, backend.batch_sizes, backend.max_batch, backend.mode) == ("tensorrt", None, 4, mode)
    x = np.random.RandomState(0).randn(9, 3, 4, 4).astype(np.float32)  # 9 > max_batch: 3 chunks
    del trt.log[:]
    for level in range(1, GROUPS + 1):
        np.testing.assert_allclose(backend.run_level(x, level), expected(x, level), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(backend.run_level(x[:1], level), expected(x[:1], level), rtol=1e-6, atol=1e-6)
    runs = [a for c, a in trt.log if c == execute]
    assert {c for c, _ in trt.log} <= {execute, "set_binding_shape", "set_input_shape"}
    if mode == "per-group":  # level k runs exactly groups 1..k
        assert runs[:3] == [1, 1, 1] and runs[-GROUPS:] == list(range(1, GROUPS + 1))
    with pytest.raises(ValueError):
        backend.run_level(x, GROUPS + 1)
    backend.close()
    backend.close()
    assert mem.closed


def test_backend_refuses_tampered_or_foreign_engine(bundle, use_trt, monkeypatch):
    use_trt("8.2.1.8")
    assert trt_build.main([bundle]) == 0
    use_trt("10.0.1")
    with pytest.raises(TensorRTError, match="built with TensorRT 8.2.1.8, this is TensorRT 10.0.1"):
        open_backend(bundle, monkeypatch)
    with open(os.path.join(bundle, "model.plan"), "ab") as f:
        f.write(b"x")
    with pytest.raises(TensorRTError, match="model.plan does not match engine.json"):
        open_backend(bundle, monkeypatch)


# ---------------------------------------------------------------- trt_selftest, end to end on the fakes

def test_selftest_builds_checks_and_compares_modes(bundle, use_trt, monkeypatch, capsys):
    use_trt("8.2.1.8")
    fake_cuda(monkeypatch)
    fast = ["--runs", "3", "--warmup", "1"]
    assert trt_selftest.main([bundle] + fast) == 0
    out = capsys.readouterr().out
    assert "building the TensorRT engine (no engine yet): if mode" in out
    assert "outputs: all 3 levels match golden.npz" in out
    assert trt_selftest.main([bundle, "--mode", "per-group", "--flat-ratio", "1e9"] + fast) == 0
    out = capsys.readouterr().out
    assert "ladder is flat even with one engine per group" in out and "modes compared" in out
    with open(os.path.join(bundle, "trt_selftest.json")) as f:
        runs = json.load(f)["runs"]
    assert sorted(runs) == ["if", "per-group"] and all(r["outputs_ok"] for r in runs.values())
    assert [r["level"] for r in runs["if"]["levels"]] == [1, 2, 3]
    assert set(runs["per-group"]["latency_ms"]["3"]) == {"1", "4"}


def test_selftest_fails_on_mismatch_and_says_flat(tmp_path, use_trt, monkeypatch, capsys):
    path = str(tmp_path / "b")
    make_bundle(path, golden_error=0.5)
    use_trt("10.0.1")
    fake_cuda(monkeypatch)
    assert trt_selftest.main([path, "--runs", "3", "--warmup", "0", "--flat-ratio", "1e9"]) == 1
    cap = capsys.readouterr()
    assert "ladder is flat: rebuild with --mode per-group" in cap.out
    assert cap.err.strip() == "error: level 2 differs from golden.npz beyond tolerance"

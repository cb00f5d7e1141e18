"""The TensorRT package (runtime/trt/), as far as it can be checked without TensorRT or a GPU.

The code must stay Python 3.6 and free of host-only packages. Everything else runs against fakes that
behave like the real thing where it matters:
- a fake `tensorrt` (8.x or 10.x call set) whose parser and engines run the bundle's REAL ONNX files with
  onnxruntime, so outputs are checked against the compiler's golden.npz, not against a formula of the fake;
- a recording fake pycuda and a fake cuda-python over one fake device: every copy must go host->device
  into a device allocation or device->host into pinned host memory, pycuda calls only inside a pushed
  context; a swapped direction or an unbalanced push/pop fails the tests.
Real engines are checked only on a board, by `python -m runtime trt-selftest`.
"""
import ast
import ctypes
import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runtime.bundle import ENGINE_RECORD, atomic_write_json  # noqa: E402
from runtime.errors import RuntimeUserError  # noqa: E402
from runtime.trt import TensorRTError, builder, cuda as trt_cuda, selftest  # noqa: E402
from runtime.trt.backend import TensorRTBackend  # noqa: E402

TRT_DIR = os.path.join(ROOT, "runtime", "trt")
FILES = sorted(os.path.join(TRT_DIR, f) for f in os.listdir(TRT_DIR) if f.endswith(".py"))
SHIPPED = os.path.join(ROOT, "artifacts", "nano-gpu")
VERMIN = os.path.join(ROOT, ".venv", "bin", "vermin")
PY36 = os.path.join(ROOT, ".venv-py36", "bin", "python")
BLOCK = "import sys\nfor m in ('tensorrt', 'pycuda', 'cuda', 'torch', 'onnx', 'compile'):\n    sys.modules[m] = None\n"


# ---------------------------------------------------------------- Python 3.6, no host packages

@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_python36_syntax_per_vermin(path):
    if not os.path.exists(VERMIN):
        pytest.skip("vermin is not installed in .venv")
    r = subprocess.run([VERMIN, "-q", "--no-tips", "-t=3.6-", "--eval-annotations", "--violations", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert r.stdout.strip() == "", r.stdout


@pytest.mark.skipif(not os.path.exists(PY36), reason="no .venv-py36 here (make test creates it)")
def test_package_imports_under_real_python36_without_tensorrt_or_cuda():
    code = BLOCK + "sys.path.insert(0, %r)\nimport runtime.trt.backend, runtime.trt.builder, runtime.trt.selftest\n" \
                   "print('ok')\n" % ROOT
    r = subprocess.run([PY36, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120, cwd="/")
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_never_imports_host_packages_and_engine_bindings_only_inside_functions(path):
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
    assert found == []
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(x.split(".")[0] in ("tensorrt", "pycuda", "cuda") for x in names)
    assert "sys.path" not in open(path).read()


# ---------------------------------------------------------------- a fake device, a recording pycuda and cudart

class FakeDevice(object):
    """Device and pinned host memory as ctypes buffers, a pycuda context stack and a log of copies."""

    def __init__(self):
        self.device, self.host, self.freed, self.log, self.stack = {}, {}, set(), [], []
        self.detached, self.fail_alloc = False, None

    def _alloc(self, table, n):
        buf = ctypes.create_string_buffer(max(int(n), 1))
        table[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    @staticmethod
    def _inside(table, addr, n):
        return any(a <= addr and addr + n <= a + ctypes.sizeof(b) for a, b in table.items())

    def is_device(self, addr, n):
        return self._inside(self.device, int(addr), n)

    def is_host(self, addr, n):
        return self._inside(self.host, int(addr), n)

    def view(self, addr, dtype, shape):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        assert self.is_device(addr, n), "an engine was given a pointer that is not device memory"
        return np.frombuffer((ctypes.c_char * n).from_address(int(addr)), dtype).reshape(shape)

    def copy(self, kind, dst, src, n):
        if kind == "htod":
            assert self.is_device(dst, n) and self.is_host(src, n), "host->device copy with wrong pointers"
        else:
            assert self.is_host(dst, n) and self.is_device(src, n), "device->host copy with wrong pointers"
        ctypes.memmove(int(dst), int(src), n)
        self.log.append((kind, n))

    def live(self):
        return (set(self.device) | set(self.host)) - self.freed


def fake_pycuda(dev):
    """pycuda.driver as the shim uses it; every call checks the context is pushed."""
    drv = _module("pycuda.driver")

    class Error(Exception):
        pass

    def in_ctx():
        assert dev.stack, "a pycuda call outside a pushed context"

    class Ctx(object):
        def push(self):
            dev.stack.append(self)

        def detach(self):
            assert not dev.stack
            dev.detached = True

    class Context(object):
        @staticmethod
        def pop():
            assert dev.stack, "Context.pop() without a push"
            dev.stack.pop()

    class Device(object):
        def __init__(self, i):
            pass

        def retain_primary_context(self):
            return Ctx()

        def name(self):
            return "Fake Maxwell"

    class DeviceAllocation(object):
        def __init__(self, addr):
            self.addr = addr

        def __int__(self):
            return self.addr

        def free(self):
            in_ctx()
            dev.freed.add(self.addr)

    class HostAllocation(bytearray):
        def free(self):
            in_ctx()
            dev.freed.add(self.addr)

    class Stream(object):
        handle = 0x5EA

        def __init__(self):
            in_ctx()

        def synchronize(self):
            in_ctx()

    def mem_alloc(n):
        in_ctx()
        if dev.fail_alloc:
            raise Error(dev.fail_alloc)
        return DeviceAllocation(dev._alloc(dev.device, n))

    def pagelocked_empty(shape, dtype):
        in_ctx()
        ha = HostAllocation(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        arr = np.ndarray(shape, dtype, buffer=ha)
        ha.addr = arr.ctypes.data
        dev.host[ha.addr] = (ctypes.c_char * len(ha)).from_buffer(ha)
        return arr

    def memcpy_htod_async(dest, src, stream):
        in_ctx()
        assert isinstance(src, np.ndarray) and not isinstance(dest, np.ndarray), "htod(device, host) expected"
        dev.copy("htod", int(dest), src.ctypes.data, src.nbytes)

    def memcpy_dtoh_async(dest, src, stream):
        in_ctx()
        assert isinstance(dest, np.ndarray) and not isinstance(src, np.ndarray), "dtoh(host, device) expected"
        dev.copy("dtoh", dest.ctypes.data, int(src), dest.nbytes)

    drv.Error, drv.Context, drv.Device, drv.Stream = Error, Context, Device, Stream
    drv.init = lambda: None
    drv.mem_alloc, drv.pagelocked_empty = mem_alloc, pagelocked_empty
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    return drv


def fake_cudart(dev):
    """cuda.bindings.runtime: (error, value) tuples, copies checked against their declared kind."""
    rt = _module("cuda.bindings.runtime")
    rt.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaStreamCreate = lambda: (0, 0x5EB)
    rt.cudaMalloc = lambda n: (0, dev._alloc(dev.device, n))
    rt.cudaMallocHost = lambda n: (0, dev._alloc(dev.host, n))

    def cudaMemcpyAsync(dst, src, n, kind, stream):
        dev.copy({1: "htod", 2: "dtoh"}[kind], dst, src, n)
        return (0,)
    rt.cudaMemcpyAsync = cudaMemcpyAsync
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaFree = lambda p: (dev.freed.add(p), (0,))[1]
    rt.cudaFreeHost = lambda p: (dev.freed.add(p), (0,))[1]
    rt.cudaStreamDestroy = lambda s: (0,)
    rt.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(name=b"Fake Ampere\0\0"))
    return rt


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    m.__dict__.update(attrs)
    return m


@pytest.fixture
def gpu(monkeypatch):
    """No real CUDA package; gpu.pycuda() / gpu.cudart() install the fakes on one FakeDevice."""
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart",
                 "tensorrt"):
        monkeypatch.setitem(sys.modules, name, None)
    dev = FakeDevice()

    def pycuda():
        drv = fake_pycuda(dev)
        monkeypatch.setitem(sys.modules, "pycuda", _module("pycuda", driver=drv))
        monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
        return drv

    def cudart():
        rt = fake_cudart(dev)
        monkeypatch.setitem(sys.modules, "cuda", _module("cuda"))
        monkeypatch.setitem(sys.modules, "cuda.bindings", _module("cuda.bindings", runtime=rt))
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        return rt

    dev.pycuda, dev.cudart = pycuda, cudart
    return dev


# ---------------------------------------------------------------- a fake tensorrt running the real ONNX files

_SESSIONS = {}


def _session(data):
    key = hashlib.sha256(data).hexdigest()
    if key not in _SESSIONS:
        _SESSIONS[key] = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return key, _SESSIONS[key]


def fake_tensorrt(version, dev, fail_kinds=(), fail_on_build=None, parse_errors=None, refuse_shape=False,
                  cost_ms=None, error_in=None):
    """Just enough of TensorRT's Python API, per major version: 8.x has EXPLICIT_BATCH, max_workspace_size and
    binding indices (one copy per profile); 10.x memory pools and tensor names. Engines run the parsed ONNX
    with onnxruntime, on the FakeDevice's memory; each execute advances trt.now by cost_ms[kind]."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log, trt.builds, trt.now = [], 0, 0.0
    trt10 = version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 10
    cost_ms = cost_ms or {"group": 1.0, "if": 1.0}

    class Logger(object):
        WARNING = 2

        def __init__(self, severity):
            pass

    class BuilderFlag(object):
        FP16, TF32 = "FP16", "TF32"

    class Network(object):
        def __init__(self, flags):
            self.flags, self.inputs, self.key, self.kind = flags, [], None, None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return types.SimpleNamespace(name=self.inputs[i])

    class OnnxParser(object):
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data):
            self.network.key, sess = _session(bytes(data))
            self.network.inputs = [i.name for i in sess.get_inputs()]
            self.network.kind = "if" if len(self.network.inputs) == 2 else "group"
            self.errors = (parse_errors or {}).get(self.network.kind, [])
            return not self.errors

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile(object):
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            if error_in == "set_shape":
                raise ValueError("simulated: min, opt and max\nare not ordered")
            trt.log.append(("set_shape", (name, tuple(lo), tuple(opt), tuple(hi))))
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Config8(object):
        __slots__ = ("max_workspace_size", "profiles")

        def set_flag(self, flag):
            trt.log.append(("set_flag", flag))

        def clear_flag(self, flag):
            trt.log.append(("clear_flag", flag))

        def add_optimization_profile(self, p):
            self.profiles.append(p.shapes)

    class Config10(object):
        __slots__ = ("profiles",)
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
            config = Config10() if trt10 else Config8()
            config.profiles = []
            return config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds += 1
            if not trt10:
                trt.log.append(("max_workspace_size", config.max_workspace_size))
            if trt.builds == fail_on_build or network.kind in fail_kinds:
                return None
            return json.dumps({"key": network.key, "kind": network.kind, "profiles": config.profiles}).encode()

    class DataType(object):
        FLOAT, INT32 = "float32", "int32"

    class TensorIOMode(object):
        INPUT, OUTPUT = "in", "out"

    class Engine(object):
        def __init__(self, plan):
            self.plan, self.profiles = plan, plan["profiles"]
            sample = tuple(self.profiles[0]["input"][0][1:])
            self.io = [("input", True, DataType.FLOAT, (-1,) + sample)]
            if plan["kind"] == "if":
                self.io.append(("level", True, DataType.INT32, (1,)))
            self.io.append(("logits", False, DataType.FLOAT, (-1, 10)))
            self.per = len(self.io)
            self.num_optimization_profiles = len(self.profiles)
            if trt10:
                self.num_io_tensors = self.per
            else:
                self.num_bindings = self.per * len(self.profiles)

        def _io(self, key):
            return next(t for i, t in enumerate(self.io) if key in (i, t[0]))

        def create_execution_context(self):
            return Context(self)

        # 8.x: binding i of profile k is i + k * per, named "name [profile k]"
        def get_binding_name(self, i):
            return self.io[i % self.per][0] + ("" if i < self.per else " [profile %d]" % (i // self.per))

        def binding_is_input(self, i):
            return self.io[i % self.per][1]

        def is_shape_binding(self, i):
            return False

        def get_binding_dtype(self, i):
            return self.io[i % self.per][2]

        def get_binding_shape(self, i):
            return self.io[i % self.per][3]

        def get_profile_shape(self, k, i):
            assert i // self.per == k, "profile k's shapes are asked with profile k's binding index"
            return [tuple(s) for s in self.profiles[k][self.io[i % self.per][0]]]

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

        def get_tensor_profile_shape(self, name, k):
            return [tuple(s) for s in self.profiles[k][name]]

    class Context(object):
        def __init__(self, engine):
            self.engine, self.profile, self.batch, self.addr = engine, 0, None, {}

        def set_optimization_profile_async(self, k, stream_handle):
            self.profile = k
            return True

        def _set_batch(self, shape):
            lo, _, hi = self.engine.profiles[self.profile]["input"]
            if refuse_shape or not lo[0] <= shape[0] <= hi[0] or tuple(shape[1:]) != tuple(lo[1:]):
                return False
            self.batch = shape[0]
            return True

        def _run(self):
            if error_in == "execute":
                raise RuntimeError("simulated TensorRT exception")
            feeds = {"input": dev.view(self.addr["input"], np.float32, (self.batch,) + self.engine.io[0][3][1:])}
            level = None
            if self.engine.plan["kind"] == "if":
                feeds["level"] = dev.view(self.addr["level"], np.int32, (1,)).copy()
                level = int(feeds["level"][0])
            out = _SESSIONS[self.engine.plan["key"]].run(None, {k: v.copy() for k, v in feeds.items()})[0]
            dev.view(self.addr["logits"], np.float32, out.shape)[...] = out
            trt.now += cost_ms[self.engine.plan["kind"]] * 1e-3
            trt.log.append(("execute", self.engine.plan["key"], self.profile, self.batch, level))
            return True

        def set_binding_shape(self, i, shape):
            assert not trt10
            if i // self.engine.per != self.profile:
                return False  # another profile's binding
            return self._set_batch(shape)

        def get_binding_shape(self, i):
            return (self.batch, 10) if self.engine.io[i % self.engine.per][0] == "logits" else \
                self.engine.io[i % self.engine.per][3]

        def execute_async_v2(self, bindings, stream_handle):
            assert not trt10 and len(bindings) == self.engine.num_bindings
            k, per = self.profile, self.engine.per
            self.addr = {t[0]: p for t, p in zip(self.engine.io, bindings[k * per:(k + 1) * per])}
            return self._run()

        def set_input_shape(self, name, shape):
            assert trt10 and name == "input"
            return self._set_batch(shape)

        def get_tensor_shape(self, name):
            return (self.batch, 10) if name == "logits" else self.engine._io(name)[3]

        def set_tensor_address(self, name, ptr):
            assert trt10
            self.addr[name] = ptr

        def execute_async_v3(self, stream_handle):
            assert trt10
            return self._run()

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(bytes(data).decode()))

    # Each fake offers only its version's names (boards.md 4.1; TensorRT 8.5 added the name-based calls and
    # 10.0 removed the binding ones), so code that calls the other family's API fails here as on a board.
    engine8 = ("get_binding_name", "binding_is_input", "is_shape_binding", "get_binding_dtype", "get_binding_shape",
               "get_profile_shape")
    engine10 = ("get_tensor_name", "get_tensor_mode", "is_shape_inference_io", "get_tensor_dtype",
                "get_tensor_shape", "get_tensor_profile_shape")
    context8 = ("set_binding_shape", "get_binding_shape", "execute_async_v2")
    context10 = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")
    for cls, names in ((Engine, engine8 if trt10 else engine10), (Context, context8 if trt10 else context10)):
        for name in names:
            delattr(cls, name)
    trt.Logger, trt.BuilderFlag, trt.OnnxParser, trt.Builder = Logger, BuilderFlag, OnnxParser, Builder
    trt.DataType, trt.Runtime, trt.nptype = DataType, Runtime, lambda t: np.dtype(t).type
    if trt10:
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.TensorIOMode = TensorIOMode
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    return trt


@pytest.fixture
def use_trt(gpu, monkeypatch):
    """install(version, **fake options) -> the fake tensorrt, with the fake CUDA package of its version."""
    def install(version, **kw):
        trt = fake_tensorrt(version, gpu, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        (gpu.cudart if hasattr(trt, "TensorIOMode") else gpu.pycuda)()
        return trt
    return install


@pytest.fixture
def bundle(tmp_path):
    """A copy of the shipped nano-gpu bundle (4 groups, batch sizes 1 and 32, golden.npz from the compiler)."""
    path = str(tmp_path / "nano-gpu")
    shutil.copytree(SHIPPED, path)
    return path


def manifest_of(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        return json.load(f)


def golden_of(bundle):
    with np.load(os.path.join(bundle, "golden.npz")) as z:
        return {k: z[k] for k in z.files}


def engine_files(bundle):
    """Every engine file and engine.json in the bundle, and any leftover build directory."""
    out = []
    for d, dirs, files in os.walk(bundle):
        out += [os.path.relpath(os.path.join(d, x), bundle) for x in dirs if x.startswith(builder.TMP_PREFIX)]
        out += [os.path.relpath(os.path.join(d, x), bundle).replace(os.sep, "/") for x in files
                if x.endswith(".plan") or x == ENGINE_RECORD]
    return sorted(out)


def snapshot(bundle):
    return {rel: open(os.path.join(bundle, rel), "rb").read() for rel in engine_files(bundle)}


def read_record(bundle):
    with open(os.path.join(bundle, ENGINE_RECORD)) as f:
        return json.load(f)


def cli(*argv):
    """python -m runtime ARGV in-process: (exit code)."""
    from runtime.__main__ import main
    return main(list(argv))


GROUP_PLANS = ["groups/group%d.plan" % g for g in range(1, 5)]


# ---------------------------------------------------------------- no tensorrt / no engine

@pytest.mark.parametrize("python", [sys.executable, PY36], ids=["venv", "python3.6"])
def test_build_without_tensorrt_says_what_to_install_in_one_line(bundle, python):
    if not os.path.exists(python):
        pytest.skip("no %s here" % python)
    code = BLOCK + "sys.path.insert(0, %r)\nsys.argv = ['x', 'trt-build', %r]\nfrom runtime.__main__ import main\n" \
                   "sys.exit(main())\n" % (ROOT, bundle)
    r = subprocess.run([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120, cwd="/")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "tensorrt" in lines[0] and "python3-libnvinfer" in lines[0]
    assert engine_files(bundle) == []


def test_backend_without_engine_says_how_to_build_it(bundle, gpu):
    with pytest.raises(TensorRTError) as e:
        TensorRTBackend(bundle, manifest_of(bundle))
    assert str(e.value) == ("no TensorRT engine in %s; rebuild it on this device with: "
                            "python3 -m runtime trt-build %s" % (bundle, bundle))


# ---------------------------------------------------------------- building

def test_default_build_is_per_group_with_a_profile_per_batch_size_on_trt82(bundle, use_trt):
    trt = use_trt("8.2.1.8")
    assert cli("trt-build", bundle, "--workspace-mb", "64") == 0
    rec = read_record(bundle)
    assert (rec["mode"], rec["engines"], rec["fallback"]) == ("per-group", GROUP_PLANS, None)
    assert engine_files(bundle) == ["engine.json"] + GROUP_PLANS
    assert rec["profiles"] == [[1, 1, 1], [2, 32, 32]] and rec["batch_max"] == 32
    shapes = [a for c, a in trt.log if c == "set_shape"]
    assert shapes[:2] == [("input", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)),
                          ("input", (2, 3, 32, 32), (32, 3, 32, 32), (32, 3, 32, 32))]
    calls = dict(trt.log)
    assert calls["create_network"] == 1 << 0 and calls["max_workspace_size"] == 64 << 20  # 1 << EXPLICIT_BATCH
    assert ("set_flag", "FP16") in trt.log and rec["gpu"] == "Fake Maxwell"
    with open(os.path.join(bundle, "groups", "group2.plan"), "rb") as f:
        plan = f.read()
    assert rec["files"]["groups/group2.plan"] == {"size": len(plan), "sha256": hashlib.sha256(plan).hexdigest()}
    assert rec["sources"]["groups/group2.onnx"] == manifest_of(bundle)["files"]["groups/group2.onnx"]["sha256"]


def test_every_carried_batch_size_gets_a_profile_tuned_for_it(bundle, use_trt):
    man = manifest_of(bundle)
    man["engines"]["tensorrt"]["batch_sizes"] = [1, 8, 32]
    atomic_write_json(os.path.join(bundle, "manifest.json"), man)
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle) == 0
    assert read_record(bundle)["profiles"] == [[1, 1, 1], [2, 8, 8], [9, 32, 32]]


def test_trt10_uses_memory_pool_no_flag_and_fp32_without_tf32(bundle, use_trt):
    trt = use_trt("10.0.1.6")
    assert cli("trt-build", bundle, "--precision", "fp32", "--workspace-mb", "32") == 0
    assert ("create_network", 0) in trt.log
    assert ("set_memory_pool_limit", ("WORKSPACE", 32 << 20)) in trt.log
    assert "max_workspace_size" not in dict(trt.log)
    assert ("clear_flag", "TF32") in trt.log and ("set_flag", "FP16") not in trt.log
    rec = read_record(bundle)
    assert (rec["precision"], rec["gpu"], trt.builds) == ("fp32", "Fake Ampere", 4)


@pytest.mark.parametrize("version,mode,words", [
    ("7.1.3.0", "per-group", "TensorRT 7.1.3.0 is not supported"),
    ("9.2.0.5", "per-group", "TensorRT 9.2.0.5 is not supported (TensorRT 9 still builds implicit-batch"),
    ("11.0.0.1", "per-group", "drops BuilderFlag.FP16 and weakly typed networks"),
    ("12.1.0", "per-group", "drops BuilderFlag.FP16"),
    ("nightly", "per-group", "cannot read the TensorRT version 'nightly'"),
    ("8.0.1.6", "if", "--mode if needs TensorRT 8.2 or newer, this is 8.0.1.6"),
])
def test_unsupported_versions_are_refused_in_one_line_before_any_build(bundle, use_trt, capsys, version, mode,
                                                                       words):
    trt = use_trt(version)
    assert cli("trt-build", bundle, "--mode", mode) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert trt.builds == 0 and engine_files(bundle) == []


def test_trt80_still_builds_per_group_engines(bundle, use_trt):
    use_trt("8.0.1.6")
    assert cli("trt-build", bundle) == 0
    assert read_record(bundle)["mode"] == "per-group"


@pytest.mark.parametrize("failure", ["build", "parse"])
def test_failed_if_build_falls_back_to_per_group(bundle, use_trt, capsys, failure):
    kw = {"fail_kinds": ("if",)} if failure == "build" else {"parse_errors": {"if": ["In node 7 (importIf): x"]}}
    use_trt("8.2.1.8", **kw)
    assert cli("trt-build", bundle, "--mode", "if") == 0
    rec = read_record(bundle)
    assert rec["mode"] == "per-group" and engine_files(bundle) == ["engine.json"] + GROUP_PLANS
    assert rec["fallback"].startswith("the if build failed (")
    out = capsys.readouterr().out
    assert "built per-group engines instead" in out
    if failure == "parse":
        assert "model.onnx: In node 7 (importIf): x" in out


def test_if_build_when_it_works_points_to_the_trial(bundle, use_trt, capsys):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle, "--mode", "if") == 0
    assert "trt-selftest %s --mode if" % bundle in capsys.readouterr().out
    assert read_record(bundle)["engines"] == ["model.plan"] and engine_files(bundle) == ["engine.json", "model.plan"]


def test_tensorrt_exception_while_building_is_one_line(bundle, use_trt, capsys):
    use_trt("8.2.1.8", error_in="set_shape")
    assert cli("trt-build", bundle) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: TensorRT failed while building groups/group1.plan from groups/group1.onnx: ValueError: "
                   "simulated: min, opt and max are not ordered"]
    assert engine_files(bundle) == []


def test_failed_second_group_leaves_nothing_behind(bundle, use_trt, capsys):
    trt = use_trt("8.2.1.8", fail_on_build=2)
    assert cli("trt-build", bundle) == 1
    assert trt.builds == 2 and engine_files(bundle) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "groups/group2.onnx" in err[0]


def test_failed_build_keeps_the_good_engine(bundle, use_trt):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle, "--mode", "if") == 0
    good = snapshot(bundle)
    use_trt("8.2.1.8", fail_on_build=3)
    assert cli("trt-build", bundle) == 1
    assert snapshot(bundle) == good


def test_rebuild_in_other_mode_replaces_the_old_engines(bundle, use_trt):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle, "--mode", "if") == 0
    assert cli("trt-build", bundle) == 0
    assert engine_files(bundle) == ["engine.json"] + GROUP_PLANS
    assert cli("trt-build", bundle, "--mode", "if") == 0
    assert engine_files(bundle) == ["engine.json", "model.plan"]


def test_parser_errors_one_per_line(bundle, use_trt, capsys):
    use_trt("8.2.1.8", parse_errors={"group": ["In node 3 (importConv): bad\nweights", "second problem"]})
    assert cli("trt-build", bundle) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["groups/group1.onnx: In node 3 (importConv): bad weights", "groups/group1.onnx: second problem",
                   "error: TensorRT's ONNX parser rejected groups/group1.onnx (2 errors above)"]
    assert engine_files(bundle) == []


def test_onnx_checksum_is_verified_before_parsing(bundle, use_trt, capsys):
    trt = use_trt("8.2.1.8")
    with open(os.path.join(bundle, "groups", "group3.onnx"), "ab") as f:
        f.write(b" ")
    assert cli("trt-build", bundle) == 1
    assert trt.builds == 0 and engine_files(bundle) == []
    assert "groups/group3.onnx does not match manifest.json" in capsys.readouterr().err


# ---------------------------------------------------------------- the backend, through the CUDA shims

def open_backend(bundle):
    return TensorRTBackend(bundle, manifest_of(bundle))


def group_keys(bundle):
    files = manifest_of(bundle)["files"]
    return {files["groups/group%d.onnx" % g]["sha256"]: g for g in range(1, 5)}


@pytest.mark.parametrize("version", ["8.2.1.8", "10.0.1.6"])  # pycuda + bindings / cuda-python + names
@pytest.mark.parametrize("mode", ["per-group", "if"])
def test_backend_matches_the_compilers_golden_vectors_at_every_batch(bundle, use_trt, gpu, version, mode):
    trt = use_trt(version)
    assert cli("trt-build", bundle, "--mode", mode) == 0
    g = golden_of(bundle)
    backend = open_backend(bundle)
    assert (backend.name, backend.mode, backend.max_batch, backend.profiles) == (
        "tensorrt", mode, 32, [(1, 1, 1), (2, 32, 32)])
    assert backend.binding == "TensorRT %s + %s" % (version, "pycuda" if version.startswith("8") else "cuda-python")
    assert gpu.stack == []  # every push was popped
    del trt.log[:]
    x40 = np.concatenate([g["input"]] * 5)  # 40 images: chunks of 32 and 8
    for level in range(1, 5):
        ref = g["level%d" % level]
        np.testing.assert_allclose(backend.run_level(g["input"], level), ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(backend.run_level(g["input"][:1], level), ref[:1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(backend.run_level(x40, level), np.concatenate([ref] * 5), rtol=1e-4, atol=1e-4)
    runs = [e[1:] for e in trt.log if e[0] == "execute"]  # (onnx sha256, profile, batch, level input)
    # batch 1 on the batch-1 profile; 8 and the 32 + 8 chunks of 40 on the 2..32 profile
    assert [(p, b) for _, p, b, _ in runs[:4]] == [(1, 8), (0, 1), (1, 32), (1, 8)]
    if mode == "per-group":  # level k runs exactly groups 1..k for every chunk
        keys = group_keys(bundle)
        assert [keys[r[0]] for r in runs] == [g for k in range(1, 5) for _ in range(4) for g in range(1, k + 1)]
    else:
        assert [r[3] for r in runs] == [k for k in range(1, 5) for _ in range(4)]
    assert ("htod", 8 * 3 * 32 * 32 * 4) in gpu.log and ("dtoh", 8 * 10 * 4) in gpu.log
    with pytest.raises(ValueError):
        backend.run_level(g["input"], 5)
    backend.close()
    backend.close()
    assert gpu.stack == [] and gpu.live() == set()
    assert gpu.detached == (version.startswith("8"))


def test_fake_cuda_refuses_swapped_copy_directions(gpu):
    """The guard the tests above rely on: a shim that swaps a direction must fail them."""
    cu = trt_cuda._PyCuda(gpu.pycuda())
    with cu.active():
        h, d = cu.host_empty((4,), np.float32), cu.malloc(16)
        with pytest.raises(AssertionError):
            cu._cuda.memcpy_htod_async(h, d, None)
        with pytest.raises(AssertionError):
            gpu.copy("dtoh", d, h.ctypes.data, 16)
    with pytest.raises(AssertionError):
        cu.malloc(16)  # outside a pushed context
    cu.close()


def test_backend_refuses_tampered_or_foreign_engine(bundle, use_trt):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle) == 0
    use_trt("10.0.1.6")
    with pytest.raises(TensorRTError, match="built with TensorRT 8.2.1.8, this is TensorRT 10.0.1.6"):
        open_backend(bundle)
    use_trt("8.2.1.8")
    with open(os.path.join(bundle, "groups", "group4.plan"), "ab") as f:
        f.write(b"x")
    with pytest.raises(TensorRTError, match="groups/group4.plan does not match engine.json"):
        open_backend(bundle)


def test_old_record_without_profiles_is_refused_with_the_rebuild_command(bundle, use_trt):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle) == 0
    rec = read_record(bundle)
    rec["schema_version"] = 1
    del rec["profiles"]
    atomic_write_json(os.path.join(bundle, ENGINE_RECORD), rec)
    with pytest.raises(TensorRTError, match="schema_version must be 2 .*python3 -m runtime trt-build"):
        open_backend(bundle)


@pytest.mark.parametrize("edit,words", [
    (lambda r: r.update(mode="fast"), "mode must be one of per-group, if, got 'fast'"),
    (lambda r: r.update(profiles=[[4, 2, 8]]), "profiles must be a list of [min, opt, max] batch sizes"),
    (lambda r: r.update(engines=["groups/group9.plan"]), "engines must be a non-empty list of files named in"),
    (lambda r: r["files"]["groups/group1.plan"].pop("sha256"), "files.groups/group1.plan.sha256 must be a string"),
    (lambda r: r["sources"].update({"groups/group1.onnx": "0" * 64}), "was built from an older groups/group1.onnx"),
])
def test_bad_or_stale_engine_record_is_one_line_with_the_rebuild_command(bundle, use_trt, edit, words):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle) == 0
    rec = read_record(bundle)
    edit(rec)
    atomic_write_json(os.path.join(bundle, ENGINE_RECORD), rec)
    with pytest.raises(TensorRTError) as e:
        open_backend(bundle)
    msg = str(e.value)
    assert words in msg and msg.endswith("rebuild it on this device with: python3 -m runtime trt-build %s" % bundle)


@pytest.mark.parametrize("failure,words", [
    ("pycuda-missing", "pycuda is not installed: "),
    ("pycuda-broken", "pycuda is installed but failed to import (libcuda.so.1: cannot open"),
    ("alloc", "TensorRT could not open the engine in"),
    ("shape", "TensorRT refused batch 1 for groups/group1.plan"),
    ("execute", "TensorRT failed to run groups/group1.plan: RuntimeError: simulated TensorRT exception"),
])
def test_load_failures_are_one_line_and_runtime_load_falls_back_to_onnx(bundle, use_trt, gpu, monkeypatch,
                                                                        tmp_path, failure, words):
    use_trt("8.2.1.8", refuse_shape=(failure == "shape"))
    assert cli("trt-build", bundle) == 0
    if failure == "execute":
        use_trt("8.2.1.8", error_in="execute")
    if failure == "pycuda-missing":
        monkeypatch.setitem(sys.modules, "pycuda", None)
    elif failure == "pycuda-broken":
        pkg = tmp_path / "site" / "pycuda"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "driver.py").write_text("raise ImportError('libcuda.so.1: cannot open shared object file')\n")
        monkeypatch.delitem(sys.modules, "pycuda")
        monkeypatch.delitem(sys.modules, "pycuda.driver")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
    elif failure == "alloc":
        gpu.fail_alloc = "cuMemAlloc failed: out of memory"
    with pytest.raises(RuntimeUserError) as e:
        open_backend(bundle)
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg
    if failure.startswith("pycuda"):
        assert "nvcc on PATH" in msg and "Python headers" in msg
    if failure == "pycuda-missing":
        assert "cuda-python needs CUDA 11.2+" in msg
    assert gpu.stack == [] and gpu.live() == set()  # nothing leaked on the way out
    import runtime
    m = runtime.load(bundle, sysfs_root=str(tmp_path / "no-sysfs"))
    assert m.backend.name == "onnx"
    m.close()


def test_runtime_load_uses_the_engine_when_it_opens(bundle, use_trt, tmp_path):
    use_trt("8.2.1.8")
    assert cli("trt-build", bundle) == 0
    import runtime
    m = runtime.load(bundle, sysfs_root=str(tmp_path / "no-sysfs"))
    g = golden_of(bundle)
    assert m.backend.name == "tensorrt"
    np.testing.assert_allclose(m.infer(g["input"], 3), g["level3"], rtol=1e-4, atol=1e-4)
    m.close()


# ---------------------------------------------------------------- trt-selftest

FAST = ("--runs", "3", "--warmup", "1")


def test_selftest_builds_per_group_and_checks_the_compilers_golden(bundle, use_trt, capsys):
    use_trt("8.2.1.8")
    assert cli("trt-selftest", bundle, *FAST) == 0
    out = capsys.readouterr().out
    assert "building the TensorRT engine (no usable engine yet): per-group mode" in out
    assert "outputs: every level matches golden.npz" in out
    with open(os.path.join(bundle, selftest.RESULT)) as f:
        runs = json.load(f)["runs"]
    assert list(runs) == ["per-group"] and runs["per-group"]["outputs_ok"]
    assert set(runs["per-group"]["latency_ms"]["4"]) == {"1", "32"}
    assert runs["per-group"]["profiles"] == [[1, 1, 1], [2, 32, 32]]
    assert runs["per-group"]["versions"]["tensorrt"] == "8.2.1.8"


def test_selftest_fails_on_a_wrong_engine(bundle, use_trt, monkeypatch, capsys):
    use_trt("10.0.1.6")
    real = TensorRTBackend._run_chunk

    def off_by_a_bit(self, x, level):  # an engine that is wrong at level 2 only
        return real(self, x, level) + (0.5 if level == 2 else 0.0)
    monkeypatch.setattr(TensorRTBackend, "_run_chunk", off_by_a_bit)
    assert cli("trt-selftest", bundle, *FAST) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: per-group mode level 2 differs from golden.npz beyond tolerance")


@pytest.mark.parametrize("if_ms,kept", [(2.5, "per-group"), (0.5, "if")])
def test_if_mode_is_kept_only_where_the_selftest_shows_it_faster(bundle, use_trt, monkeypatch, capsys, if_ms, kept):
    trt = use_trt("8.2.1.8", cost_ms={"group": 1.0, "if": if_ms})
    monkeypatch.setattr(selftest, "clock", lambda: trt.now)
    assert cli("trt-selftest", bundle, "--mode", "if", *FAST) == 0
    out = capsys.readouterr().out
    assert read_record(bundle)["mode"] == kept
    with open(os.path.join(bundle, selftest.RESULT)) as f:
        doc = json.load(f)
    assert doc["if_trial"]["kept"] == kept and sorted(doc["runs"]) == ["if", "per-group"]
    if kept == "per-group":  # 2.5 ms flat vs 1 ms per group: slower at levels 1 and 2
        assert "level 1 2.500 ms vs 1.000 ms per-group, level 2 2.500 ms vs 2.000 ms per-group" in out
        assert "rebuilt the per-group engines" in out
    else:
        assert "kept the If engine" in out


def test_if_trial_keeps_per_group_when_the_if_build_fails(bundle, use_trt, capsys):
    use_trt("8.2.1.8", fail_kinds=("if",))
    assert cli("trt-selftest", bundle, "--mode", "if", *FAST) == 0
    assert read_record(bundle)["mode"] == "per-group"
    assert "if trial: the if build failed" in capsys.readouterr().out

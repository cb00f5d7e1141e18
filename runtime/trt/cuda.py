"""The one CUDA import and memory shim: pycuda (the Nano) or cuda-python (TensorRT 10 machines).

Both expose: active() (a context manager around every CUDA call), malloc, host_empty (page-locked),
htod(device_ptr, host_array), dtoh(host_array, device_ptr), sync, stream_handle, close.

On the Nano pycuda is the only path: cuda-python's CUDA 11 line needs CUDA Toolkit 11.2-11.8
(nvidia.github.io/cuda-python install pages) and JetPack 4.6 has CUDA 10.2 (boards.md 3.1). pycuda has no
wheels, so it compiles on the board: nvcc on PATH and the Python headers (boards.md 3.1); 2022.1 is the last
release for Python 3.6.
"""
import contextlib
import ctypes
import importlib.util

import numpy as np

from runtime.trt import TensorRTError

PYCUDA_INSTALL = ("sudo apt-get install python3-dev && PATH=/usr/local/cuda/bin:$PATH "
                  "pip3 install --user pycuda==2022.1")


class _PyCuda(object):
    """pycuda on the device's primary context (the one TensorRT's runtime API uses), pushed only while
    working so that any thread may call."""
    package = "pycuda"

    def __init__(self, cuda):
        self._cuda = cuda
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._device_allocs, self._host_arrays, self._stream = [], [], None
        with self.active():
            self._stream = cuda.Stream()

    @contextlib.contextmanager
    def active(self):
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def malloc(self, nbytes):
        alloc = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._device_allocs.append(alloc)
        return int(alloc)

    def host_empty(self, shape, dtype):
        arr = self._cuda.pagelocked_empty(shape, dtype)
        self._host_arrays.append(arr)
        return arr

    def htod(self, device_ptr, host_arr):
        self._cuda.memcpy_htod_async(device_ptr, host_arr, self._stream)

    def dtoh(self, host_arr, device_ptr):
        self._cuda.memcpy_dtoh_async(host_arr, device_ptr, self._stream)

    def sync(self):
        self._stream.synchronize()

    def stream_handle(self):
        return self._stream.handle

    def close(self):
        with self.active():
            for alloc in self._device_allocs:
                alloc.free()
            for arr in self._host_arrays:
                if hasattr(arr.base, "free"):  # pagelocked_empty's base is its HostAllocation
                    arr.base.free()
            self._device_allocs, self._host_arrays, self._stream = [], [], None
        self._ctx.detach()


class _CudaRt(object):
    """cuda-python's runtime API, as in TensorRT 10's samples/python/common_runtime.py."""
    package = "cuda-python"

    def __init__(self, rt):
        self._rt = rt
        self._device_ptrs, self._host_ptrs, self._stream = [], [], None
        self._stream = self._call(rt.cudaStreamCreate())

    def _call(self, result):
        err, rest = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise TensorRTError("CUDA runtime error: %s" % (err,))
        return rest[0] if len(rest) == 1 else rest

    @contextlib.contextmanager
    def active(self):
        yield  # the runtime API binds the primary context by itself

    def malloc(self, nbytes):
        ptr = self._call(self._rt.cudaMalloc(max(int(nbytes), 1)))
        self._device_ptrs.append(ptr)
        return int(ptr)

    def host_empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = self._call(self._rt.cudaMallocHost(max(nbytes, 1)))
        self._host_ptrs.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def _copy(self, dst, src, nbytes, kind):
        self._call(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    def htod(self, device_ptr, host_arr):
        self._copy(device_ptr, host_arr.ctypes.data, host_arr.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice)

    def dtoh(self, host_arr, device_ptr):
        self._copy(host_arr.ctypes.data, device_ptr, host_arr.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)

    def sync(self):
        self._call(self._rt.cudaStreamSynchronize(self._stream))

    def stream_handle(self):
        return int(self._stream)

    def close(self):
        for ptr in self._device_ptrs:
            self._rt.cudaFree(ptr)
        for ptr in self._host_ptrs:
            self._rt.cudaFreeHost(ptr)
        if self._stream is not None:
            self._rt.cudaStreamDestroy(self._stream)
        self._device_ptrs, self._host_ptrs, self._stream = [], [], None


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module without a spec
        return False


def import_pycuda():
    """pycuda.driver, or one line that tells "not installed" from "installed but broken"."""
    if not _installed("pycuda"):
        raise TensorRTError("pycuda is not installed: TensorRT 8 needs it to move data to the GPU, and on the "
                            "Nano it is the only way (cuda-python needs CUDA 11.2+, JetPack 4.6 has 10.2); it "
                            "compiles on the board, with nvcc on PATH and the Python headers: %s" % PYCUDA_INSTALL)
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise TensorRTError("pycuda is installed but failed to import (%s): it must be built on this board "
                            "against its own CUDA and Python, with nvcc on PATH and the Python headers; rebuild "
                            "it with: pip3 uninstall -y pycuda && %s --no-cache-dir" % (e, PYCUDA_INSTALL))
    return cuda


def import_cudart():
    """cuda-python's runtime module (cuda.bindings.runtime from 12.6, cuda.cudart before), or one line."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        if _installed(name):
            try:
                return importlib.import_module(name)
            except ImportError as e:
                raise TensorRTError("cuda-python is installed but %s failed to import (%s): install the "
                                    "cuda-python release that matches this machine's CUDA (11.2+)" % (name, e))
    raise TensorRTError("cuda-python is not installed: TensorRT 10 needs it (or pycuda) to move data to the GPU; "
                        "run: pip install cuda-python (it needs CUDA 11.2 or newer)")


def open_cuda(trt_major):
    """TensorRT 8: pycuda (the Nano's only path), else cuda-python. TensorRT 10: the reverse.

    Every failure is a TensorRTError (one line), so runtime.load can fall back to ONNX."""
    kinds = [(import_pycuda, _PyCuda, "pycuda"), (import_cudart, _CudaRt, "cuda-python")]
    if trt_major >= 10:
        kinds.reverse()
    first_error = None
    for importer, cls, package in kinds:
        try:
            module = importer()
        except TensorRTError as e:
            first_error = first_error or e
            continue
        try:
            return cls(module)
        except TensorRTError:
            raise
        except Exception as e:  # the package is there but CUDA would not start (no GPU, driver mismatch)
            raise TensorRTError("cannot start CUDA through %s: %s" % (package, " ".join(str(e).split())))
    raise first_error


def gpu_name():
    """The CUDA device name, or None when neither package can tell (optional information for engine.json)."""
    try:
        cuda = import_pycuda()
        cuda.init()
        return str(cuda.Device(0).name())
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        pass
    try:
        rt = import_cudart()
        err, prop = rt.cudaGetDeviceProperties(0)
        if err == rt.cudaError_t.cudaSuccess:
            name = prop.name
            if isinstance(name, bytes):
                name = name.split(b"\0")[0].decode("utf-8", "replace")
            return str(name)
    except Exception:  # noqa: BLE001
        pass
    return None

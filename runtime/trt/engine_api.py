"""One deserialised engine with one execution context per optimisation profile, in TensorRT 8 or 10 calls.

Profile k of an engine serves the batch sizes of engine.json's profiles[k]; each has its own context, chosen
once with set_optimization_profile_async(k, stream) (IExecutionContext in the TensorRT 8.x and 10.x Python
APIs; public TensorRT 8 code pairs it with set_binding_shape/execute_async_v2), so switching batch never
re-selects a profile.

TensorRT 8 numbers bindings per profile: profile k's copy of binding i is i + k * (bindings per profile), named
"name [profile k]" (TensorRT 8 developer guide, "Binding Indices for Optimization Profiles"); execute_async_v2
takes the whole list. TensorRT 10 names tensors once for every profile (set_input_shape, set_tensor_address,
execute_async_v3). Sources for every call: boards.md 4.1.
"""
import numpy as np

from runtime.trt import TensorRTError


class _Engine(object):
    def __init__(self, trt, engine, stream_handle):
        self._trt, self.engine = trt, engine
        self.num_profiles = int(engine.num_optimization_profiles)
        self.contexts = []
        for k in range(self.num_profiles):
            context = engine.create_execution_context()
            if context is None or not context.set_optimization_profile_async(k, stream_handle):
                raise TensorRTError("TensorRT could not open optimisation profile %d (out of GPU memory?)" % k)
            self.contexts.append(context)

    def batch_ranges(self, input_name):
        """[(min, opt, max) batch] of every profile, from the engine itself."""
        return [tuple(int(s[0]) for s in self.profile_shape(input_name, k)) for k in range(self.num_profiles)]

    def close(self):
        self.contexts, self.engine = [], None


class EngineTrt8(_Engine):
    """TensorRT 8.x (the Nano's 8.2.1): binding indices, set_binding_shape, execute_async_v2(bindings)."""

    def __init__(self, trt, engine, stream_handle):
        _Engine.__init__(self, trt, engine, stream_handle)
        self._per = int(engine.num_bindings) // max(self.num_profiles, 1)
        self.names = [engine.get_binding_name(i) for i in range(self._per)]
        self._bindings = [[0] * int(engine.num_bindings) for _ in range(self.num_profiles)]

    def _index(self, name, k=0):
        return self.names.index(name) + k * self._per

    def is_input(self, name):
        return bool(self.engine.binding_is_input(self._index(name)))

    def is_shape_input(self, name):
        return bool(self.engine.is_shape_binding(self._index(name)))

    def dtype(self, name):
        return np.dtype(self._trt.nptype(self.engine.get_binding_dtype(self._index(name))))

    def static_shape(self, name):
        return tuple(self.engine.get_binding_shape(self._index(name)))

    def profile_shape(self, name, k):
        return self.engine.get_profile_shape(k, self._index(name, k))  # the binding of profile k itself

    def set_input_shape(self, k, name, shape):
        return bool(self.contexts[k].set_binding_shape(self._index(name, k), tuple(shape)))

    def shape(self, k, name):
        return tuple(self.contexts[k].get_binding_shape(self._index(name, k)))

    def set_address(self, k, name, ptr):
        self._bindings[k][self._index(name, k)] = int(ptr)

    def execute(self, k, stream_handle):
        return bool(self.contexts[k].execute_async_v2(bindings=self._bindings[k], stream_handle=stream_handle))


class EngineTrt10(_Engine):
    """TensorRT 10: tensor names, set_input_shape, set_tensor_address, execute_async_v3."""

    def __init__(self, trt, engine, stream_handle):
        _Engine.__init__(self, trt, engine, stream_handle)
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, name):
        return self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def is_shape_input(self, name):
        return self.is_input(name) and bool(self.engine.is_shape_inference_io(name))

    def dtype(self, name):
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def static_shape(self, name):
        return tuple(self.engine.get_tensor_shape(name))

    def profile_shape(self, name, k):
        return self.engine.get_tensor_profile_shape(name, k)

    def set_input_shape(self, k, name, shape):
        return bool(self.contexts[k].set_input_shape(name, tuple(shape)))

    def shape(self, k, name):
        return tuple(self.contexts[k].get_tensor_shape(name))

    def set_address(self, k, name, ptr):
        self.contexts[k].set_tensor_address(name, int(ptr))

    def execute(self, k, stream_handle):
        return bool(self.contexts[k].execute_async_v3(stream_handle))


ENGINE_API = {8: EngineTrt8, 10: EngineTrt10}  # keyed by runtime.trt.version.api_major

"""onnxruntime backend.

External-data files the model names are checked (``_onnx_external``) before the session opens them.

Threads: a loaded model may be shared. ``InferenceSession.run`` is thread-safe (onnxruntime documents it, and
8 threads x 200 calls on one session gave the one-thread results bit for bit), so calls are not serialized here.
"""

import numpy as np

from .._errors import EngineError, ModelLoadError
from .._tensor import TensorInfo
from ._engine_error import engine_message
from ._onnx_external import check_external_data

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def _info(node) -> TensorInfo:
    if node.type not in _ORT_DTYPES:
        raise ModelLoadError(f"tensor {node.name!r} has type {node.type}, which the runtime does not feed")
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorInfo(name=node.name, shape=shape, dtype=np.dtype(_ORT_DTYPES[node.type]))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path, threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        check_external_data(path)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime could not load {path}: {engine_message(exc)}") from exc
        self.inputs = [_info(n) for n in self._session.get_inputs()]
        self.outputs = [_info(n) for n in self._session.get_outputs()]
        self._run = self._session.run

    def single(self):
        """``value -> output`` for a one-input, one-output model (``Model.bind``'s fast path)."""
        run, name = self._run, self.inputs[0].name

        def call(value):
            try:
                return run(None, {name: value})[0]
            except Exception as exc:  # onnxruntime's own exception types derive from Exception only
                raise EngineError(f"onnxruntime: {engine_message(exc)}") from exc
        return call

    def run(self, feeds):
        try:
            return self._run(None, feeds)
        except Exception as exc:  # onnxruntime's own exception types derive from Exception only
            raise EngineError(f"onnxruntime: {engine_message(exc)}") from exc

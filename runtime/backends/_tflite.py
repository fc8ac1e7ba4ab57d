"""TFLite backend: ai_edge_litert, else tflite_runtime, else tensorflow.lite.

Inputs and outputs are named by the model's serving signature when it has one
(the names a Keras model or a PyTorch module gave them), else by tensor name.
Int8/uint8 I/O carries its scale and zero point (a scale of 0 means not
quantized), which ``Model`` uses to quantize float inputs and dequantize outputs.
A dynamic batch axis is resized on demand; the last shape is cached.

Defaults measured on MobileNetV2 (2 vCPUs, README): the interpreter's own default of one
thread ran fp32 at 7.4 ms, two threads at 3.4 ms, so ``threads=None`` means every core;
XNNPACK (the default delegate) is kept: without it fp32 took 15.9 ms and int8 14.4 ms,
with it int8 took 1.65 ms.

The file's flatbuffer is bounds-checked (``_tflite_check``) before the interpreter maps it: the interpreter
trusts its offsets, and a crafted file crashed the loading process.

Threads: a loaded model may be shared. One interpreter holds one set of input and output tensors, so a lock
covers each call from resize to read-out (8 threads sharing one model without it: raw RuntimeErrors and wrong
results); calls on one model run one at a time, and each uses the interpreter's own threads. ``get_tensor``
returns a copy, never a view into the interpreter's memory.
"""

import importlib
import os
import threading

import numpy as np

from .._errors import BackendUnavailableError, EngineError, ModelLoadError
from .._tensor import TensorInfo
from ._engine_error import engine_message
from ._tflite_check import check_flatbuffer

# (module, attribute path). TensorFlow's is reached through the top-level module: the
# ``tensorflow.lite`` package itself does not define ``Interpreter`` (TF 2.21).
_INTERPRETERS = (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                 ("tensorflow", "lite.Interpreter"))


def interpreter_class():
    for module_name, attr_path in _INTERPRETERS:
        try:
            obj = importlib.import_module(module_name)
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
            return obj
        except (ImportError, AttributeError):
            continue
    raise BackendUnavailableError("no TFLite interpreter: pip install 'edgekit[tflite]' (ai-edge-litert)")


def _info(name, detail) -> TensorInfo:
    signature = detail.get("shape_signature")
    shape = tuple(None if d < 0 else int(d) for d in (signature if signature is not None and len(signature)
                                                        else detail["shape"]))
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = scale > 0 and np.dtype(detail["dtype"]).kind in "iu"
    return TensorInfo(name=name, shape=shape, dtype=np.dtype(detail["dtype"]),
                      scale=float(scale) if quantized else None,
                      zero_point=int(zero_point) if quantized else None)


def _position(order, index):
    return order.index(index) if index in order else len(order) + index


class TFLiteBackend:
    name = "tflite"

    def __init__(self, path, threads=None):
        Interpreter = interpreter_class()
        check_flatbuffer(path)
        try:
            self._interpreter = Interpreter(model_path=str(path),
                                            num_threads=int(threads) if threads else (os.cpu_count() or 1))
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"the TFLite interpreter could not load {path}: {engine_message(exc)}") from exc
        signatures = self._interpreter.get_signature_list()
        if signatures:
            runner = self._interpreter.get_signature_runner(next(iter(signatures)))
            ins = runner.get_input_details()
            outs = runner.get_output_details()
            # Signatures list tensors by name; keep the model's own input/output order instead.
            subgraph_in = [d["index"] for d in self._interpreter.get_input_details()]
            subgraph_out = [d["index"] for d in self._interpreter.get_output_details()]
            in_items = sorted(ins.items(), key=lambda kv: _position(subgraph_in, kv[1]["index"]))
            out_items = sorted(outs.items(), key=lambda kv: _position(subgraph_out, kv[1]["index"]))
            full = {d["index"]: d for d in self._interpreter.get_input_details() + self._interpreter.get_output_details()}
            in_items = [(k, {**full.get(v["index"], {}), **v}) for k, v in in_items]
            out_items = [(k, {**full.get(v["index"], {}), **v}) for k, v in out_items]
        else:
            in_items = [(d["name"], d) for d in self._interpreter.get_input_details()]
            out_items = [(d["name"], d) for d in self._interpreter.get_output_details()]
        self.inputs = [_info(name, d) for name, d in in_items]
        self.outputs = [_info(name, d) for name, d in out_items]
        self._in_index = [d["index"] for _, d in in_items]
        self._out_index = [d["index"] for _, d in out_items]
        self._shapes = [tuple(d["shape"]) for _, d in in_items]
        self._lock = threading.Lock()

    def single(self):
        """``value -> output`` for a one-input, one-output model (``Model.bind``'s fast path): the
        interpreter called directly while the value has the allocated shape, else ``run``."""
        interp, lock, run = self._interpreter, self._lock, self.run
        index, out, name = self._in_index[0], self._out_index[0], self.inputs[0].name

        def call(value):
            with lock:
                if value.shape == self._shapes[0]:
                    try:
                        interp.set_tensor(index, value)
                        interp.invoke()
                    except (RuntimeError, ValueError) as exc:  # the interpreter's own failures
                        raise EngineError(f"TFLite: {engine_message(exc)}") from exc
                    return interp.get_tensor(out)
            return run({name: value})[0]
        return call

    def run(self, feeds):
        interp = self._interpreter
        values = [feeds[t.name] for t in self.inputs]
        shapes = [v.shape for v in values]
        with self._lock:
            try:
                if shapes != self._shapes:
                    for index, shape in zip(self._in_index, shapes):
                        interp.resize_tensor_input(index, shape, strict=False)
                    interp.allocate_tensors()
                    self._shapes = shapes
                for index, value in zip(self._in_index, values):
                    interp.set_tensor(index, value)
                interp.invoke()
            except (RuntimeError, ValueError) as exc:  # the interpreter's own failures
                raise EngineError(f"TFLite: {engine_message(exc)}") from exc
            return [interp.get_tensor(index) for index in self._out_index]

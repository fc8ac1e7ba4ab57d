"""Quantization-aware training before export, and the int8 artifacts made from its result.

PyTorch: NNCF inserts fake quantizers calibrated on the calibration data (``nncf.quantize``),
the user's training hook fine-tunes the model with them in place, and ``nncf.strip`` leaves a
module whose fake-quantize operations carry the learned scales. Keras: TensorFlow Model
Optimization's ``quantize_model`` for tf_keras models (after pruning, the pruning-preserving
scheme keeps the zeros); Keras 3 models, which it does not take, get edgekit's own fake
quantizers on Keras' fake-quant op (``edgekit.quantize.qat_keras3``).

The int8 artifacts are converted from the QAT model directly — ONNX QuantizeLinear/
DequantizeLinear pairs, OpenVINO FakeQuantize, TFLite full-integer — so nothing is calibrated a
second time and what training learned is what ships.
"""

import copy
import dataclasses
import importlib.util
import os

from edgekit.errors import ConfigError, ConversionError, EdgekitError, MissingDependencyError, UnsupportedError
from edgekit.timing import Counted

from . import QATResult
from ._nncf import quiet_nncf
from .prune_torch import prunable


def _torch_samples(source, calibration, count):
    import torch
    names = [s.name for s in source.input_specs]
    return Counted(tuple(torch.from_numpy(calibration.inputs[n][i:i + 1].copy()) for n in names) for i in range(count))


def qat_torch(source, options, calibration, quantize_options, pruned=False) -> QATResult:
    # NNCF compiles its C++ quantizer extension on first use and gives up after 60 s: a 2-vCPU CI
    # runner under load took longer (ExtensionLoaderTimeoutException). The user's value wins.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")
    import nncf
    import torch

    if source.torch_program() is not None:
        raise ConfigError("QAT needs the nn.Module (FILE.py:factory or a live module), not a .pt2 program")

    class Wrapped(torch.nn.Module):
        """NNCF attaches its hook storage as a child module, which an nn.Sequential would then run
        as a layer; a wrapper keeps the user's module as one child."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    module = Wrapped(copy.deepcopy(source.torch_module()).cpu()).eval()
    count = len(calibration)  # capped to max_calibration_samples by the pipeline
    samples = _torch_samples(source, calibration, count)
    try:
        with quiet_nncf():
            # 7-bit weights trained in (NNCF's overflow fix) where the int8 recipe asks for them, as
            # post-training int8 does (QuantizeOptions.reduce_range).
            overflow_fix = nncf.OverflowFix.ENABLE if quantize_options.reduce_range else nncf.OverflowFix.FIRST_LAYER
            quantized = nncf.quantize(module, nncf.Dataset(samples, lambda item: item), subset_size=count,
                                      advanced_parameters=nncf.AdvancedQuantizationParameters(
                                          overflow_fix=overflow_fix))
        hold = zero_holder(m.weight for m in prunable(quantized).values()) if pruned else None
        quantized.train()
        options.train(quantized, options.steps, [hold] if hold else [])
        quantized.eval()
        if hold:
            hold()
        with quiet_nncf():
            stripped = nncf.strip(quantized, example_input=samples[0] if len(samples[0]) > 1 else samples[0][0])
    except EdgekitError:  # the user's training hook failing is a UserCodeError, not "unsupported"
        raise
    except Exception as exc:
        raise UnsupportedError(f"NNCF quantization-aware training failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    return QATResult(stripped.eval(), {"tool": f"nncf {nncf.__version__}", "calibration_samples": count,
                                       "steps": options.steps, "overflow_fix": str(overflow_fix.value)})


def zero_holder(weights):
    """A callback for the training hook that keeps the zeros of ``weights`` at zero (call it after
    every optimizer step): QAT after pruning must not grow the pruned weights back. None when no
    weight has a zero."""
    import torch
    held = [(weight, weight.detach() != 0) for weight in weights if bool((weight == 0).any())]

    def hold():
        with torch.no_grad():
            for weight, mask in held:
                weight.mul_(mask)
    return hold if held else None


def qat_keras(source, options, calibration, quantize_options, pruned=False) -> QATResult:
    """tf_keras: TF-MOT's ``quantize_model``; Keras 3 (which TF-MOT does not take): edgekit.quantize.qat_keras3."""
    if source.kind == "keras3":
        from .qat_keras3 import qat_keras3
        return qat_keras3(source, options, calibration, quantize_options, pruned=pruned)
    if source.kind != "tf_keras":
        raise UnsupportedError(f"QAT needs a Keras model (Keras 3 or tf_keras); {source.description} is a "
                               f"{source.kind}")
    if importlib.util.find_spec("tensorflow_model_optimization") is None:
        raise MissingDependencyError("QAT of a tf_keras model needs tensorflow_model_optimization: "
                                     "pip install 'edgekit[tf]'")
    import tensorflow_model_optimization as tfmot
    quantization = tfmot.quantization.keras
    try:
        if pruned:
            from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
                default_8bit_prune_preserve_quantize_scheme as preserve)
            annotated = quantization.quantize_annotate_model(source.keras_model())
            model = quantization.quantize_apply(annotated, preserve.Default8BitPrunePreserveQuantizeScheme())
            scheme = "pruning-preserving QAT (Default8BitPrunePreserveQuantizeScheme)"
        else:
            model = quantization.quantize_model(source.keras_model())
            scheme = "quantize_model (default 8-bit scheme)"
    except Exception as exc:
        raise UnsupportedError(f"TensorFlow Model Optimization cannot quantize this model: {type(exc).__name__}: "
                               f"{exc}") from exc
    options.train(model, options.steps, [])
    return QATResult(model, {"tool": "tensorflow_model_optimization", "scheme": scheme, "steps": options.steps})


def export_tflite_tf(qat_model, out_path, config, example):
    """TFLite int8 of a TF-MOT QAT model: the converter reads the learned ranges (no calibration)."""
    import tensorflow as tf

    from edgekit.converters import ConversionResult
    from edgekit.converters.tf_tflite import converter, run_converter
    conv = converter(qat_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    run_converter(conv, out_path, "QAT int8")
    return ConversionResult(out_path, f"tf.lite.TFLiteConverter (QAT model) tensorflow {tf.__version__}")


def export_openvino(qat_model, out_path, config, example):
    """IR of the QAT model: its fake quantizers become FakeQuantize operations."""
    return _converted(qat_model, "openvino", out_path, config, example)


def export_onnx(qat_model, out_path, config, example):
    """ONNX of the QAT model, its trained weights stored as int8 (or uint8) initializers."""
    if qat_model.framework == "tf":
        from edgekit.converters.tf_onnx import convert_keras
        try:
            result = convert_keras(qat_model, out_path, config)
        except ConversionError as exc:
            raise UnsupportedError(f"onnx from the QAT model: {exc}") from exc
    else:
        result = _converted(qat_model, "onnx", out_path, config, example)
    # TF-MOT trains weights on the whole int8 grid (no 7-bit option), which u8*s8 kernels on x86
    # without VNNI overflow: store them as uint8. NNCF's were trained 7-bit (overflow fix).
    unsigned = config.quantize.reduce_range and qat_model.framework == "tf"
    folded = fold_weight_quantizers(out_path, unsigned=unsigned)
    gridded = store_grid_weights(out_path, unsigned=unsigned)
    kind = "uint8 (zero point 128)" if unsigned else "int8"
    return dataclasses.replace(result, notes=result.notes + (
        f"{folded + gridded} QAT weights stored as {kind} initializers "
        f"({folded} from QuantizeLinear, {gridded} float weights on the QAT grid)",))


def _converted(qat_model, fmt, out_path, config, example):
    """The format's own fp32 converter run on the QAT model (its fake quantizers convert with it)."""
    from edgekit.routes import FP32, ROUTES
    try:
        return ROUTES.get((qat_model.framework, fmt, FP32))(qat_model, out_path, config, example=example)
    except ConversionError as exc:
        raise UnsupportedError(f"{fmt} from the QAT model: {exc}") from exc


def fold_weight_quantizers(path, unsigned=False) -> int:
    """Store fake-quantized weights as int8: ``QuantizeLinear(float initializer)`` becomes the int8
    initializer it computes (exporters keep the float weight and quantize it at every run, which
    makes the file bigger than the fp32 one). Returns how many were folded.

    ``unsigned``: store them as uint8 with the zero point moved by 128 instead, the same values
    exactly. QAT weights use the whole int8 grid, which onnxruntime's u8*s8 kernels on x86 without
    VNNI overflow (16-bit pair sums); its u8*u8 kernels do not. 7-bit weights, the post-training
    remedy (``reduce_range``), would throw away the grid QAT trained for.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekit.converters.onnx_format import check
    from edgekit.converters.torch_onnx import onnx_save
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3 and all(n in inits for n in node.input[:3]) \
                and len(consumers.get(node.input[0], [])) == 1:
            weight, scale, zero = (numpy_helper.to_array(inits[n]) for n in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * weight.ndim
                shape[axis] = -1
                scale, zero_b = scale.reshape(shape), zero.reshape(shape)
            else:
                zero_b = zero
            info = np.iinfo(zero.dtype)
            q = np.clip(np.round(weight / scale) + zero_b.astype(np.int32), info.min, info.max)
            if unsigned and zero.dtype == np.int8:
                q, zero = q + 128, zero.astype(np.int32) + 128
                zero_name = f"{node.output[0]}_zero_point_u8"
                graph.initializer.append(numpy_helper.from_array(zero.astype(np.uint8), zero_name))
                for dq in consumers.get(node.output[0], []):
                    dq.input[2] = zero_name
                q = q.astype(np.uint8)
            else:
                q = q.astype(zero.dtype)
            graph.initializer.remove(inits.pop(node.input[0]))
            graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
        else:
            keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        onnx_save(model, path)
        check(path)
    return folded


# A weight is on a symmetric 8-bit grid when every value is within this fraction of a step of an
# integer multiple of the step (float32 rounding of TF-MOT's folded weights is ~1e-5 steps).
_GRID_TOLERANCE = 1e-2


def _grid_scale(weight, axis):
    """The symmetric int8 scale(s) ``weight`` lies on, or None when it is on no such grid.

    Tried in turn: one scale per channel along ``axis`` with the channel's largest value at 127
    steps (TF-MOT's convolutions); one scale for the tensor (its Dense layers, which onnxruntime's
    MatMul kernels take best per tensor); one scale per channel whose largest value is at *at most*
    127 steps — TF-MOT quantizes a depthwise kernel per depth multiplier (per tensor, for a
    multiplier of 1) and tf2onnx folds the following BatchNormalization's per-channel factor into
    the quantized kernel, so channel c holds k·s·γ_c with max |k| < 127 (the tf_keras BN/depthwise
    test model's depthwise kernels stayed float, its ONNX int8 file 0.77× the fp32 one).
    """
    import numpy as np
    rows = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1).astype(np.float64)
    peaks = np.abs(rows).max(axis=1)
    if not peaks.max() > 0:
        return None
    peaks = np.where(peaks > 0, peaks, peaks.max())  # an all-zero (pruned) channel is on any grid
    for scale in (peaks / 127.0, np.asarray(peaks.max() / 127.0)):
        if _on_grid(rows, scale[:, None] if scale.ndim else scale):
            return scale.astype(np.float32)
    scales = [_row_step(row, peak) for row, peak in zip(rows, peaks)]
    return None if any(s is None for s in scales) else np.asarray(scales, np.float32)


def _on_grid(values, step) -> bool:
    import numpy as np
    steps = values / step
    return bool(np.abs(steps - np.round(steps)).max() <= _GRID_TOLERANCE)


def _row_step(row, peak):
    """The step of the largest symmetric grid of at most 127 steps a side that ``row`` lies on."""
    import numpy as np
    counts = np.arange(127, 0, -1)
    steps = row[None, :] * (counts[:, None] / peak)
    fits = np.abs(steps - np.round(steps)).max(axis=1) <= _GRID_TOLERANCE
    return peak / counts[fits.argmax()] if fits.any() else None


def store_grid_weights(path, unsigned=False) -> int:
    """Store float Conv/MatMul/Gemm weights that QAT already put on an int8 grid as int8 + DequantizeLinear.

    tf2onnx folds TF-MOT's weight fake-quantizers (and the BatchNormalization after them) into float
    constants. Left float, onnxruntime (1.32, its WeightBiasQuantization pass) re-quantizes the
    weight of a Conv/Gemm that sits between quantized activations to a *per-tensor* int8 grid: the
    digits QAT test model fell from cosine 1.0 (optimizations off) to 0.990 against the QAT
    reference; with the grid the model was trained on stored here, 0.9994 (what is left is integer
    rounding), and the file is int8-sized. Every weight on a grid is stored, whatever feeds its
    node: a convolution after a MaxPool used to stay float. ``unsigned`` as for
    ``fold_weight_quantizers``. Returns how many weights were stored.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from edgekit.converters.onnx_format import check
    from edgekit.converters.torch_onnx import onnx_save
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_nodes, stored = [], 0
    for node in graph.node:
        # Conv weights are [out, in, kh, kw] (channels on axis 0); MatMul/Gemm B is [in, out] (axis 1).
        axis = {"Conv": 0, "MatMul": 1, "Gemm": 1}.get(node.op_type)
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            axis = 0
        if axis is None or len(node.input) < 2 or node.input[1] not in inits or uses.get(node.input[1]) != 1:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.dtype != np.float32 or weight.ndim < 2:
            continue
        scale = _grid_scale(weight, axis)
        if scale is None:
            continue
        shape = [1] * weight.ndim
        if scale.ndim:
            shape[axis] = -1
        q = np.round(weight / scale.reshape(shape)).astype(np.int32)
        zero = np.zeros(scale.shape, np.int32)
        if unsigned:
            q, zero = q + 128, zero + 128
        dtype = np.uint8 if unsigned else np.int8
        base = node.input[1]
        graph.initializer.remove(inits.pop(base))
        graph.initializer.extend([numpy_helper.from_array(q.astype(dtype), base + "_q"),
                                  numpy_helper.from_array(scale.astype(np.float32), base + "_scale"),
                                  numpy_helper.from_array(zero.astype(dtype), base + "_zero_point")])
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zero_point"],
                                          [base], name=base + "_dequantize", **({"axis": axis} if scale.ndim else {})))
        stored += 1
    if stored:
        nodes = new_nodes + list(graph.node)  # the DequantizeLinear nodes precede their consumers
        del graph.node[:]
        graph.node.extend(nodes)
        onnx_save(model, path)
        check(path)
    return stored

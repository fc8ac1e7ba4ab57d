"""Quantization-aware training before export, and the int8 artifacts made from its result.

PyTorch: NNCF inserts fake quantizers calibrated on the calibration data (``nncf.quantize``),
the user's training hook fine-tunes the model with them in place, and ``nncf.strip`` leaves a
module whose fake-quantize operations carry the learned scales. Keras: TensorFlow Model
Optimization's ``quantize_model`` for tf_keras models (Keras 3 models have no QAT path in this
stack); after tf_keras pruning, the pruning-preserving scheme keeps the zeros.

The int8 artifacts are converted from the QAT model directly — ONNX QuantizeLinear/
DequantizeLinear pairs, OpenVINO FakeQuantize, TFLite full-integer — so nothing is calibrated a
second time and what training learned is what ships.
"""

import copy
import dataclasses

from edgekit.errors import ConfigError, ConversionError, UnsupportedError

from ._nncf import quiet_nncf


class QATResult:
    def __init__(self, model, details, notes=()):
        self.model = model
        self.details = details
        self.notes = tuple(notes)


def _torch_samples(source, calibration, count):
    import torch
    names = [s.name for s in source.input_specs]
    return [tuple(torch.from_numpy(calibration.inputs[n][i:i + 1].copy()) for n in names) for i in range(count)]


def qat_torch(source, options, calibration, quantize_options, pruned=False) -> QATResult:
    import nncf
    import torch

    if source.is_program:
        raise ConfigError("QAT needs the nn.Module (FILE.py:factory or a live module), not a .pt2 program")

    class Wrapped(torch.nn.Module):
        """NNCF attaches its hook storage as a child module, which an nn.Sequential would then run
        as a layer; a wrapper keeps the user's module as one child."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    module = Wrapped(copy.deepcopy(source._module()).cpu()).eval()
    count = min(len(calibration), quantize_options.max_calibration_samples)
    samples = _torch_samples(source, calibration, count)
    try:
        with quiet_nncf():
            quantized = nncf.quantize(module, nncf.Dataset(samples, lambda item: item), subset_size=count)
        hold = _zero_holder(quantized) if pruned else None
        quantized.train()
        options.train(quantized, options.steps, [hold] if hold else [])
        quantized.eval()
        if hold:
            hold()
        with quiet_nncf():
            stripped = nncf.strip(quantized, example_input=samples[0] if len(samples[0]) > 1 else samples[0][0])
    except (ConfigError, UnsupportedError):
        raise
    except Exception as exc:
        raise UnsupportedError(f"NNCF quantization-aware training failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    return QATResult(stripped.eval(), {"tool": f"nncf {nncf.__version__}", "calibration_samples": count,
                                       "steps": options.steps})


def _zero_holder(module):
    """A callback for the training hook that keeps pruned weights at zero (call it after every
    optimizer step): QAT after pruning must not grow the pruned weights back."""
    import torch

    from .prune_torch import prunable
    held = [(m.weight, m.weight.detach() != 0) for m in prunable(module).values() if bool((m.weight == 0).any())]

    def hold():
        with torch.no_grad():
            for weight, mask in held:
                weight.mul_(mask)
    return hold if held else None


def qat_keras(source, options, calibration, quantize_options, pruned=False) -> QATResult:
    if source.kind != "tf_keras":
        raise UnsupportedError("QAT for Keras needs a tf_keras model (TensorFlow Model Optimization does not "
                               "support Keras 3); Keras 3 models get post-training int8 with --int8")
    import tensorflow_model_optimization as tfmot
    quantization = tfmot.quantization.keras
    try:
        if pruned:
            from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
                default_8bit_prune_preserve_quantize_scheme as preserve)
            annotated = quantization.quantize_annotate_model(source.native)
            model = quantization.quantize_apply(annotated, preserve.Default8BitPrunePreserveQuantizeScheme())
            scheme = "pruning-preserving QAT (Default8BitPrunePreserveQuantizeScheme)"
        else:
            model = quantization.quantize_model(source.native)
            scheme = "quantize_model (default 8-bit scheme)"
    except Exception as exc:
        raise UnsupportedError(f"TensorFlow Model Optimization cannot quantize this model: {type(exc).__name__}: "
                               f"{exc}") from None
    options.train(model, options.steps, [])
    return QATResult(model, {"tool": "tensorflow_model_optimization", "scheme": scheme, "steps": options.steps})


def export_int8(qat_source, fmt, out_path, config, example):
    """The int8 artifact of ``fmt`` converted from the QAT model (no second calibration)."""
    from edgekit.export import CONVERTERS
    framework = qat_source.framework
    if (framework, fmt) == ("tf", "tflite"):
        import tensorflow as tf

        from edgekit.export.tf_tflite import converter, run_converter
        conv = converter(qat_source)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        run_converter(conv, out_path, "QAT int8")
        from edgekit.export import ConversionResult
        return ConversionResult(out_path, f"tf.lite.TFLiteConverter (QAT model) tensorflow {tf.__version__}",
                                source=qat_source)
    if (framework, fmt) == ("torch", "tflite"):
        raise UnsupportedError("litert-torch does not convert NNCF's fake-quantized modules; "
                               "TFLite int8 of a PyTorch model is post-training (PT2E) only")
    try:
        if (framework, fmt) == ("tf", "onnx"):
            from edgekit.export.tf_onnx import convert_keras
            result = convert_keras(qat_source, out_path, config)
        else:
            result = CONVERTERS.get((framework, fmt))(qat_source, out_path, config, example=example)
    except ConversionError as exc:
        raise UnsupportedError(f"{fmt} from the QAT model: {exc}") from None
    if fmt == "onnx":
        folded = fold_weight_quantizers(out_path)
        result = dataclasses.replace(result, notes=result.notes + (
            f"{folded} weight QuantizeLinear nodes folded into int8 initializers",))
    return result


def fold_weight_quantizers(path) -> int:
    """Store fake-quantized weights as int8: ``QuantizeLinear(float initializer)`` becomes the int8
    initializer it computes (exporters keep the float weight and quantize it at every run, which
    makes the file bigger than the fp32 one). Returns how many were folded."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekit.export.onnx_format import check
    from edgekit.export.torch_onnx import onnx_save
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3 and all(n in inits for n in node.input[:3]) \
                and consumers.get(node.input[0]) == 1:
            weight, scale, zero = (numpy_helper.to_array(inits[n]) for n in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * weight.ndim
                shape[axis] = -1
                scale, zero_b = scale.reshape(shape), zero.reshape(shape)
            else:
                zero_b = zero
            info = np.iinfo(zero.dtype)
            q = np.clip(np.round(weight / scale) + zero_b.astype(np.int32), info.min, info.max).astype(zero.dtype)
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

"""Static int8 of ONNX transformer encoders with NNCF's ONNX backend (``ModelType.TRANSFORMER``).

onnxruntime's ``quantize_static`` of every op collapses a real all-MiniLM-L6-v2 (per-sentence
cosine of the pooled embedding 0.42 / 0.24 worst on an AVX2 EPYC); NNCF's transformer scheme (its
own SmoothQuant, no quantizers after attention-mask arithmetic) keeps it at 0.997 / 0.984. Two
changes make the result fast on onnxruntime's x86 kernels, measured on that model:

- the MatMuls of two activations (Q·Kᵀ, P·V) and the embedding Gathers stay float: quantized, the
  former add noise for no kernel gain and the latter make onnxruntime dequantize the whole 30522x384
  table on every call (+40% latency);
- NNCF's activations are int8; onnxruntime's fast x86 kernels take uint8 (s8 activations left the
  Q/K/V MatMuls as DequantizeLinear -> float MatMul: 1.3-1.8x fp32). Each activation
  QuantizeLinear/DequantizeLinear pair is rewritten to uint8 with zero point + 128 and the same
  scale — the same real values; then every weight MatMul fuses to MatMulIntegerToFloat;
- those u8*s8 kernels saturate on x86 without VNNI when weights use all 8 bits, so weights are
  7-bit (NNCF's overflow fix) unless ``reduce_range`` is off, as for every int8 edgekit makes. A
  Keras transformer trained on digits (AVX2 EPYC): cosine 0.979, top-1 agreement 0.947 with 8-bit
  weights; 0.9989 and 0.986 with 7-bit.

Result on that MiniLM: 0.9963 / 0.9839 at 0.78-0.84x fp32 latency (dynamic int8 0.9919 / 0.9785 at
0.76-0.82x): more accurate than dynamic int8 at about its speed, so it is the transformer ladder's
last rung.
"""

import numpy as np

from edgekit.choices import Scheme
from edgekit.errors import CalibrationError, QuantizationError
from edgekit.timing import Counted

from . import QuantizationResult
from ._nncf import quiet_nncf


def quantize_transformer(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import nncf
    import onnx
    if calibration is None:
        raise CalibrationError("static int8 needs calibration data (--calib)")
    model = onnx.load(str(conversion.path))
    ignored = float_nodes(model.graph)
    count = len(calibration)  # capped to max_calibration_samples by the pipeline
    samples = Counted({name: array[i:i + 1] for name, array in calibration.inputs.items()} for i in range(count))
    try:
        with quiet_nncf():
            quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=count, fast_bias_correction=True,
                                      ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                                      advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=(
                                          nncf.OverflowFix.ENABLE if options.reduce_range else nncf.OverflowFix.DISABLE)))
    except (RuntimeError, ValueError, nncf.ValidationError) as exc:
        raise QuantizationError(f"NNCF static quantization failed: {type(exc).__name__}: {exc}") from exc
    pairs = activations_to_uint8(quantized.graph)
    onnx.save(quantized, str(out_path))
    details = {"tool": "nncf.quantize (ONNX backend, ModelType.TRANSFORMER)", "format": "QDQ",
               "activations": "uint8 asymmetric (NNCF's int8, zero point + 128)",
               "weights": "int8 symmetric" + (", 7-bit (NNCF's overflow fix)" if options.reduce_range else ""),
               "per_channel": True, "calibration_samples": count, "nodes_kept_fp32": sorted(ignored),
               "activation_pairs_to_uint8": pairs}
    return QuantizationResult(out_path, Scheme.W8A8_STATIC, details,
                              (f"static int8 (NNCF transformer scheme); the {len(ignored)} activation x activation "
                               "MatMuls and embedding Gathers stay float",))


def float_nodes(graph) -> list:
    """MatMuls with no constant operand (attention's Q·Kᵀ and P·V) and Gathers from a constant table
    (embeddings)."""
    constant = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node
            if (n.op_type == "MatMul" and not any(i in constant for i in n.input))
            or (n.op_type == "Gather" and n.input[0] in constant)]


def activations_to_uint8(graph) -> int:
    """Rewrite each int8 QuantizeLinear of an activation, and the DequantizeLinear nodes reading it,
    to uint8 (zero point + 128, same scale: the same real values). Weights (int8 initializers read
    by a DequantizeLinear) stay int8. Returns the number of QuantizeLinear nodes rewritten."""
    from onnx import TensorProto, numpy_helper
    initializers = {i.name: i for i in graph.initializer}
    renamed = {}

    def uint8_zero_point(name):
        if name not in renamed:
            shifted = numpy_helper.to_array(initializers[name]).astype(np.int16) + 128
            renamed[name] = f"{name}_uint8"
            graph.initializer.append(numpy_helper.from_array(shifted.astype(np.uint8), renamed[name]))
        return renamed[name]

    def int8_zero_point(node):
        return (len(node.input) > 2 and node.input[2] in initializers
                and initializers[node.input[2]].data_type == TensorProto.INT8)

    rewritten = set()
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers and int8_zero_point(node):
            node.input[2] = uint8_zero_point(node.input[2])
            rewritten.add(node.output[0])
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in rewritten and (node.op_type != "DequantizeLinear" or position):
                raise QuantizationError(f"NNCF's quantized tensor {name} feeds {node.op_type}, not a "
                                        "DequantizeLinear: cannot move it to uint8")
        if node.op_type == "DequantizeLinear" and node.input[0] in rewritten and int8_zero_point(node):
            node.input[2] = uint8_zero_point(node.input[2])
    # Shape inference recorded the rewritten tensors as int8.
    kept = [v for v in graph.value_info if v.name not in rewritten]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(rewritten)

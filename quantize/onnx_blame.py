"""Per-layer blame for an ONNX int8 model: which nodes add the most quantization error.

Both graphs (the float one the quantizer started from, and its QDQ int8 result, whose compute
nodes keep the float graph's tensor names) are run on a few calibration samples with every
intermediate tensor exposed. For each node, the signal-to-quantization-noise ratio (SQNR) of its
output against the float graph's is compared with that of its inputs: the dB the node *loses*
is its own contribution (error it merely passes on from upstream is not its fault), ranked by
the relative noise power it adds (``noise_added``: 0.01 = 1% of the output's energy). The ranking
drives the mixed-precision recipe and is shown in the report.

A tensor is compared as its consumers see it: onnxruntime's QDQ graph names the dequantized copy
``T_DequantizeLinear_Output`` (and folds an activation into the Q/DQ pair, so ``T`` itself may be
the value before the activation). A blamed tensor stays quantized while its producer or any of its
consumers is quantized: keeping it in float keeps the node that produces it (through activations
and reshapes up to the compute node) and every node that reads it (``keep_set``). Measured on an
MLP whose middle layer carries a 1000x channel: keeping the Gemm after the outlier alone left
cosine at 0.63; producer, activation and consumer together gave 0.99998.
"""

import math

import numpy as np

from edgekit.parity import energies, masked, sqnr_from_energies, token_mask

from .blame import EXACT_DB, SAMPLES, noise

# Samples per blame run. Every tensor of both graphs is an output: the mixed-precision stage of a
# Keras MobileNetV2 at 224x224 peaked at 5.5 GB RSS with the 32 samples in one run, at 2.5 GB in
# runs of 4. The ranking is the same (signal and noise energies are sums over the samples).
BATCH = 4


def _with_every_output(model):
    """A copy of ``model`` whose graph outputs include every float node output."""
    import onnx
    from onnx import shape_inference
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # shapes only help name the float tensors; unknown types are tried anyway
        pass
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in have and types.get(name, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT:
                model.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
                have.add(name)
    return model


def _session(model):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _activations(session, feeds) -> dict:
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    return {n: v for n, v in zip(names, values) if isinstance(v, np.ndarray) and v.dtype.kind == "f"}


def _energies(float_session, int8_session, inputs) -> dict:
    """{float tensor: [signal, noise]} summed over the samples of ``inputs``, ``BATCH`` at a time:
    every tensor of both graphs is held for one batch only."""
    totals = {}
    count = len(next(iter(inputs.values())))
    for start in range(0, count, BATCH):
        feeds = {k: v[start:start + BATCH] for k, v in inputs.items()}
        mask = token_mask(feeds)
        reference, quantized = _activations(float_session, feeds), _activations(int8_session, feeds)
        for name, ref in reference.items():
            value = quantized.get(f"{name}_DequantizeLinear_Output", quantized.get(name))
            if value is not None and value.shape == ref.shape:
                signal, error = energies(masked(ref, mask)[0], masked(value, mask)[0])
                total = totals.setdefault(name, [0.0, 0.0])
                total[0] += signal
                total[1] += error
    return totals


def _sqnr(signal, error) -> float:
    """SQNR in dB within +-EXACT_DB (an exact tensor would be infinite)."""
    return max(-EXACT_DB, min(EXACT_DB, sqnr_from_energies(signal, error)))


def blame(float_path, int8_path, inputs: dict) -> list:
    """Rows ``{"node", "op", "sqnr_db", "loss_db"}`` for the float graph's nodes, worst first:
    ``loss_db`` is how many dB of SQNR the node loses against its worst input. Per-token tensors of
    a model with an ``attention_mask`` input are compared at the real tokens only, as the gate does."""
    import onnx
    float_model = onnx.load(str(float_path))
    sessions = _session(_with_every_output(float_model)), _session(_with_every_output(onnx.load(str(int8_path))))
    totals = _energies(*sessions, {k: v[:SAMPLES] for k, v in inputs.items()})
    sqnr = {name: _sqnr(signal, error) for name, (signal, error) in totals.items()}
    rows = []
    for node in float_model.graph.node:
        outputs = [sqnr[o] for o in node.output if o in sqnr and not math.isnan(sqnr[o])]
        if not outputs or not node.name:
            continue
        upstream = [sqnr.get(i, EXACT_DB) for i in node.input if i]
        upstream = [v for v in upstream if not math.isnan(v)] or [EXACT_DB]
        out_db, in_db = min(outputs), min(upstream)
        added = max(0.0, noise(out_db) - noise(in_db))
        rows.append({"node": node.name, "op": node.op_type, "sqnr_db": round(out_db, 2),
                     "loss_db": round(max(0.0, in_db - out_db), 2), "noise_added": float(f"{added:.3g}")})
    rows.sort(key=lambda r: r["noise_added"], reverse=True)
    return rows


# Nodes a kept node's input is traced back through to the compute node that produced it.
_PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Reshape", "Transpose",
                 "Flatten", "Squeeze", "Unsqueeze", "Identity", "MaxPool", "Cast"}


def keep_set(graph, names) -> list:
    """``names``, the nodes that read their outputs, and the nodes producing their inputs through
    activations and reshapes up to the compute node."""
    producer = {out: node for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    kept = set()
    for name in names:
        kept.add(name)
        outputs = set(by_name[name].output)
        kept.update(node.name for node in graph.node if outputs.intersection(node.input))
        pending = [i for i in by_name[name].input if i in producer]
        while pending:
            node = producer[pending.pop()]
            if node.name in kept:
                continue
            kept.add(node.name)
            if node.op_type in _PASS_THROUGH:
                pending += [i for i in node.input[:1] if i in producer]
    return sorted(kept)

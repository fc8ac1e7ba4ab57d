"""Per-layer blame for TFLite int8 (TensorFlow sources): which ops add the most quantization error.

The TFLite converter's calibrated model is quantized once more in "whole model" debug mode: every
quantized op is followed by a NumericVerify op that compares its output with the same tensor of a
float copy of the graph run alongside (float inputs all the way, not the quantized path's). That is
the error accumulated up to each op, as ``onnx_blame`` measures it on ONNX graphs, and the ranking
is the same: the relative noise power an op *adds* over its worst input (error merely passed on from
upstream is not its fault). Per-layer verify (the debugger's default) would miss the classic case:
an op whose input carries one huge channel has its input quantized coarsely, and its float twin is
fed the same coarse input.

TensorFlow's ``QuantizationDebugger`` provides the calibrated model and runs the debug model; the
whole-model debug model and the denylisted final model come from the converter's ``mlir_quantize``,
which the debugger itself calls (the debugger does not expose whole-model verification).
"""

import numpy as np

from . import blame as ranking

_VERIFY = "NumericVerify"
# Ops a kept op's input is traced back through to the op that computed it.
_PASS_THROUGH = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "MAX_POOL_2D", "RELU", "RELU6", "LOGISTIC",
                 "HARD_SWISH", "PAD"}


def calibrated(converter, samples):
    """The converter's model with calibration statistics, not yet quantized (the debugger's
    public route to it; ``converter`` has its representative dataset set)."""
    import tensorflow as tf
    return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=samples).calibrated_model


def quantized(calibrated_model, keep=(), verify=False) -> bytes:
    """int8 with float I/O; ``keep``: output tensor names of ops left in float; ``verify``: the
    whole-model debug model instead."""
    from tensorflow.lite.python import convert
    return convert.mlir_quantize(calibrated_model, enable_numeric_verify=verify, enable_whole_model_verify=verify,
                                 denylisted_nodes=list(keep) or None)


class _Graph:
    """The debug model's ops: names, types, producers and consumers by tensor index."""

    def __init__(self, interpreter):
        self.names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
        # tf.lite.Interpreter lists its ops only through this method (the debugger uses it too).
        self.ops = interpreter._get_ops_details()  # noqa: SLF001
        self.producer = {out: op for op in self.ops for out in op["outputs"]}

    def verified(self):
        """(NumericVerify op's output tensor name, the quantized tensor it checks, that tensor's name
        in the float graph: its float twin's, which the denylist takes)."""
        return [(self.names[op["outputs"][0]], op["inputs"][0], self.names[op["inputs"][1]])
                for op in self.ops if op["op_name"] == _VERIFY]


def blame(calibrated_model, samples) -> tuple:
    """(rows, neighbours): rows ``{"node", "op", "sqnr_db", "noise_added"}`` (``node``: the op's
    output tensor name, as the converter's denylist takes it), worst first; ``neighbours[node]``: the
    ops around it that ``keep_set`` keeps with it. ``samples()`` yields input lists in the
    interpreter's input order."""
    import tensorflow as tf
    noise, energy, neighbours = {}, {}, {}

    def _noise(reference, value, scale, zero_point):
        return float(np.mean(((value.astype(np.float64) - zero_point) * scale - reference) ** 2))

    def _energy(reference, value, scale, zero_point):
        return float(np.mean(np.square(reference, dtype=np.float64)))

    debug = quantized(calibrated_model, verify=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug, debug_dataset=samples,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"noise": _noise, "energy": _energy}))
    debugger.run()
    graph = _Graph(tf.lite.Interpreter(model_content=debug))
    name = {}
    for verify_name, index, float_name in graph.verified():
        stats = debugger.layer_statistics.get(verify_name)
        if stats:
            noise[index], energy[index], name[index] = stats["noise"], stats["energy"], float_name
    relative = {i: (noise[i] / energy[i] if energy[i] > 0 else float(noise[i] > 0)) for i in noise}
    rows = []
    for index, own in relative.items():
        op = graph.producer.get(index)
        if op is None:
            continue
        upstream = [relative.get(i, 0.0) for i in op["inputs"] if i >= 0]
        added = max(0.0, own - max(upstream, default=0.0))
        rows.append({"node": name[index], "op": op["op_name"], "sqnr_db": round(ranking.db(own), 2),
                     "noise_added": float(f"{added:.3g}")})
        neighbours[name[index]] = {name.get(i, graph.names[i]) for i in _producers(graph, index) | _consumers(graph, index)}
    rows.sort(key=lambda r: r["noise_added"], reverse=True)
    return rows, neighbours


def keep_set(neighbours, names) -> list:
    """``names`` with the ops that compute their inputs (through reshapes and activations) and the
    ops that read their outputs: a tensor stays quantized while either side of it is."""
    return sorted({*names, *(n for name in names for n in neighbours[name])})


def _producers(graph, index) -> set:
    """Output tensors of the ops computing the inputs of the op that produced ``index``."""
    found, pending = set(), [i for i in graph.producer[index]["inputs"] if i >= 0]
    while pending:
        op = graph.producer.get(pending.pop())
        if op is None or op["op_name"] == _VERIFY:
            continue
        found.update(op["outputs"])
        if op["op_name"] in _PASS_THROUGH:
            pending += [i for i in op["inputs"][:1] if i >= 0]
    return found


def _consumers(graph, index) -> set:
    return {o for op in graph.ops if index in op["inputs"] and op["op_name"] != _VERIFY for o in op["outputs"]}

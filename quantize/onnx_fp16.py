"""ONNX fp16: weights and compute in float16, inputs and outputs kept float32."""

from edgekit.choices import Scheme
from edgekit.errors import QuantizationError

from . import QuantizationResult


def _toposort(graph) -> None:
    """Reorder nodes so each comes after its producers.

    convert_float_to_float16(keep_io_types=True) appends the input Cast nodes at
    the end of the graph, which onnx.checker rejects ("must be topologically sorted").
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise QuantizationError("fp16 graph has a cycle or a dangling input; cannot order it")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def quantize(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    try:
        model = convert_float_to_float16(onnx.load(str(conversion.path)), keep_io_types=True)
        _toposort(model.graph)
        onnx.save_model(model, str(out_path))
    except QuantizationError:
        raise
    except Exception as exc:
        raise QuantizationError(f"fp16 conversion failed: {type(exc).__name__}: {exc}") from exc
    return QuantizationResult(out_path, Scheme.FP16, {"io": "float32", "tool": "onnxruntime.transformers.float16"})

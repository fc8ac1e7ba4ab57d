"""ONNX files: structural check after every write, and a description of what the file really holds."""

from collections import Counter
from pathlib import Path

from edgekit.errors import ConversionError

_DTYPE_NAMES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 3: "int8", 5: "int16",
                6: "int32", 7: "int64", 9: "bool", 16: "bfloat16"}


def check(path: Path) -> None:
    """onnx.checker (full check) and strict shape inference; a failure is a ConversionError."""
    import onnx
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ConversionError(f"{Path(path).name} failed the ONNX check: {type(exc).__name__}: {exc}") from exc


def model_type(path: Path) -> str:
    """``transformer`` for attention graphs (Softmax and MatMul, no convolution), else ``cnn``: the
    recipe search tries a different int8 ladder on each (edgekit.quantize.recipes)."""
    import onnx

    from . import model_type_of
    return model_type_of(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def describe(path: Path) -> dict:
    """Weight dtypes (by count of elements) and operator counts as found in the file."""
    import numpy as np
    import onnx
    model = onnx.load(str(path))
    weights = Counter()
    for init in model.graph.initializer:
        weights[_DTYPE_NAMES.get(init.data_type, str(init.data_type))] += int(np.prod(init.dims)) if init.dims else 1
    ops = Counter(node.op_type for node in model.graph.node)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    from onnx import numpy_helper

    from . import weight_sparsity
    sparsity = weight_sparsity(_centred(model.graph, numpy_helper))
    return {"weight_elements_by_dtype": dict(weights), "op_counts": dict(sorted(ops.items())),
            "opset": opsets, "ir_version": model.ir_version, "sparsity": sparsity}


def _centred(graph, numpy_helper):
    """Every initializer as an array, quantized weights minus their DequantizeLinear zero point: a
    pruned weight stored as uint8 (zero point 128) is 128 in the file and zero in the model."""
    import numpy as np
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or node.input[0] not in arrays \
                or node.input[2] not in arrays:
            continue
        weight, zero = arrays[node.input[0]], arrays[node.input[2]]
        if zero.ndim == 1 and zero.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * weight.ndim
            shape[axis] = -1
            zero = zero.reshape(shape)
        arrays[node.input[0]] = weight.astype(np.int32) - zero.astype(np.int32)
    return arrays.values()


def rename_outputs(graph, names):
    """Give the graph outputs (in order) the source's names.

    Converters' own naming can collide with an internal value of the same name (the
    dynamo exporter's dict output "embedding" next to the aten::embedding result) and
    break SSA; renaming afterwards moves any such internal value out of the way first.
    """
    _rename_values(graph, [o.name for o in graph.output], names, "outputs")


def rename_inputs(graph, names):
    initializers = {i.name for i in graph.initializer}
    _rename_values(graph, [i.name for i in graph.input if i.name not in initializers], names, "inputs")


def _rename_values(graph, current, names, kind):
    outputs = current
    if len(names) != len(outputs):
        raise ConversionError(f"the exported graph has {len(outputs)} {kind}, the model has {len(names)}")

    def rename(old, new):
        for node in graph.node:
            node.input[:] = [new if v == old else v for v in node.input]
            node.output[:] = [new if v == old else v for v in node.output]
        for value in list(graph.output) + list(graph.value_info) + list(graph.input):
            if value.name == old:
                value.name = new
        for init in graph.initializer:
            if init.name == old:
                init.name = new

    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    for old, new in zip(outputs, names):
        if old == new:
            continue
        if new in taken:
            rename(new, f"{new}__internal")
        rename(old, new)

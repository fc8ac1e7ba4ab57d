"""OpenVINO IR files: a read check after every write, and what the IR really holds.

An IR is two files, ``NAME.xml`` (the graph) and ``NAME.bin`` (the weights); the
``.bin`` is the artifact's companion, hashed in the manifest with it.
"""

from collections import Counter
from pathlib import Path

from edgekit.errors import ConversionError

from . import weight_sparsity

# Operations that carry the model's weights and run in int8 when quantized.
WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
            "MatMul"}
# Operations between a quantizer (or an int8 constant) and the operation it feeds that keep
# the values quantized: NNCF's weight decompression (Convert, Multiply, Subtract), shape
# operations, and those the CPU plugin runs on int8 data (pooling, concatenation, slicing).
_PASSTHROUGH = {"Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool",
                "AvgPool", "Concat", "Split", "VariadicSplit", "StridedSlice", "DepthToSpace", "Interpolate"}
_INTEGER = {"i8", "u8", "i4", "u4"}


def companions(path: Path) -> list:
    return [Path(path).with_suffix(".bin")]


def _read(path):
    from edgekit.runtime.backends._openvino import core
    return core().read_model(str(path))


def check(path: Path) -> None:
    """OpenVINO must read the graph with its weights."""
    from edgekit.runtime.backends._openvino import check_weights
    path = Path(path)
    try:
        check_weights(path)
        _read(path)
    except Exception as exc:
        raise ConversionError(f"{path.name} failed the OpenVINO read check: {type(exc).__name__}: {exc}") from exc


def _quantized_input(port, depth=8) -> bool:
    node = port.get_source_output().get_node()
    for _ in range(depth):
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in _INTEGER
        if kind not in _PASSTHROUGH:
            return False
        if kind in ("Multiply", "Subtract"):  # weight decompression: int8 constant * scale
            return any(_quantized_input(i, depth - 1) for i in node.inputs())
        node = node.input(0).get_source_output().get_node()
    return False


def layer_precisions(model) -> tuple[list, list]:
    """(names of weighted layers running in int8, names of those left in float)."""
    int8, floating = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED:
            quantized = all(_quantized_input(op.input(i)) for i in range(min(2, op.get_input_size())))
            (int8 if quantized else floating).append(op.get_friendly_name())
    return int8, floating


def describe(path: Path) -> dict:
    """Constant dtypes (by element count), operator counts, and which weighted layers are int8."""
    import numpy as np
    model = _read(path)
    weights = Counter()
    ops = Counter()
    matrices = []
    for op in model.get_ops():
        kind = op.get_type_name()
        ops[kind] += 1
        if kind == "Constant":
            shape = op.get_output_shape(0)
            weights[op.get_element_type().get_type_name()] += int(np.prod([d for d in shape])) if len(shape) else 1
            if op.get_element_type().get_type_name() in ("f32", "f16", "i8", "u8"):
                matrices.append(op.get_data())
    int8, floating = layer_precisions(model)
    description = {"weight_elements_by_dtype": dict(weights), "op_counts": dict(sorted(ops.items())),
                   "weights_file_bytes": Path(path).with_suffix(".bin").stat().st_size,
                   "sparsity": weight_sparsity(matrices)}
    if int8:
        description.update(int8_layers=len(int8), float_layers=floating)
    return description

"""TFLite files: a load-and-allocate check after every write, and what the file really holds."""

from collections import Counter
from pathlib import Path

from edgekit.errors import ConversionError


def _interpreter(path):
    from edgekit.runtime.backends._tflite import interpreter_class
    interpreter = interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def check(path: Path) -> None:
    """The interpreter must load the flatbuffer and allocate its tensors."""
    try:
        _interpreter(path)
    except Exception as exc:
        raise ConversionError(f"{Path(path).name} failed the TFLite check: {type(exc).__name__}: {exc}") from exc


def describe(path: Path) -> dict:
    """Constant tensor dtypes (by element count) and operator counts, read through the interpreter."""
    import numpy as np
    interpreter = _interpreter(path)
    io = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    weights = Counter()
    matrices = []
    for detail in interpreter.get_tensor_details():
        if detail["index"] in io:
            continue
        try:
            value = interpreter.get_tensor(detail["index"])  # only constant (buffer-backed) tensors read before invoke
        except ValueError:
            continue
        weights[np.dtype(detail["dtype"]).name] += int(np.prod(detail["shape"])) if len(detail["shape"]) else 1
        if value.dtype.kind in "fi":
            matrices.append(value)
    try:
        ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
    except AttributeError:  # older interpreters
        ops = Counter()
    from . import weight_sparsity
    return {"weight_elements_by_dtype": dict(weights), "op_counts": dict(sorted(ops.items())),
            "sparsity": weight_sparsity(matrices)}

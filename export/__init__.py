"""``edgekit.converters`` (the ``export/`` folder): one module per (source framework, target
format), each registered as the fp32 route of ``edgekit.routes``.

A converter is a function ``convert(model, out_path, config, example=None) -> ConversionResult``
writing the fp32 artifact of the PreparedModel ``model`` to ``out_path`` (``example`` is a
validated data set for converters that trace). ``FORMATS`` holds, per target format, the file
suffix and the module that checks and describes files of that format (and, for formats of
several files, ``companions(path)``).
"""

from dataclasses import dataclass, field

from edgekit.choices import ModelType

# format -> (artifact suffix, "module:attr" of its checker/describer)
FORMATS = {
    "onnx": (".onnx", "edgekit.converters.onnx_format"),
    "tflite": (".tflite", "edgekit.converters.tflite_format"),
    "openvino": (".xml", "edgekit.converters.openvino_format"),   # + the .bin beside it (its companion)
}


@dataclass(frozen=True)
class ConversionResult:
    path: object                   # the fp32 artifact
    tool: str                      # e.g. "torch.onnx.export (dynamo)"
    notes: tuple = field(default_factory=tuple)
    # The PreparedModel the artifact was converted from: formats whose converter quantizes while
    # converting (TFLite) quantize by converting it again.
    model: object = None
    input_layouts: dict = field(default_factory=dict)  # artifact input name -> layout, where it differs


def model_type_of(ops) -> ModelType:
    """``transformer`` for attention graphs (Softmax and MatMul, no convolution), else ``cnn``, from
    a graph's operator type names (ONNX's or OpenVINO's)."""
    ops = set(ops)
    convolutions = {"Conv", "ConvTranspose", "Convolution", "GroupConvolution"}
    return ModelType.TRANSFORMER if {"Softmax", "MatMul"} <= ops and not convolutions & ops else ModelType.CNN


def weight_sparsity(arrays) -> float | None:
    """Fraction of zeros among the elements of the weight tensors (2-D and up) a file holds:
    pruning counted in the artifact itself, whatever the framework model said."""
    total = zeros = 0
    for array in arrays:
        if array.ndim >= 2:
            total += array.size
            zeros += int((array == 0).sum())
    return zeros / total if total else None


def format_module(fmt: str):
    import importlib
    from edgekit.errors import UnsupportedError
    if fmt not in FORMATS:
        raise UnsupportedError(f"unknown target format {fmt!r}; supported: {sorted(FORMATS)}")
    return importlib.import_module(FORMATS[fmt][1])


__all__ = ["FORMATS", "ConversionResult", "format_module", "weight_sparsity"]

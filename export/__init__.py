"""``edgekit.converters`` (the ``export/`` folder): converters: one module per (source framework, target format), behind one registry.

A converter is a function ``convert(source, out_path, config, example=None) -> ConversionResult``
writing the fp32 artifact of ``source`` to ``out_path`` (``example`` is a validated data set
for converters that trace). ``FORMATS`` holds, per
target format, the file suffix and the module that checks and describes files of
that format (and, for formats of several files, ``companions(path)``). Adding a
(framework, format) pair is one module and one line here.
"""

from dataclasses import dataclass, field

from edgekit.config import ModelType
from edgekit.registry import Registry

CONVERTERS = Registry("converters")
CONVERTERS.register(("torch", "onnx"), "edgekit.converters.torch_onnx:convert",
                    requires=("torch", "onnx", "onnxscript"), extra="torch")
CONVERTERS.register(("onnx", "onnx"), "edgekit.converters.onnx_onnx:convert", requires=("onnx",), extra="onnx")
CONVERTERS.register(("torch", "tflite"), "edgekit.converters.torch_tflite:convert",
                    requires=("torch", "litert_torch"), extra="tflite")
CONVERTERS.register(("tf", "tflite"), "edgekit.converters.tf_tflite:convert", requires=("tensorflow",), extra="tf")
CONVERTERS.register(("tf", "onnx"), "edgekit.converters.tf_onnx:convert", requires=("tensorflow", "tf2onnx", "onnx"),
                    extra="tf")
for _framework in ("torch", "tf", "onnx"):
    CONVERTERS.register((_framework, "openvino"), f"edgekit.converters.openvino_ir:convert_{_framework}",
                        requires=("openvino",), extra="openvino")

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
    source: object = None          # quantizers that convert again (TFLite) start from the source
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


__all__ = ["CONVERTERS", "FORMATS", "ConversionResult", "format_module", "weight_sparsity"]

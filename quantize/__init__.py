"""Post-training quantizers: one module per (format, precision), behind one registry.

A quantizer is ``quantize(conversion, out_path, calibration, options, evaluation=None) ->
QuantizationResult``: ``conversion`` is the fp32 ConversionResult (its ``path``, and its
``source`` for formats whose converter quantizes while converting, like TFLite);
``calibration`` is a validated Dataset (None for schemes that need none); ``evaluation``
is the eval Dataset, for accuracy-controlled schemes. Keys are ``(format, precision)`` or, for a
quantizer that depends on the source framework, ``(framework, format, precision)``.

Scheme names mean the same in every format: ``w8a8-static`` (int8 weights and activations,
calibrated), ``w8a32-dynamic`` (int8 weights, activations quantized on the fly),
``w8a16-static`` (int8 weights, int16 activations), ``fp16`` (half-precision weights).
"""

from dataclasses import dataclass, field

from edgekit.registry import Registry

QUANTIZERS = Registry("quantizers")
QUANTIZERS.register(("onnx", "int8"), "edgekit.quantize.onnx_int8:quantize",
                    requires=("onnx", "onnxruntime"), extra="onnx")
QUANTIZERS.register(("onnx", "fp16"), "edgekit.quantize.onnx_fp16:quantize",
                    requires=("onnx", "onnxruntime"), extra="onnx")
QUANTIZERS.register(("onnx", "dynamic"), "edgekit.quantize.onnx_int8:quantize_dynamic_int8",
                    requires=("onnx", "onnxruntime"), extra="onnx")
# A recipe of the transformer int8 ladder (not a precision): NNCF's static transformer scheme.
QUANTIZERS.register(("onnx", "static-transformer"), "edgekit.quantize.onnx_nncf:quantize_transformer",
                    requires=("onnx", "onnxruntime", "nncf"), extra="nncf")
# "selective" is a recipe of the int8 ladder (int8 with the noisiest ops in float), not a precision.
for _precision in ("fp16", "dynamic", "int8", "int16x8", "selective"):
    QUANTIZERS.register(("tf", "tflite", _precision), f"edgekit.quantize.tflite_tf:quantize_{_precision}",
                        requires=("tensorflow",), extra="tf")

for _precision in ("dynamic", "int8"):
    QUANTIZERS.register(("torch", "tflite", _precision), f"edgekit.quantize.tflite_torch:quantize_{_precision}",
                        requires=("torch", "litert_torch"), extra="tflite")
QUANTIZERS.register(("openvino", "int8"), "edgekit.quantize.openvino_nncf:quantize_int8",
                    requires=("openvino", "nncf"), extra="nncf")
QUANTIZERS.register(("openvino", "fp16"), "edgekit.quantize.openvino_nncf:quantize_fp16",
                    requires=("openvino",), extra="openvino")

# Framework-side compression before export: source framework -> pruner(source, PruneOptions).
PRUNERS = Registry("pruners")
PRUNERS.register("torch", "edgekit.quantize.prune_torch:prune", requires=("torch",), extra="torch")
PRUNERS.register("tf", "edgekit.quantize.prune_keras:prune", requires=("tensorflow",), extra="tf")
# ... and quantization-aware training: framework -> qat(source, QATOptions, calibration, QuantizeOptions, pruned=).
QAT = Registry("qat")
QAT.register("torch", "edgekit.quantize.qat:qat_torch", requires=("torch", "nncf"), extra="nncf")
QAT.register("tf", "edgekit.quantize.qat:qat_keras", requires=("tensorflow",), extra="tf")

SCHEMES = {"int8": "w8a8-static", "fp16": "fp16", "dynamic": "w8a32-dynamic", "int16x8": "w8a16-static"}


def quantizer_for(framework, fmt, precision):
    """The most specific quantizer: (framework, format, precision), else (format, precision)."""
    entries = QUANTIZERS.entries()
    key = (framework, fmt, str(precision))
    return QUANTIZERS.get(key if key in entries else (fmt, str(precision)))


@dataclass(frozen=True)
class QuantizationResult:
    path: object
    scheme: str
    details: dict = field(default_factory=dict)   # recipe actually applied, recorded in the manifest
    notes: tuple = ()


__all__ = ["PRUNERS", "QAT", "QUANTIZERS", "QuantizationResult", "SCHEMES", "quantizer_for"]

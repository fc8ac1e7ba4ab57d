"""Post-training quantizers: one module per (format, precision), behind one registry.

A quantizer is ``quantize(fp32_path, out_path, calibration, options) -> QuantizationResult``;
``calibration`` is a validated Dataset (None for schemes that need none). The
scheme names mean the same in every format: ``w8a8-static`` (int8 weights and
activations, calibrated), ``fp16`` (half-precision weights and compute, float I/O).
"""

from dataclasses import dataclass, field

from edgekit.registry import Registry

QUANTIZERS = Registry("quantizers")
QUANTIZERS.register(("onnx", "int8"), "edgekit.quantize.onnx_int8:quantize",
                    requires=("onnx", "onnxruntime"), extra="onnx")
QUANTIZERS.register(("onnx", "fp16"), "edgekit.quantize.onnx_fp16:quantize",
                    requires=("onnx", "onnxruntime"), extra="onnx")

SCHEMES = {"int8": "w8a8-static", "fp16": "fp16"}


@dataclass(frozen=True)
class QuantizationResult:
    path: object
    scheme: str
    details: dict = field(default_factory=dict)   # recipe actually applied, recorded in the manifest
    notes: tuple = ()


__all__ = ["QUANTIZERS", "QuantizationResult", "SCHEMES"]

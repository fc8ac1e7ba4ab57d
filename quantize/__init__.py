"""Post-training quantizers (one module per format and engine, each registered as routes of
``edgekit.routes``), framework-side pruning and quantization-aware training.

A quantizer is ``quantize(conversion, out_path, calibration, options, evaluation=None) ->
QuantizationResult``: ``conversion`` is the fp32 ConversionResult (its ``path``, and its
``model``, the PreparedModel, for formats whose converter quantizes while converting, like
TFLite); ``calibration`` is a validated Dataset (None for schemes that need none); ``evaluation``
is the eval Dataset, for accuracy-controlled schemes.

Scheme names mean the same in every format: ``w8a8-static`` (int8 weights and activations,
calibrated), ``w8a32-dynamic`` (int8 weights, activations quantized on the fly),
``w8a16-static`` (int8 weights, int16 activations), ``fp16`` (half-precision weights).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QuantizationResult:
    path: object
    scheme: str
    details: dict = field(default_factory=dict)   # recipe actually applied, recorded in the manifest
    notes: tuple = ()


class QATResult:
    """A quantization-aware-trained framework model (``QAT_TRAINERS``), what trained it, notes."""

    def __init__(self, model, details, notes=()):
        self.model = model
        self.details = details
        self.notes = tuple(notes)


__all__ = ["QATResult", "QuantizationResult"]

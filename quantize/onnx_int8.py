"""ONNX static int8 with onnxruntime: QDQ graph, per-channel weights, calibrated activations.

The one module that calls ``quantize_static``; its many arguments are wrapped
here into QuantizeOptions. Defaults are measured on the project's AVX2 CPU
(README, Performance).
"""

import functools
import logging
import tempfile
from pathlib import Path

from edgekit.choices import Scheme, WeightType
from edgekit.errors import CalibrationError, QuantizationError
from edgekit.timing import advance

from . import QuantizationResult, blame, onnx_blame
from ._scope import matching_names

log = logging.getLogger("edgekit.quantize.onnx_int8")
# Calibration runs a graph with an output per tensor: MobileNetV2 at 224x224 peaked at 4.2 GB RSS
# with batches of 32 and 1.7 GB with batches of 8 (and calibrated 2.5x faster).
CALIBRATION_BATCH = 8


class _Reader:
    """onnxruntime CalibrationDataReader over a validated Dataset, in batches."""

    def __init__(self, dataset, count, batch):
        self._dataset = dataset
        self._count = count
        self._batch = batch
        self._start = 0

    def get_next(self):
        if self._start >= self._count:
            return None
        stop = min(self._start + self._batch, self._count)
        batch = {k: v[self._start:stop] for k, v in self._dataset.inputs.items()}
        self._start = stop
        advance(stop, self._count, "calibration samples")
        return batch

    def rewind(self):
        self._start = 0


def _method(name):
    from onnxruntime.quantization import CalibrationMethod
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[str(name)]


def quantize(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    fp32_path = conversion.path
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None:
        raise CalibrationError("int8 needs calibration data (--calib)")
    count = len(calibration)  # capped to max_calibration_samples by the pipeline
    notes = ["int8 I/O was asked for; ONNX QDQ models keep float32 inputs and outputs"] if options.int8_io else []
    with tempfile.TemporaryDirectory(prefix="edgekit-ort-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        except Exception as exc:
            # Symbolic shape inference fails on some dynamo graphs; the optimizer pass alone still helps.
            notes.append(f"pre-processing without symbolic shape inference ({type(exc).__name__})")
            try:
                quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            except Exception as exc2:
                notes.append(f"pre-processing skipped ({type(exc2).__name__}: {exc2})")
                prepared = Path(fp32_path)
        graph = onnx.load(str(prepared)).graph
        graph_nodes = [(n.name, n.op_type) for n in graph.node]
        excluded = matching_names((name for name, _ in graph_nodes), options.keep_fp32, "ONNX")
        run = functools.partial(_quantize_static, prepared, out_path, calibration, count, options)
        run(excluded)
        blamed = []
        if options.keep_sensitive:
            # Mixed precision: rank the nodes by the error they add, keep the worst in float, redo.
            from onnxruntime.quantization.registry import QDQRegistry
            quantizable = {name for name, op in graph_nodes if op in QDQRegistry and name not in excluded}
            rows = onnx_blame.blame(prepared, out_path, calibration.inputs)
            sensitive = blame.most_sensitive(rows, quantizable, options.keep_sensitive)
            kept = onnx_blame.keep_set(graph, sensitive)
            blamed = blame.shown(rows, kept)
            excluded = sorted({*excluded, *kept})
            run(excluded)
            notes.append(f"mixed precision: the {len(sensitive)} nodes that add the most quantization noise "
                         f"({', '.join(sensitive[:5])}{', ...' if len(sensitive) > 5 else ''}) kept in float with the "
                         f"nodes that produce and read their tensors ({len(kept)} nodes)")
    details = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
               "activations": "uint8 asymmetric",
               "weights": "uint8 asymmetric" if options.weight_type == WeightType.U8 else "int8 symmetric", "bias": "float32",
               "per_channel": options.per_channel, "reduce_range": options.reduce_range,
               "calibration_method": str(options.calibration_method),
               "calibration_samples": count, "nodes_kept_fp32": excluded}
    if blamed:
        details["blame"] = blamed
    return QuantizationResult(out_path, Scheme.W8A8_STATIC, details, tuple(notes))


def _quantize_static(prepared, out_path, calibration, count, options, excluded):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    # Bias stays float: with per-channel int32 bias onnxruntime also stores a scale and a zero
    # point per channel, 8 bytes each; float bias saves them at equal speed and accuracy
    # (MobileNetV2: size ratio 0.277 -> 0.266, cosine 0.9999 either way).
    extra = {"CalibMovingAverage": False, "QuantizeBias": False}
    # onnxruntime's histogram collectors stack per-batch arrays and fail on a ragged last
    # batch ("inhomogeneous shape"): feed them one sample at a time.
    batch = CALIBRATION_BATCH if str(options.calibration_method) == "minmax" else 1
    try:
        quantize_static(
            str(prepared), str(out_path), _Reader(calibration, count, batch),
            quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
            reduce_range=options.reduce_range, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if options.weight_type == WeightType.U8 else QuantType.QInt8,
            nodes_to_exclude=list(excluded) or None,
            calibrate_method=_method(options.calibration_method), extra_options=extra,
            calibration_providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise QuantizationError(f"onnxruntime static quantization failed: {type(exc).__name__}: {exc}") from exc


def quantize_dynamic_int8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    """int8 weights, activations quantized at run time (no calibration): MatMul/Gemm-heavy models.
    With ``options.keep_sensitive`` (the transformer ladder's later rungs), the MatMuls/Gemms that add
    the most noise under dynamic quantization (``onnx_blame``, on calibration samples) stay float."""
    run = functools.partial(_quantize_dynamic, conversion.path, out_path, options)
    run([])
    details = {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "int8 symmetric",
               "activations": "dynamic (per call)", "per_channel": options.per_channel,
               "reduce_range": options.reduce_range}
    notes = ()
    if options.keep_sensitive and calibration is not None:
        import onnx
        weighted = {n.name for n in onnx.load(str(conversion.path)).graph.node if n.op_type in ("MatMul", "Gemm")}
        rows = onnx_blame.blame(conversion.path, out_path, calibration.inputs)
        kept = blame.most_sensitive(rows, weighted, options.keep_sensitive)
        run(kept)
        details.update(nodes_kept_fp32=sorted(kept), blame=blame.shown(rows, kept))
        notes = (f"mixed precision: {len(kept)} of {len(weighted)} MatMul/Gemm nodes that add the most noise "
                 f"under dynamic int8 kept in float",)
    return QuantizationResult(out_path, Scheme.W8A32_DYNAMIC, details, notes)


def _quantize_dynamic(fp32_path, out_path, options, excluded):
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    try:
        ort_quantize_dynamic(str(fp32_path), str(out_path), per_channel=options.per_channel,
                             reduce_range=options.reduce_range, weight_type=QuantType.QInt8,
                             nodes_to_exclude=list(excluded) or None)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime dynamic quantization failed: {type(exc).__name__}: {exc}") from exc

"""TFLite quantization of TensorFlow/Keras models: the converter quantizes while converting.

fp16 (float16 weights), dynamic (int8 weights, ``w8a32-dynamic``), int8 (full integer,
calibrated; float I/O, or int8 I/O with ``int8_io``), int16x8 (int8 weights, int16
activations), selective (int8 with the ops that add the most quantization noise left in float).
Each starts from the same SavedModel as the fp32 artifact.

Selective quantization ranks the quantized ops by the noise each adds over its worst input
(``tflite_blame``: the converter's whole-model NumericVerify debug mode, ranked as ``onnx_blame``
ranks ONNX nodes) and denylists the worst ``keep_sensitive`` fraction with the ops around them, so
the converter leaves those in float with quantize/dequantize around them.
"""

import warnings
from pathlib import Path

import numpy as np

from edgekit.choices import Scheme
from edgekit.errors import CalibrationError, QuantizationError
from edgekit.timing import advance
from edgekit.converters.tf_tflite import converter, run_converter

from . import QuantizationResult, blame, tflite_blame


def _representative(calibration, names):
    count = len(calibration)  # capped to max_calibration_samples by the pipeline

    def samples():
        for i in range(count):
            yield {name: calibration.inputs[name][i:i + 1] for name in names}
            advance(i + 1, count, "calibration samples")
    return samples, count


def _calibrated(conversion, calibration, options, ops, what):
    import tensorflow as tf
    if calibration is None:
        raise CalibrationError(f"TFLite {what} needs calibration data (--calib)")
    source = conversion.model
    conv = converter(source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    samples, count = _representative(calibration, [s.name for s in source.input_specs])
    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [ops]
    return conv, count


def quantize_int8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv, count = _calibrated(conversion, calibration, options, tf.lite.OpsSet.TFLITE_BUILTINS_INT8, "int8")
    if options.int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    int8_float_inputs = [s.name for s in conversion.model.input_specs if np.dtype(s.dtype).kind != "f"]
    run_converter(conv, out_path, "int8")
    details = {"tool": "tf.lite.TFLiteConverter", "weights": "int8 per-channel (conv) / per-tensor",
               "activations": "int8", "io": "int8" if options.int8_io else "float32",
               "calibration_samples": count}
    notes = ([f"inputs {int8_float_inputs} are not float and stay {conversion.model.input_specs[0].dtype}"]
             if options.int8_io and int8_float_inputs else [])
    return QuantizationResult(out_path, Scheme.W8A8_STATIC, details, tuple(notes))


def quantize_selective(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    """int8 with the ``options.keep_sensitive`` fraction (at least one) of the quantized ops that add
    the most noise (``tflite_blame``) left in float, with the ops around them; float I/O."""
    import tensorflow as tf
    conv, count = _calibrated(conversion, calibration, options, tf.lite.OpsSet.TFLITE_BUILTINS, "selective int8")
    names = [s.name for s in conversion.model.input_specs]
    order = _input_order(conversion.path, names)
    samples = min(count, blame.SAMPLES)

    def ordered():  # the debugger feeds inputs by position, in the interpreter's input order
        for i in range(samples):
            yield [calibration.inputs[name][i:i + 1] for name in order]
    try:
        with warnings.catch_warnings():
            # The debugger runs tf.lite.Interpreter, which warns of its own deprecation on every use.
            warnings.simplefilter("ignore", UserWarning)
            model = tflite_blame.calibrated(conv, ordered)
            rows, neighbours = tflite_blame.blame(model, ordered)
            sensitive = blame.most_sensitive(rows, set(neighbours), options.keep_sensitive or 0.1)
            kept = tflite_blame.keep_set(neighbours, sensitive)
            flatbuffer = tflite_blame.quantized(model, kept)
    except (ValueError, RuntimeError) as exc:
        raise QuantizationError(f"TFLite selective quantization failed: {type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc
    Path(out_path).write_bytes(flatbuffer)
    details = {"tool": "tf.lite.TFLiteConverter + QuantizationDebugger", "weights": "int8 per-channel (conv) / "
               "per-tensor", "activations": "int8; the listed ops float", "io": "float32", "calibration_samples": count,
               "nodes_kept_fp32": kept, "blame": blame.shown(rows, set(kept))}
    notes = [f"selective quantization: the {len(sensitive)} ops that add the most quantization noise "
             f"({', '.join(sensitive[:3])}{', ...' if len(sensitive) > 3 else ''}) kept in float with the ops that "
             f"compute and read their tensors ({len(kept)} ops)"]
    if options.int8_io:
        notes.append("int8 I/O was asked for; the selectively quantized model keeps float32 inputs and outputs")
    return QuantizationResult(out_path, Scheme.W8A8_STATIC, details, tuple(notes))


def _input_order(fp32_path, names) -> list:
    """The source's input names in the order of the TFLite model's inputs (the fp32 artifact's
    signature names them ``serving_default_<name>:0``)."""
    import tensorflow as tf
    details = tf.lite.Interpreter(model_path=str(fp32_path)).get_input_details() if len(names) > 1 else []
    order = [next((n for n in names if d["name"] in (n, f"serving_default_{n}:0")), None) for d in details]
    return order if details and None not in order and len(set(order)) == len(names) else names


def quantize_int16x8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv, count = _calibrated(conversion, calibration, options,
                              tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, "int16x8")
    run_converter(conv, out_path, "int16x8")
    return QuantizationResult(out_path, Scheme.W8A16_STATIC, {"tool": "tf.lite.TFLiteConverter", "weights": "int8",
                                                          "activations": "int16", "io": "float32",
                                                          "calibration_samples": count})


def quantize_dynamic(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv = converter(conversion.model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    run_converter(conv, out_path, "dynamic-range int8")
    return QuantizationResult(out_path, Scheme.W8A32_DYNAMIC, {"tool": "tf.lite.TFLiteConverter", "weights": "int8",
                                                           "activations": "float32 (dynamic)"})


def quantize_fp16(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv = converter(conversion.model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    run_converter(conv, out_path, "fp16")
    return QuantizationResult(out_path, Scheme.FP16, {"tool": "tf.lite.TFLiteConverter", "weights": "float16",
                                                 "io": "float32"})

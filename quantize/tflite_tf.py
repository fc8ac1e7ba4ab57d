"""TFLite quantization of TensorFlow/Keras models: the converter quantizes while converting.

fp16 (float16 weights), dynamic (int8 weights, ``w8a32-dynamic``), int8 (full integer,
calibrated; float I/O, or int8 I/O with ``int8_io``), int16x8 (int8 weights, int16
activations). Each starts from the same SavedModel as the fp32 artifact.
"""

import numpy as np

from edgekit.errors import CalibrationError
from edgekit.export.tf_tflite import converter, run_converter

from . import QuantizationResult


def _representative(calibration, options, names):
    count = min(len(calibration), options.max_calibration_samples)

    def samples():
        for i in range(count):
            yield {name: calibration.inputs[name][i:i + 1] for name in names}
    return samples, count


def _calibrated(conversion, calibration, options, ops, what):
    import tensorflow as tf
    if calibration is None:
        raise CalibrationError(f"TFLite {what} needs calibration data (--calib)")
    source = conversion.source
    conv = converter(source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    samples, count = _representative(calibration, options, [s.name for s in source.input_specs])
    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [ops]
    return conv, count


def quantize_int8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv, count = _calibrated(conversion, calibration, options, tf.lite.OpsSet.TFLITE_BUILTINS_INT8, "int8")
    if options.int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    int8_float_inputs = [s.name for s in conversion.source.input_specs if np.dtype(s.dtype).kind != "f"]
    run_converter(conv, out_path, "int8")
    details = {"tool": "tf.lite.TFLiteConverter", "weights": "int8 per-channel (conv) / per-tensor",
               "activations": "int8", "io": "int8" if options.int8_io else "float32",
               "calibration_samples": count}
    notes = ([f"inputs {int8_float_inputs} are not float and stay {conversion.source.input_specs[0].dtype}"]
             if options.int8_io and int8_float_inputs else [])
    return QuantizationResult(out_path, "w8a8-static", details, tuple(notes))


def quantize_int16x8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv, count = _calibrated(conversion, calibration, options,
                              tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, "int16x8")
    run_converter(conv, out_path, "int16x8")
    return QuantizationResult(out_path, "w8a16-static", {"tool": "tf.lite.TFLiteConverter", "weights": "int8",
                                                          "activations": "int16", "io": "float32",
                                                          "calibration_samples": count})


def quantize_dynamic(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv = converter(conversion.source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    run_converter(conv, out_path, "dynamic-range int8")
    return QuantizationResult(out_path, "w8a32-dynamic", {"tool": "tf.lite.TFLiteConverter", "weights": "int8",
                                                           "activations": "float32 (dynamic)"})


def quantize_fp16(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import tensorflow as tf
    conv = converter(conversion.source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    run_converter(conv, out_path, "fp16")
    return QuantizationResult(out_path, "fp16", {"tool": "tf.lite.TFLiteConverter", "weights": "float16",
                                                 "io": "float32"})

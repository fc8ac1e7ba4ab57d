"""TFLite int8 of PyTorch models: PT2E quantization (litert-torch's quantizer) before conversion.

Static: symmetric per-channel int8 weights, int8 activations calibrated on the calibration
set; litert-torch then emits a fully-integer model whose inputs and outputs are int8 with
their scale and zero point (the runtime converts float data). Dynamic: int8 weights,
activations quantized per call.
"""

from edgekit.choices import Scheme
from edgekit.errors import CalibrationError, QuantizationError
from edgekit.timing import advance
from edgekit.converters.torch_tflite import prepared, quiet, write

from . import QuantizationResult


def _quantize(conversion, out_path, calibration, options, *, dynamic):
    import litert_torch
    import numpy as np
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    source = conversion.model
    example = calibration if calibration is not None else None
    if example is None:
        raise CalibrationError("TFLite quantization of a PyTorch model needs --calib data (also to trace it)")
    wrapped, args, nchw = prepared(source, example)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    count = len(calibration)  # capped to max_calibration_samples by the pipeline
    try:
        with quiet():
            module = torch.export.export(wrapped, args).module()
            module = quantize_pt2e.prepare_pt2e(module, quantizer)
            with torch.no_grad():
                for i in range(count if not dynamic else 1):
                    sample = []
                    for j, spec in enumerate(source.input_specs):
                        array = calibration.inputs[spec.name][i:i + 1]
                        sample.append(torch.from_numpy(np.ascontiguousarray(
                            array.transpose(0, 2, 3, 1) if j in nchw else array)))
                    module(*sample)
                    advance(i + 1, count, "calibration samples")
            module = quantize_pt2e.convert_pt2e(module, fold_quantize=False)
            edge = litert_torch.convert(module, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    except Exception as exc:
        raise QuantizationError(f"litert-torch PT2E quantization failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    write(edge, out_path, "int8")
    return count


def quantize_int8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    count = _quantize(conversion, out_path, calibration, options, dynamic=False)
    notes = () if options.int8_io else ("litert-torch's static int8 model takes and returns int8 tensors "
                                        "(scale/zero point in the manifest); the runtime converts float data",)
    return QuantizationResult(out_path, Scheme.W8A8_STATIC,
                              {"tool": "litert-torch PT2E", "weights": "int8 symmetric per-channel",
                               "activations": "int8", "io": "int8", "calibration_samples": count}, notes)


def quantize_dynamic(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    _quantize(conversion, out_path, calibration, options, dynamic=True)
    return QuantizationResult(out_path, Scheme.W8A32_DYNAMIC, {"tool": "litert-torch PT2E", "weights": "int8",
                                                           "activations": "dynamic"})

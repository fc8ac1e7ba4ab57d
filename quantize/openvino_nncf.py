"""OpenVINO IR quantization with NNCF.

int8 (``w8a8-static``): ``nncf.quantize`` on the calibration data, one sample per item,
full bias correction (fast with ``fast_bias_correction``; see QuantizeOptions), the model
type (``transformer`` for attention encoders) taken from the options or detected from the
graph, ``--keep-fp32`` globs as NNCF's ignored scope.
With ``max_drop`` set, ``nncf.quantize_with_accuracy_control`` instead: it measures the
metric (task accuracy on the labelled eval data in percent, or the user's
``metric(predictions, labels) -> float``, higher is better) on the fp32 and int8 models
and reverts the layers that cost the most back to float until the drop is within
``max_drop``; the layers left in float are recorded.

fp16: the fp32 IR saved with its weights compressed to float16.
"""

import numpy as np

from edgekit.choices import ModelType, Scheme
from edgekit.config import COSINE_METRIC
from edgekit.parity import masked, sample_cosines, token_mask
from edgekit.errors import CalibrationError, ConfigError, QuantizationError
from edgekit.timing import Counted
from edgekit.converters import model_type_of
from edgekit.converters.openvino_format import layer_precisions
from edgekit.converters.openvino_ir import save

from . import QuantizationResult
from ._nncf import quiet_nncf
from ._scope import matching_names


def quantize_fp16(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    from edgekit.runtime.backends._openvino import core
    save(core().read_model(str(conversion.path)), out_path, compress_to_fp16=True)
    return QuantizationResult(out_path, Scheme.FP16, {"weights": "float16 (compress_to_fp16)"})


def detect_model_type(model) -> ModelType:
    """``transformer`` for attention graphs (Softmax and MatMul, no convolution), else ``cnn``."""
    return model_type_of(op.get_type_name() for op in model.get_ops())


def _samples(dataset, names, count):
    return Counted({name: dataset.inputs[name][i:i + 1] for name in names} for i in range(count))


def quantize_int8(conversion, out_path, calibration, options, evaluation=None) -> QuantizationResult:
    import nncf
    from edgekit.runtime.backends._openvino import core

    if calibration is None:
        raise CalibrationError("OpenVINO int8 needs calibration data (--calib)")
    model = core().read_model(str(conversion.path))
    names = [port.get_any_name() for port in model.inputs]
    count = len(calibration)  # capped to max_calibration_samples by the pipeline
    model_type = options.model_type if options.model_type != ModelType.AUTO else detect_model_type(model)
    keep = matching_names((op.get_friendly_name() for op in model.get_ops()), options.keep_fp32, "OpenVINO")
    # 7-bit weights in every layer (NNCF's overflow fix) where asked: oneDNN's int8 kernels on x86
    # without VNNI sum u8*s8 pairs into saturating 16-bit lanes (see QuantizeOptions.reduce_range).
    overflow_fix = nncf.OverflowFix.ENABLE if options.reduce_range else nncf.OverflowFix.FIRST_LAYER
    kwargs = dict(subset_size=count, fast_bias_correction=options.fast_bias_correction,
                  model_type=nncf.ModelType.TRANSFORMER if model_type == ModelType.TRANSFORMER else None,
                  ignored_scope=nncf.IgnoredScope(names=keep) if keep else None)
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=overflow_fix)
    details = {"tool": f"nncf {nncf.__version__}", "calibration_samples": count, "model_type": model_type,
               "fast_bias_correction": options.fast_bias_correction, "keep_fp32": keep,
               "overflow_fix": str(overflow_fix.value)}
    calibration_data = nncf.Dataset(_samples(calibration, names, count))
    try:
        with quiet_nncf():
            if options.max_drop is None:
                quantized = nncf.quantize(model, calibration_data, advanced_parameters=advanced, **kwargs)
            else:
                metric = _Metric(options.metric, model, evaluation, names)
                validation = nncf.Dataset(metric.items, lambda item: item[0])
                quantized = nncf.quantize_with_accuracy_control(
                    model, calibration_data, validation, validation_fn=metric, max_drop=options.max_drop,
                    drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **kwargs)
                details["accuracy_control"] = {
                    "metric": metric.name, "max_drop": options.max_drop,
                    "fp32": metric.score(core().compile_model(model, "CPU", _F32)),
                    "int8": metric.score(core().compile_model(quantized, "CPU", _F32))}
    except (ConfigError, CalibrationError):
        raise
    except Exception as exc:
        raise QuantizationError(f"NNCF quantization failed: {type(exc).__name__}: {exc}") from exc
    save(quantized, out_path, compress_to_fp16=False)
    int8_layers, float_layers = layer_precisions(quantized)
    details.update(int8_layers=len(int8_layers), kept_in_float=float_layers)
    notes = []
    if options.max_drop is not None and float_layers:
        notes.append(f"accuracy control kept {len(float_layers)} of {len(int8_layers) + len(float_layers)} "
                     f"weighted layers in float: {', '.join(float_layers[:8])}"
                     + (" ..." if len(float_layers) > 8 else ""))
    return QuantizationResult(out_path, Scheme.W8A8_STATIC, details, tuple(notes))


_F32 = {"INFERENCE_PRECISION_HINT": "f32"}


class _Metric:
    """NNCF's ``validation_fn``: the metric of a compiled model over the labelled eval samples.

    Each eval sample is one item ``(inputs, label)``, so NNCF's ranking of layers can score
    any subset of them.
    """

    def __init__(self, user_metric, model, evaluation, names):
        if evaluation is None:
            raise ConfigError("accuracy-controlled quantization (max_drop) needs eval data (--eval)")
        self.cosine = _Cosine(model, evaluation, names) if user_metric == COSINE_METRIC else None
        if self.cosine is not None:
            user_metric = None
        if user_metric is None and evaluation.labels is None and self.cosine is None:
            raise ConfigError("accuracy-controlled quantization (max_drop) needs labelled eval data "
                              "(labels 'y' in the --eval file) or a metric (--metric file.py:metric)")
        self.user_metric = user_metric
        self.name = ("cosine to fp32 (%, mean capped by the worst sample + 1)" if self.cosine is not None
                     else getattr(user_metric, "__name__", "metric") if user_metric else "accuracy (%)")
        self.output_names = [port.get_any_name() for port in model.outputs]
        # With the cosine metric an item's "label" is its index: its row of the float model's outputs.
        labels = np.arange(len(evaluation)) if self.cosine is not None else evaluation.labels
        self.items = [(sample, None if labels is None else labels[i])
                      for i, sample in enumerate(_samples(evaluation, names, len(evaluation)))]

    def __call__(self, compiled, items):
        items = list(items)
        outputs = [compiled([item[0][port.get_any_name()] for port in compiled.inputs]) for item in items]
        predictions = {name: np.concatenate([np.asarray(out[i]) for out in outputs])
                       for i, name in enumerate(self.output_names)}
        labels = None if items[0][1] is None else np.asarray([item[1] for item in items])
        if self.cosine is not None:
            per_sample = self.cosine(list(predictions.values()), labels) * 100.0
            # The mean, capped by the worst sample plus one point: a drop of at most 1 keeps the mean
            # cosine >= 0.99 and every sample >= 0.98, the int8 gate's defaults.
            return float(min(per_sample.mean(), per_sample.min() + 1.0)), list(per_sample)
        if self.user_metric is not None:
            value = self.user_metric(predictions if len(predictions) > 1 else next(iter(predictions.values())),
                                     labels)
            return float(value), None
        primary = next(iter(predictions.values()))
        correct = (primary.reshape(len(primary), -1).argmax(1) == labels).astype(np.float64) * 100.0
        return float(correct.mean()), list(correct)

    def score(self, compiled):
        return self(compiled, self.items)[0]


class _Cosine:
    """``metric="cosine"``: per-sample cosine similarity of a model's outputs (all of them, flattened
    per sample; per-token outputs at the real tokens of ``attention_mask`` only, as the gate does) to
    the float model's on the same eval samples. Needs no labels; NNCF ranks layers by it and reverts
    the worst to float until the metric (``_Metric``: the mean in percent, capped by the worst sample
    + 1) drops by at most max_drop."""

    def __init__(self, model, evaluation, names):
        from edgekit.runtime.backends._openvino import core
        compiled = core().compile_model(model, "CPU", _F32)
        self.mask = token_mask(evaluation.inputs)
        outputs = [compiled([evaluation.inputs[n][i:i + 1] for n in names]) for i in range(len(evaluation))]
        arrays = [np.concatenate([np.asarray(out[port]) for out in outputs]) for port in compiled.outputs]
        self.reference = self._flat(arrays, np.arange(len(evaluation)))

    def _flat(self, arrays, indices):
        mask = None if self.mask is None else self.mask[indices]
        return np.concatenate([masked(np.asarray(a, np.float64), mask)[0].reshape(len(indices), -1)
                               for a in arrays], axis=1)

    def __call__(self, arrays, indices) -> np.ndarray:
        return sample_cosines(self.reference[indices], self._flat(arrays, indices))

"""Quantization-aware training of Keras 3 models (TensorFlow backend) with fake quantizers.

No maintained QAT route takes a Keras 3 model in this stack (measured with keras 3.15,
TensorFlow 2.21, on the Keras digits CNN):

- TensorFlow Model Optimization 0.8.1 refuses it (``quantize_model``: "`to_quantize` can only
  either be a keras Sequential or Functional model" — it checks tf_keras classes);
- Keras' own ``Model.quantize("int8")`` is post-training and for language models: it quantizes
  Dense/EinsumDense/Embedding only (the CNN's 650-weight head, none of its convolutions), freezes
  the int8 kernels (not trainable), quantizes activations dynamically per row, and the TFLite
  converter rejects the result ("'tfl.fully_connected' op operand #0 must be tensor of 32-bit
  float or QI8 ... but got 'tensor<?x64xi8>'");
- Sony's Model Compression Toolkit needs TensorFlow < 2.16 (tf_keras-era Keras).

What Keras does maintain is the op: ``keras.quantizers.fake_quant_with_min_max_vars``, which on
the TensorFlow backend is ``tf.quantization.fake_quant_with_min_max_vars(_per_channel)`` — the op
the TFLite converter turns into integer kernels, tf2onnx into QuantizeLinear/DequantizeLinear and
OpenVINO into FakeQuantize. So the model's layer graph is cloned (``keras.models.clone_model``)
with fake quantizers where TF-MOT's default 8-bit scheme puts them:

- Conv2D, DepthwiseConv2D and Dense become one ``QuantizedOp`` each, with a following
  BatchNormalization folded into its kernel and bias and a following ReLU/ReLU6 fused: weights
  fake-quantized symmetric, narrow range (the int8 grid TFLite's kernels take), per output channel
  (Dense: per tensor); another activation of theirs runs after their output's quantizer;
- an activation fake quantizer on every float model input and after every layer but those that
  keep their input's scale (pooling by max, reshapes, dropout ...), its range calibrated as the
  min/max on the calibration data and then followed in training by a moving average.

The batch norms are folded with their moving statistics, so training fine-tunes exactly the
computation that is exported (no train/inference difference to fold away later). After pruning,
a constraint on each kernel keeps its zeros. Subclassed models have no layer graph to clone and
are refused, as are nested models. Other layers with weights stay float between quantizers (the
QAT stage's notes name them).

Measured on the Keras digits CNN (12 epochs, 96.4%; 40 QAT steps, 6 s): int8 accuracy 98.9% in
TFLite, ONNX and IR against post-training int8's 96.4 / 96.1 / 96.4%; cosine to the QAT model
0.99999 (IR 0.99998); TFLite fully integer (one QUANTIZE at the input, one DEQUANTIZE at the output).
"""

import dataclasses

import keras  # (this module is imported only when a Keras 3 model is trained)
import numpy as np
from keras import ops, tree
from keras.src.models.functional import Functional  # (no public name; clone_model checks the same class)

from edgekit.errors import UnsupportedError

from . import QATResult

# TF-MOT's MovingAverageQuantizer decay: the calibrated ranges move slowly towards what training sees.
EMA_DECAY = 0.999
# Layers whose output keeps its input's quantization (the TFLite converter propagates the scale
# through them); every other float layer output gets its own fake quantizer.
SAME_SCALE = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
              "GlobalMaxPooling3D", "Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout1D",
              "SpatialDropout2D", "SpatialDropout3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
              "Cropping1D", "Cropping2D", "Cropping3D", "Identity", "InputLayer")
# Activations an int8 kernel applies itself (TFLite fuses them; the quantizer follows them).
FUSABLE = ("linear", "relu", "relu6")
CALIBRATION_BATCH = 64


def qat_keras3(source, options, calibration, quantize_options, pruned=False):
    """Clone ``source``'s Keras 3 model with fake quantizers, calibrate the activation ranges on
    ``calibration``, and train it with the user's hook; returns a QATResult. ``quantize_options``
    does not change the training: weights are trained on the full 8-bit grid, as TF-MOT's, and the
    ONNX export stores them as uint8 where ``reduce_range`` asks (edgekit.quantize.qat.export_onnx)."""
    if keras.backend.backend() != "tensorflow":
        raise UnsupportedError(f"QAT for Keras 3 needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                               f"this process runs {keras.backend.backend()}")
    model = _functional(source.keras_model())
    plan = _fusion_plan(model)
    qat_model, quantized = _clone(model, plan, keep_zeros=pruned)
    count = len(calibration)
    _calibrate(qat_model, [calibration.inputs[s.name] for s in source.input_specs])
    options.train(qat_model, options.steps, [])
    return QATResult(qat_model, {
        "tool": f"keras {keras.__version__} fake quantizers (edgekit)",
        "scheme": "8-bit: weights symmetric, per channel (Dense: per tensor); activations per tensor, "
                  "min/max calibrated, moving average in training; BatchNormalization folded",
        "steps": options.steps, "calibration_samples": count, "quantized_layers": len(quantized),
        "folded_batch_norms": sum(1 for chain in plan.values() if chain.batch_norm is not None)},
        notes=_float_layer_notes(model, plan))


# -- the model's graph --------------------------------------------------------------------------------
def _functional(model):
    """The model as a Functional graph to clone; Sequential models are one already inside."""
    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise UnsupportedError("QAT for Keras 3 needs a built Sequential model (one starting with keras.Input)")
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)  # (one input, one output)
    if not isinstance(model, Functional):
        raise UnsupportedError(f"QAT for Keras 3 takes Functional and Sequential models (their layer graph is "
                               f"cloned with fake quantizers); got the subclassed model {type(model).__name__}: "
                               "build it with the functional API, or use post-training int8 (--int8)")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise UnsupportedError(f"QAT for Keras 3 takes a flat model; layers {nested} are nested models: "
                               "rebuild it as one Functional model, or use post-training int8 (--int8)")
    return model


@dataclasses.dataclass
class _Chain:
    """A quantized layer and what it absorbs: the BatchNormalization and the ReLU after it."""

    layer: object
    activation: str
    batch_norm: object = None
    relu: object = None

    @property
    def absorbed(self) -> tuple:
        return tuple(x for x in (self.batch_norm, self.relu) if x is not None)


def _fusion_plan(model) -> dict:
    """``{id(layer): _Chain}`` for every layer that becomes a QuantizedOp."""
    graph = _Graph(model)
    plan = {}
    for layer in model.layers:
        if not (_quantizable(layer) and graph.called_once(layer)):
            continue
        chain = _Chain(layer, keras.activations.serialize(layer.activation))
        follower = graph.only_reader(layer)
        if chain.activation == "linear" and _foldable_batch_norm(follower):
            chain.batch_norm, follower = follower, graph.only_reader(follower)
        relu = _relu_name(follower) if chain.activation == "linear" else None
        if relu:
            chain.activation, chain.relu = relu, follower
        plan[id(layer)] = chain
    return plan


class _Graph:
    """Who calls and reads what in one model's graph (a layer may also be called in other graphs)."""

    def __init__(self, model):
        self.outputs = {id(t) for t in model.outputs}
        self.calls, self.readers = {}, {}
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                if node.is_input:
                    continue
                self.calls.setdefault(id(node.operation), []).append(node)
                for tensor in node.input_tensors:
                    self.readers.setdefault(id(tensor), []).append(node)

    def called_once(self, layer) -> bool:
        return len(self.calls.get(id(layer), ())) == 1

    def only_reader(self, layer):
        """The one layer reading ``layer``'s one output, when nothing else does (nor is it a model output)."""
        if not self.called_once(layer):
            return None
        outputs = self.calls[id(layer)][0].output_tensors
        if len(outputs) != 1 or id(outputs[0]) in self.outputs or len(self.readers.get(id(outputs[0]), ())) != 1:
            return None
        reader = self.readers[id(outputs[0])][0].operation
        return reader if self.called_once(reader) else None


def _quantizable(layer) -> bool:
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return (type(layer) in kinds and getattr(layer, "data_format", "channels_last") == "channels_last"
            and getattr(layer, "quantization_mode", None) is None)


def _foldable_batch_norm(layer) -> bool:
    """A BatchNormalization over the last (channel) axis, the one a kernel's output channels are on."""
    return isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, layer.input_spec.ndim - 1)


def _relu_name(layer) -> str | None:
    """'relu' or 'relu6' for a plain ReLU layer (or Activation), else None."""
    if isinstance(layer, keras.layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return name if name in ("relu", "relu6") else None
    if isinstance(layer, keras.layers.ReLU) and not layer.negative_slope and not layer.threshold:
        return {None: "relu", 6.0: "relu6"}.get(None if layer.max_value is None else float(layer.max_value))
    return None


def _float_layer_notes(model, plan) -> list[str]:
    """Layers with weights that stay float (their outputs are still fake-quantized)."""
    absorbed = {id(x) for chain in plan.values() for x in chain.absorbed}
    kept = [layer.name for layer in model.layers
            if layer.weights and id(layer) not in plan and id(layer) not in absorbed]
    return [f"layers with weights kept in float (no Keras 3 QAT wrapper for them): {kept}"] if kept else []


# -- cloning ------------------------------------------------------------------------------------------
def _clone(model, plan, keep_zeros):
    """The QAT clone: (model, its QuantizedOp layers). Layers not quantized are copied with their weights."""
    inputs = tree.map_structure(lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), model.input)
    cloner = _Cloner(plan, inputs, keep_zeros)
    try:
        clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=cloner.clone_layer,
                                         call_function=cloner.call_layer)
    except (ValueError, TypeError) as exc:
        raise UnsupportedError(f"QAT for Keras 3 cannot clone this model: {type(exc).__name__}: {exc}") from exc
    for copy, original in cloner.copies:
        copy.set_weights(original.get_weights())
    return clone, cloner.quantized


class _Cloner:
    """``clone_model``'s clone and call functions: each layer becomes its QAT counterpart, and fake
    quantizers go on the model's float inputs and after every layer that sets a new scale."""

    def __init__(self, plan, inputs, keep_zeros):
        self.plan, self.keep_zeros = plan, keep_zeros
        self.absorbed = {id(x) for chain in plan.values() for x in chain.absorbed}
        self.input_ids = {id(t) for t in tree.flatten(inputs)}
        self.quantized_inputs, self.absorbed_clones = {}, set()
        self.copies, self.quantized = [], []

    def clone_layer(self, layer):
        if id(layer) in self.plan:
            op = QuantizedOp.from_chain(self.plan[id(layer)], keep_zeros=self.keep_zeros)
            self.quantized.append(op)
            return op
        if id(layer) in self.absorbed:
            identity = keras.layers.Identity(name=f"{layer.name}_folded")
            self.absorbed_clones.add(id(identity))
            return identity
        copy = type(layer).from_config(layer.get_config())
        self.copies.append((copy, layer))
        return copy

    def call_layer(self, layer, *args, **kwargs):
        args, kwargs = tree.map_structure(self._quantize_input, (args, kwargs))
        if isinstance(layer, QuantizedOp) or id(layer) in self.absorbed_clones:
            kwargs = {}  # (the original layer's call options, such as mask=, are not theirs)
        outputs = layer(*args, **kwargs)
        if type(layer).__name__ in SAME_SCALE:
            return outputs
        outputs = _quantized(outputs, layer.name)
        if isinstance(layer, QuantizedOp) and layer.trailing_activation is not None:
            # An activation no int8 kernel applies itself runs after the quantized op, on its own.
            activation = keras.layers.Activation(layer.trailing_activation, name=f"{layer.name}_activation")
            outputs = _quantized(activation(outputs), activation.name)
        return outputs

    def _quantize_input(self, tensor):
        """A model input, fake-quantized once whatever reads it; other values as they are."""
        if id(tensor) not in self.input_ids or not _is_float(tensor):
            return tensor
        if id(tensor) not in self.quantized_inputs:
            self.quantized_inputs[id(tensor)] = FakeQuant(name=f"{tensor.name}_quant")(tensor)
        return self.quantized_inputs[id(tensor)]


def _quantized(outputs, name):
    """A layer's float outputs, each through its own FakeQuant."""
    flat = tree.flatten(outputs)
    return tree.pack_sequence_as(outputs, [FakeQuant(name=f"{name}_quant" + (f"_{i}" if i else ""))(t)
                                           if _is_float(t) else t for i, t in enumerate(flat)])


def _is_float(tensor) -> bool:
    return "float" in str(tensor.dtype)


# -- calibration and training -------------------------------------------------------------------------
def _calibrate(model, arrays):
    """Each activation quantizer's range: the min/max of what it sees on the calibration data, with
    every quantizer passing values through (the float model, its weights fake-quantized)."""
    quantizers = [layer for layer in model.layers if isinstance(layer, FakeQuant)]
    for quantizer in quantizers:
        quantizer.observed = (np.inf, -np.inf)
    for start in range(0, len(arrays[0]), CALIBRATION_BATCH):
        batch = [a[start:start + CALIBRATION_BATCH] for a in arrays]
        model(batch[0] if len(batch) == 1 else batch, training=False)
    for quantizer in quantizers:
        quantizer.set_range(*quantizer.observed)
        quantizer.observed = None


# -- the layers ---------------------------------------------------------------------------------------
class FakeQuant(keras.layers.Layer):
    """8-bit per-tensor fake quantization of an activation (``tf.quantization.fake_quant_with_min_max_vars``):
    its range is calibrated, then follows a moving average of the batches' min/max in training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.observed = None  # (min, max) seen so far while calibrating; values pass through meanwhile

    def build(self, shape):
        self.minimum = self.add_weight(name="min", shape=(), initializer="zeros", trainable=False)
        self.maximum = self.add_weight(name="max", shape=(), initializer="ones", trainable=False)

    def set_range(self, low, high):
        low, high = min(float(low), 0.0), max(float(high), 0.0)  # zero must be representable
        self.minimum.assign(low)
        self.maximum.assign(max(high, low + 1e-6))

    def call(self, x, training=False):
        if self.observed is not None:
            low, high = self.observed
            self.observed = (min(low, float(ops.min(x))), max(high, float(ops.max(x))))
            return x
        if training:
            self.minimum.assign(EMA_DECAY * self.minimum + (1 - EMA_DECAY) * ops.minimum(ops.min(x), 0.0))
            self.maximum.assign(EMA_DECAY * self.maximum + (1 - EMA_DECAY) * ops.maximum(ops.max(x), 0.0))
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.minimum, self.maximum, num_bits=8)


class QuantizedOp(keras.layers.Layer):
    """Conv2D, DepthwiseConv2D or Dense with a folded BatchNormalization and a fused ReLU, its kernel
    fake-quantized symmetric, narrow range (-127..127, the grid TFLite's int8 kernels take) — per
    output channel for convolutions, per tensor for Dense —, the range taken from the kernel at
    every call."""

    def __init__(self, kind, kernel, bias, *, activation, trailing_activation, conv_args, keep_zeros, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.conv_args = kind, conv_args
        self.activation_name, self.trailing_activation = activation, trailing_activation
        self._initial = (kernel, bias)
        self._keep_zeros = keep_zeros

    @classmethod
    def from_chain(cls, chain, keep_zeros=False):
        layer = chain.layer
        kind = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Dense": "dense"}[type(layer).__name__]
        kernel = np.asarray(layer.kernel, np.float32)
        channels = kernel.shape[2] * kernel.shape[3] if kind == "depthwise" else kernel.shape[-1]
        bias = np.asarray(layer.bias, np.float32) if layer.use_bias else np.zeros(channels, np.float32)
        if chain.batch_norm is not None:
            kernel, bias = _fold_batch_norm(kernel, bias, chain.batch_norm, kind)
        conv_args = {} if kind == "dense" else {
            "strides": layer.strides, "padding": layer.padding, "dilation_rate": layer.dilation_rate}
        fused = chain.activation in FUSABLE
        return cls(kind, kernel, bias, activation=chain.activation if fused else "linear",
                   trailing_activation=None if fused else layer.activation, conv_args=conv_args,
                   keep_zeros=keep_zeros, name=layer.name)

    def build(self, shape):
        kernel, bias = self._initial
        # After pruning, a constraint (applied by Keras after every optimizer step) keeps the zeros.
        constraint = _KeepZeros(kernel != 0) if self._keep_zeros and not np.all(kernel) else None
        self.kernel = self.add_weight(name="kernel", shape=kernel.shape, initializer="zeros", constraint=constraint)
        self.bias = self.add_weight(name="bias", shape=bias.shape, initializer="zeros")
        self.kernel.assign(kernel)
        self.bias.assign(bias)
        self._initial = None

    def quantized_kernel(self):
        kernel = self.kernel
        if self.kind == "dense":
            # Per tensor, as TF-MOT: the TFLite converter transposes a Dense kernel to its [out, in]
            # layout and fails on a per-channel one ("'tfl.transpose' op has mismatched quantized axes").
            peak = ops.maximum(ops.stop_gradient(ops.max(ops.abs(kernel))), 1e-8)
            return keras.quantizers.fake_quant_with_min_max_vars(kernel, -peak, peak, num_bits=8, narrow_range=True)
        if self.kind == "depthwise":  # its channels are (input channel, multiplier) pairs, as in TFLite
            kernel = ops.reshape(kernel, (*kernel.shape[:2], 1, -1))
        peak = ops.maximum(ops.stop_gradient(ops.max(ops.abs(kernel), axis=(0, 1, 2))), 1e-8)
        quantized = keras.quantizers.fake_quant_with_min_max_vars(kernel, -peak, peak, num_bits=8,
                                                                  narrow_range=True, axis=-1)
        return ops.reshape(quantized, self.kernel.shape) if self.kind == "depthwise" else quantized

    def call(self, x):
        kernel = self.quantized_kernel()
        if self.kind == "dense":
            y = ops.matmul(x, kernel)
        elif self.kind == "conv":
            y = ops.conv(x, kernel, **self.conv_args)
        else:
            y = ops.depthwise_conv(x, kernel, **self.conv_args)
        y = y + self.bias
        if self.activation_name == "relu":
            return ops.relu(y)
        return ops.relu6(y) if self.activation_name == "relu6" else y


class _KeepZeros(keras.constraints.Constraint):
    """Pruned weights back to zero after every optimizer step."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, w):
        return w * ops.cast(self.mask, w.dtype)


def _fold_batch_norm(kernel, bias, batch_norm, kind):
    """Kernel and bias of the convolution (or Dense) followed by ``batch_norm`` in inference mode."""
    weights = {w.name: np.asarray(w, np.float32) for w in batch_norm.weights}
    factor = weights.get("gamma", 1.0) / np.sqrt(weights["moving_variance"] + batch_norm.epsilon)
    bias = (bias - weights["moving_mean"]) * factor + weights.get("beta", 0.0)
    if kind == "depthwise":
        factor = factor.reshape(kernel.shape[2], kernel.shape[3])
    return (kernel * factor).astype(np.float32), bias.astype(np.float32)

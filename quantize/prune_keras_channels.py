"""Channel (filter) pruning of Keras models (Keras 3 and tf_keras): the plan of ``prune_channels``.

The layer graph is read from the model's config (functional models: each layer's inbound nodes;
Sequential: the chain). For each ``Conv1D``/``Conv2D`` (not grouped, channels last) the layers its
output reaches are followed: per-channel layers (BatchNormalization, depthwise convolutions with
one filter per channel, PReLU with a slope per channel) are pruned along with it; channel-preserving
ones (activations, pooling, global pooling, dropout, padding) pass; the walk ends at exactly one
consumer that mixes channels: a convolution, or a ``Dense`` (after a ``Flatten``, whose NHWC order
puts the channel innermost). Producers whose output meets an add, a concat, several layers, a model
output or anything else are left whole and reported.

The model is rebuilt with ``clone_model`` — the producers with fewer ``filters``, every other layer
from its own config (shapes follow) — and the kept slices of every weight are copied in, so a model
with custom layers prunes as long as Keras can clone it. A subclassed Keras 3 model is first traced
into a functional model of its layers (``_traced``) when its ``call`` allows it; that model is what
is pruned and exported.
"""

import numpy as np

from edgekit.errors import ConfigError, UnsupportedError

from .prune import PruneResult, kept_channels, rounds, strongest

_PRODUCERS = ("Conv1D", "Conv2D")
_PASS = ("ReLU", "LeakyReLU", "ELU", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
         "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
         "GlobalMaxPooling2D", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "ZeroPadding1D", "ZeroPadding2D",
         "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "GaussianNoise", "GaussianDropout",
         # keras.ops called in a traced subclassed model's call(): elementwise, channels untouched
         "Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Gelu", "LeakyRelu", "HardSigmoid", "HardSilu", "Elu", "Selu",
         "Softplus", "Softsign")


class _Plan:
    """One prunable producer: the per-channel layers after it and the consumer whose inputs shrink."""

    def __init__(self, producer, per_channel, consumer, flattened):
        self.producer, self.per_channel, self.consumer, self.flattened = producer, per_channel, consumer, flattened


def _graph(model) -> tuple:
    """(name -> consumer names (one per use), output names, shared layer names) from the config."""
    config = model.get_config()
    layers = config["layers"]
    if type(model).__name__ == "Sequential":
        names = [layer.name for layer in model.layers]
        return {a: [b] for a, b in zip(names, names[1:])}, {names[-1]}, set()
    consumers, shared = {}, set()
    for layer in layers:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            shared.add(layer["name"])
        for node in nodes:
            for parent in _histories(node):
                consumers.setdefault(parent, []).append(layer["name"])
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
    return consumers, {entry[0] for entry in outputs}, shared


def _histories(node):
    """The names of the layers whose outputs a config node reads: Keras 3 writes
    ``{"keras_history": [name, node, tensor]}``, tf_keras ``[name, node, tensor, kwargs]``."""
    if isinstance(node, dict):
        if "keras_history" in node:
            yield node["keras_history"][0]
            return
        for value in node.values():
            yield from _histories(value)
    elif isinstance(node, (list, tuple)):  # tuples in a live model's config, lists once saved as JSON
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            yield node[0]
            return
        for value in node:
            yield from _histories(value)


def _kind(layer) -> str:
    return type(layer).__name__


def _per_channel(layer, channels) -> bool | None:
    """True: pruned with the producer; False: passes channels through untouched; None: neither."""
    kind = _kind(layer)
    if kind in _PASS:
        return False
    config = layer.get_config()
    if kind == "BatchNormalization":
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        return True if axis in (-1, len(layer.input.shape) - 1) else None
    if kind == "DepthwiseConv2D" or kind == "DepthwiseConv1D":
        return True if config.get("depth_multiplier", 1) == 1 else None
    if kind == "PReLU":
        slopes = layer.get_weights()[0].shape[-1]
        return True if slopes == channels else (False if slopes == 1 else None)
    if kind == "Activation" and config.get("activation") not in ("softmax", "log_softmax"):
        return False
    return None  # softmax over channels, Reshape, Add, Concatenate, nested models...


def _plans(model) -> tuple:
    consumers, outputs, shared = _graph(model)
    # Keras 3 lists keras.ops calls among a functional model's operations, not its layers.
    layers = {op.name: op for op in getattr(model, "operations", model.layers)}
    plans, skipped = [], {}
    for name, layer in layers.items():
        if _kind(layer) not in _PRODUCERS or layer.get_config().get("groups", 1) != 1:
            continue
        if layer.get_config().get("data_format", "channels_last") != "channels_last":
            skipped[name] = "channels_first convolution"
            continue
        if name in shared:
            skipped[name] = "a layer called more than once"
            continue
        channels = layer.get_config()["filters"]
        per_channel, current, flattened = [], name, False
        while True:
            users = consumers.get(current, [])
            if current in outputs or not users:
                skipped[name] = "its output is a model output"
                break
            if len(users) != 1:
                skipped[name] = "its output is used by several layers"
                break
            user = layers[users[0]]
            kind = _kind(user)
            if user.name in shared:
                skipped[name] = f"its output reaches {user.name}, a layer called more than once"
                break
            role = _per_channel(user, channels)
            if role is True and not flattened:
                per_channel.append(user.name)
            elif role is False:
                pass
            elif kind == "Flatten" and not flattened:
                flattened = True
            elif kind in _PRODUCERS and user.get_config().get("groups", 1) == 1 and not flattened:
                plans.append(_Plan(name, per_channel, user.name, False))
                break
            elif kind == "Dense":
                plans.append(_Plan(name, per_channel, user.name, flattened))
                break
            else:
                skipped[name] = ("its output joins a residual add" if kind == "Add" else
                                 f"its output reaches {kind} {user.name}")
                break
            current = user.name
    return plans, skipped


def _clone(model, filters: dict):
    """The model rebuilt with ``filters[name]`` output channels in those layers (weights fresh)."""
    import importlib
    keras = importlib.import_module("tf_keras" if type(model).__module__.startswith("tf_keras") else "keras")

    def rebuild(layer):
        config = layer.get_config()
        if layer.name in filters:
            config["filters"] = filters[layer.name]
        return type(layer).from_config(config)
    try:
        return keras.models.clone_model(model, clone_function=rebuild)
    except Exception as exc:
        raise UnsupportedError(f"Keras cannot rebuild this model with fewer filters: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _sliced(layer, out_keep, in_keep, flat_channels):
    """``layer``'s weights with the kept output channels (``out_keep``: producer or per-channel layer)
    and kept input channels (``in_keep``: consumer) only."""
    kind = _kind(layer)
    weights = layer.get_weights()
    result = []
    for w in weights:
        if out_keep is not None:
            if kind.startswith("Depthwise") and w.ndim >= 3:
                w = w[..., out_keep, :]
            else:
                w = w[..., out_keep]
        if in_keep is not None and w.ndim >= 2:
            if kind == "Dense":
                spatial = w.shape[0] // flat_channels
                rows = (np.arange(spatial)[:, None] * flat_channels + np.asarray(in_keep)[None, :]).reshape(-1)
                w = w[rows]
            else:
                w = w[..., in_keep, :]
        result.append(w)
    return result


def _shrink(model, plans, keeps: dict):
    """One rebuilt model: every plan's producer cut to ``keeps[producer]`` filters, its followers and
    consumer with it, every other weight copied as it is. Always a new model, so that fine-tuning
    never trains the caller's layers."""
    layers = {layer.name: layer for layer in model.layers}
    out_keep, in_keep, channels = {}, {}, {}
    for plan in plans:
        keep = keeps.get(plan.producer)
        if keep is None:
            continue
        for name in [plan.producer, *plan.per_channel]:
            out_keep[name] = keep
        in_keep[plan.consumer] = keep
        channels[plan.consumer] = layers[plan.producer].get_config()["filters"]
    smaller = _clone(model, {plan.producer: len(keeps[plan.producer]) for plan in plans if plan.producer in keeps})
    for layer in smaller.layers:
        if not layer.weights:  # (the clone's InputLayer has a new name)
            continue
        old = layers[layer.name]
        layer.set_weights(_sliced(old, out_keep.get(layer.name), in_keep.get(layer.name), channels.get(layer.name)))
    return smaller


def _norms(layer) -> np.ndarray:
    kernel = layer.get_weights()[0]
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)


def _traced(model, specs):
    """A subclassed Keras 3 model as a functional one over the same layers: its ``call`` run on
    symbolic inputs records every layer and ``keras.ops`` call it makes. Refused when the call is
    not traceable (Python control flow on values, tf_keras) or the trace computes something else."""
    import keras
    what = f"{type(model).__name__} is subclassed"
    if not isinstance(model, keras.Model):  # a tf_keras model: no symbolic trace of its call
        raise UnsupportedError(f"channel pruning of a subclassed tf_keras model: {what}; build it functionally")
    inputs = [keras.Input(tuple(spec.shape[1:]), dtype=str(spec.dtype), name=spec.name) for spec in specs]
    try:
        inputs = inputs[0] if len(inputs) == 1 else inputs
        functional = keras.Model(inputs, model.call(inputs))
        probe = [np.random.default_rng(0).standard_normal((2, *spec.shape[1:])).astype(spec.dtype) for spec in specs]
        probe = probe[0] if len(probe) == 1 else probe
        same = all(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5) for a, b in
                   zip(_flat(model(probe, training=False)), _flat(functional(probe, training=False))))
    except Exception as exc:
        raise UnsupportedError(f"channel pruning reads a Keras model's layer graph; {what} and its call() could not "
                               f"be traced into one ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                               ". Use --prune-structure unstructured or 2:4, or build the model functionally") from exc
    if not same:
        raise UnsupportedError(f"channel pruning reads a Keras model's layer graph; {what} and its call() traced "
                               "into a graph that computes something else (Python control flow?). Use "
                               "--prune-structure unstructured or 2:4, or build the model functionally")
    return functional


def _flat(outputs) -> list:
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def prune_channels(source, options) -> PruneResult:
    model = source.keras_model()
    notes = []
    if type(model).__name__ not in ("Functional", "Sequential"):
        model = _traced(model, source.input_specs)
        notes.append(f"the subclassed {type(source.keras_model()).__name__} was traced into a functional model of "
                     "its layers, which is what was pruned and exported")
    plans, skipped = _plans(model)
    if not plans:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise ConfigError("channel pruning found no convolution it can shrink" + (f": {reasons}" if reasons else ""))
    before = model.count_params()
    original = {plan.producer: model.get_layer(plan.producer).get_config()["filters"] for plan in plans}
    for target, steps in rounds(options):
        keeps = {}
        for plan in plans:
            layer = model.get_layer(plan.producer)
            count = kept_channels(original[plan.producer], target)
            if count < layer.get_config()["filters"]:
                keeps[plan.producer] = strongest(_norms(layer), count)
        model = _shrink(model, plans, keeps)
        if steps:
            options.train(model, steps, [])
    after = model.count_params()
    per_layer = {name: {"sparsity": 1 - model.get_layer(name).get_config()["filters"] / count, "params": count,
                        "channels": f"{model.get_layer(name).get_config()['filters']}/{count}"}
                 for name, count in original.items()}
    notes += [f"{name}: left whole ({why})" for name, why in skipped.items()]
    return PruneResult(model, per_layer, notes, {
        "framework": source.kind, "method": "filter pruning by L1 norm (Keras layer graph, clone_model)",
        "parameters_before": before, "parameters_after": after}, sparsity=1 - after / before)

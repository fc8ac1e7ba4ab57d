"""Magnitude pruning of Keras models before export.

tf_keras models with a training hook: TensorFlow Model Optimization's ``prune_low_magnitude``
(its ConstantSparsity / PolynomialDecay schedules, ``sparsity_m_by_n=(2, 4)`` for 2:4), trained
by the user's hook with ``UpdatePruningStep`` among the callbacks, then ``strip_pruning``.

Channel pruning (either Keras): ``prune_keras_channels``.

Keras 3 models (which that library does not support), and one-shot pruning of either: the same
magnitude masks as the PyTorch path, held during fine-tuning by a constraint on each pruned
kernel (Keras applies variable constraints after every optimizer step), then removed again.
Functional and Sequential models are cloned first; a subclassed Keras model Keras cannot clone is
pruned in place only when it is edgekit's own (loaded from a file or built by FILE.py:factory); a
live one passed by the caller is refused rather than changed.
"""

import numpy as np

from edgekit.choices import PruneSchedule, PruneStructure
from edgekit.errors import ConfigError, UnsupportedError

from .prune import PruneResult, layer_sparsity, masks_for, rounds


def _prunable(model) -> dict:
    layers = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) >= 2 and type(layer).__name__ in (
                "Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D"):
            layers[layer.name] = layer
    return layers


def _weights(layers) -> dict:
    return {name: np.asarray(layer.kernel.numpy()) for name, layer in layers.items()}


class _Masked:
    """Constraint keeping pruned weights at zero during the user's fine-tuning."""

    def __init__(self, mask, previous):
        self.mask = mask
        self.previous = previous

    def __call__(self, w):
        return (self.previous(w) if self.previous is not None else w) * self.mask


def _clone(model, owned):
    """A copy to prune; a subclassed model Keras cannot clone (no usable get_config) only when it is
    edgekit's own (loaded from a file or built by FILE.py:factory) and may be pruned in place."""
    import keras
    try:
        clone = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError) as exc:
        if type(model).__name__ in ("Functional", "Sequential"):
            raise UnsupportedError(f"Keras cannot clone this {type(model).__name__} model to prune it: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        if not owned:
            raise ConfigError(f"the subclassed Keras model {type(model).__name__} cannot be cloned by Keras (its "
                              "get_config/from_config do not rebuild it), so pruning would change the model you "
                              "passed; pass it as FILE.py:factory or a saved .keras file, and edgekit prunes its "
                              "own copy") from exc
        return model, ["a subclassed Keras model Keras cannot clone: edgekit's own copy was pruned in place"]
    clone.set_weights(model.get_weights())
    return clone, []


def _prune_masked(model, options, notes):
    layers = _prunable(model)
    if not layers:
        raise ConfigError("the model has no Dense or Conv layers to prune")
    previous = {name: getattr(layer.kernel, "constraint", None) for name, layer in layers.items()}
    try:
        for target, steps in rounds(options):  # Keras kernels end with the output axis
            for name, mask in masks_for(_weights(layers), target, options, notes, output_axis=-1).items():
                kernel = layers[name].kernel
                mask = mask.astype(kernel.dtype if isinstance(kernel.dtype, str) else np.float32)
                kernel.assign(kernel.numpy() * mask)
                if options.train is not None:
                    kernel.constraint = _Masked(mask, previous[name])
            if steps:
                options.train(model, steps, [])
    finally:
        if options.train is not None:
            for name, layer in layers.items():
                layer.kernel.constraint = previous[name]
    return layers


def _prune_tfmot(model, options, notes):
    import tensorflow_model_optimization as tfmot
    sparsity = tfmot.sparsity.keras
    end = max(options.steps, 1)
    if options.schedule == PruneSchedule.POLYNOMIAL and options.structure == PruneStructure.UNSTRUCTURED:
        plan = sparsity.PolynomialDecay(0.0, options.sparsity, begin_step=0, end_step=max(end - 1, 1), frequency=1)
    else:
        plan = sparsity.ConstantSparsity(options.sparsity if options.structure == PruneStructure.UNSTRUCTURED else 0.5,
                                         begin_step=0, frequency=1)
    kwargs = {"sparsity_m_by_n": (2, 4)} if options.structure == PruneStructure.TWO_FOUR else {}
    try:
        wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=plan, **kwargs)
    except Exception as exc:
        raise UnsupportedError(f"TensorFlow Model Optimization cannot prune this model: {type(exc).__name__}: "
                               f"{exc}") from exc
    options.train(wrapped, options.steps, [sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(wrapped)
    return stripped, _prunable(stripped)


def prune(source, options) -> PruneResult:
    if source.kind == "saved_model":
        raise ConfigError("pruning needs the Keras model (a .keras/.h5 file, FILE.py:factory or a live model); "
                          "a SavedModel's weights are frozen into its graph")
    if options.structure == PruneStructure.CHANNELS:
        from .prune_keras_channels import prune_channels
        return prune_channels(source, options)
    model, notes = _clone(source.keras_model(), source.owned)
    if source.kind == "tf_keras" and options.train is not None:
        model, layers = _prune_tfmot(model, options, notes)
        method = "tensorflow_model_optimization prune_low_magnitude + strip_pruning"
    else:
        layers = _prune_masked(model, options, notes)
        method = "magnitude masks held by kernel constraints"
    return PruneResult(model, layer_sparsity(_weights(layers)), notes, {"framework": source.kind, "method": method})

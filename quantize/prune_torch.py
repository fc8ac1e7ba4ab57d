"""Magnitude pruning of PyTorch modules, made permanent before export.

Masks go in through ``torch.nn.utils.prune`` (``weight = weight_orig * mask``), so the user's
training hook fine-tunes with the pruned weights held at zero; ``prune.remove`` then bakes
them into plain weights. The user's module is never modified: a copy is pruned.
"""

import copy

import numpy as np

from edgekit.errors import ConfigError

from .prune import PruneResult, layer_sparsity, magnitude_masks, n_of_m_mask, schedule, step_budgets


def _prunable(module):
    import torch.nn as nn
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


def _weights(layers) -> dict:
    return {name: m.weight.detach().cpu().numpy() for name, m in layers.items()}


def _masks(layers, sparsity, options, notes) -> dict:
    weights = _weights(layers)
    if options.structure == "unstructured":
        return magnitude_masks(weights, sparsity, options.scope)
    masks = {}
    for name, w in weights.items():
        mask = n_of_m_mask(w.reshape(w.shape[0], -1), input_axis=1)
        if mask is None:
            notes.append(f"{name}: {int(np.prod(w.shape[1:]))} inputs per output is not a multiple of 4; left dense")
            continue
        masks[name] = mask.reshape(w.shape)
    return masks


def _apply(layers, masks):
    import torch
    from torch.nn.utils import prune
    for name, mask in masks.items():
        layer = layers[name]
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
        prune.custom_from_mask(layer, "weight", torch.from_numpy(mask).to(layer.weight.device))


def _remove(layers):
    from torch.nn.utils import prune
    for layer in layers.values():
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")


def prune(source, options) -> PruneResult:
    if source.is_program:
        raise ConfigError("pruning needs the nn.Module (FILE.py:factory or a live module); "
                          "a torch.export .pt2 program's weights are frozen into its graph")
    if options.structure == "channels":
        from .prune_channels import prune_channels
        return prune_channels(source, options)
    module = copy.deepcopy(source._module()).cpu().eval()
    layers = _prunable(module)
    if not layers:
        raise ConfigError("the model has no Conv or Linear layers to prune")
    notes = []
    rounds = schedule(options) if options.train and options.structure == "unstructured" else [options.sparsity]
    for target, steps in zip(rounds, step_budgets(options, len(rounds))):
        _apply(layers, _masks(layers, target, options, notes))
        if options.train is not None and steps:
            module.train()
            options.train(module, steps, [])
            module.eval()
    _remove(layers)
    if options.train is None:
        notes.append("no training hook (--train FILE.py:fit): pruned one-shot, without fine-tuning")
    return PruneResult(module, layer_sparsity(_weights(layers)), notes,
                       {"framework": "torch", "method": "torch.nn.utils.prune (custom magnitude masks)"})

"""Magnitude pruning of PyTorch modules, made permanent before export.

Masks go in through ``torch.nn.utils.prune`` (``weight = weight_orig * mask``), so the user's
training hook fine-tunes with the pruned weights held at zero; ``prune.remove`` then bakes
them into plain weights. The user's module is never modified: a copy is pruned.
"""

import copy

from edgekit.choices import PruneStructure
from edgekit.errors import ConfigError

from .prune import PruneResult, fine_tune, layer_sparsity, masks_for, rounds


def prunable(module) -> dict:
    """name -> the Conv/Linear layers whose weights pruning acts on."""
    import torch.nn as nn
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


def _weights(layers) -> dict:
    return {name: m.weight.detach().cpu().numpy() for name, m in layers.items()}


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
    if source.torch_program() is not None:
        raise ConfigError("pruning needs the nn.Module (FILE.py:factory or a live module); "
                          "a torch.export .pt2 program's weights are frozen into its graph")
    if options.structure == PruneStructure.CHANNELS:
        from .prune_channels import prune_channels
        return prune_channels(source, options)
    module = copy.deepcopy(source.torch_module()).cpu().eval()
    layers = prunable(module)
    if not layers:
        raise ConfigError("the model has no Conv or Linear layers to prune")
    notes = []
    for target, steps in rounds(options):  # torch weights are (out, in, ...): output axis 0
        _apply(layers, masks_for(_weights(layers), target, options, notes, output_axis=0))
        fine_tune(module, options, steps)
    _remove(layers)
    return PruneResult(module, layer_sparsity(_weights(layers)), notes,
                       {"framework": "torch", "method": "torch.nn.utils.prune (custom magnitude masks)"})

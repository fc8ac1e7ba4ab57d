"""Channel (filter) pruning of PyTorch modules: whole output filters go, and the graph shrinks.

The module is traced with ``torch.fx`` to find, for each ``Conv2d``/``Conv1d`` (not grouped), the
layers its output reaches: through per-channel layers (BatchNorm, PReLU, depthwise convolutions —
MobileNet's expanded channels) and channel-preserving
ones (activations, pooling, dropout) to exactly one consumer that mixes channels — a plain
convolution, or a ``Linear`` after a flatten. Such a producer is prunable: the filters with the
smallest L1 norm are removed from it, the matching entries from the per-channel layers, and the
matching input channels from the consumer. Producers whose output meets a residual add, a concat,
a grouped convolution or anything else are left whole (pruning them would need the
coupled channels pruned alike), and the report says which.
"""

import copy
import operator

from edgekit.errors import ConfigError

from .prune import PruneResult, fine_tune, kept_channels, rounds, strongest

_PER_CHANNEL = ("BatchNorm1d", "BatchNorm2d", "PReLU")
_PASS_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh",
                 "ELU", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
                 "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Dropout", "Identity")
_PASS_FUNCTIONS = ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "max_pool2d", "avg_pool2d",
                   "adaptive_avg_pool2d", "dropout")
_FLATTEN = ("flatten",)


def _plan(module):
    """[(producer, [per-channel layers], consumer, consumer kind)] and the reasons others are skipped."""
    import torch.fx as fx
    import torch.nn as nn
    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:
        raise ConfigError(f"channel pruning traces the model with torch.fx, which failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    modules = dict(traced.named_modules())
    plans, skipped = [], {}
    for node in traced.graph.nodes:
        if node.op != "call_module":
            continue
        producer = modules[node.target]
        if not isinstance(producer, (nn.Conv1d, nn.Conv2d)) or producer.groups != 1:
            continue
        per_channel, current, flattened = [], node, False
        while True:
            users = list(current.users)
            if len(users) != 1:
                skipped[node.target] = "its output is used by several layers"
                break
            user = users[0]
            kind = type(modules[user.target]).__name__ if user.op == "call_module" else None
            if user.op == "call_module" and _depthwise(modules[user.target]):
                per_channel.append(user.target)  # one filter per channel: pruned along with them
            elif user.op == "call_module" and kind in _PER_CHANNEL:
                layer = modules[user.target]
                if kind == "PReLU" and layer.num_parameters == 1:
                    pass
                else:
                    per_channel.append(user.target)
            elif user.op == "call_module" and kind in _PASS_MODULES:
                pass
            elif user.op == "call_module" and kind == "Flatten" or (
                    user.op in ("call_function", "call_method") and getattr(user.target, "__name__", user.target)
                    in _FLATTEN):
                flattened = True
            elif user.op in ("call_function", "call_method") and getattr(user.target, "__name__", user.target) \
                    in _PASS_FUNCTIONS:
                pass
            elif user.op == "call_module" and isinstance(modules[user.target], (nn.Conv1d, nn.Conv2d)) \
                    and modules[user.target].groups == 1 and not flattened:
                plans.append((node.target, per_channel, user.target, "conv"))
                break
            elif user.op == "call_module" and isinstance(modules[user.target], nn.Linear) and flattened:
                plans.append((node.target, per_channel, user.target, "linear"))
                break
            else:
                what = kind or getattr(user.target, "__name__", str(user.target))
                skipped[node.target] = f"its output reaches {what}" if user.target is not operator.add \
                    else "its output joins a residual add"
                break
            current = user
    return plans, skipped


def _depthwise(layer) -> bool:
    import torch.nn as nn
    return isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups > 1 \
        and layer.groups == layer.in_channels == layer.out_channels


def _shrink(module, producer_name, per_channel, consumer_name, consumer_kind, keep):
    import torch
    import torch.nn as nn
    idx = torch.as_tensor(keep, dtype=torch.long)
    conv = module.get_submodule(producer_name)
    new = type(conv)(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[idx])
    module.set_submodule(producer_name, new)
    for name in per_channel:
        layer = module.get_submodule(name)
        if _depthwise(layer):
            smaller = type(layer)(len(keep), len(keep), layer.kernel_size, layer.stride, layer.padding,
                                  layer.dilation, len(keep), layer.bias is not None, layer.padding_mode)
            with torch.no_grad():
                smaller.weight.copy_(layer.weight[idx])
                if layer.bias is not None:
                    smaller.bias.copy_(layer.bias[idx])
        elif isinstance(layer, nn.PReLU):
            smaller = nn.PReLU(len(keep))
            with torch.no_grad():
                smaller.weight.copy_(layer.weight[idx])
        else:
            smaller = type(layer)(len(keep), layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
            with torch.no_grad():
                if layer.affine:
                    smaller.weight.copy_(layer.weight[idx])
                    smaller.bias.copy_(layer.bias[idx])
                if layer.track_running_stats:
                    smaller.running_mean.copy_(layer.running_mean[idx])
                    smaller.running_var.copy_(layer.running_var[idx])
                    smaller.num_batches_tracked.copy_(layer.num_batches_tracked)
        module.set_submodule(name, smaller)
    consumer = module.get_submodule(consumer_name)
    with torch.no_grad():
        if consumer_kind == "conv":
            smaller = type(consumer)(len(keep), consumer.out_channels, consumer.kernel_size, consumer.stride,
                                     consumer.padding, consumer.dilation, consumer.groups, consumer.bias is not None,
                                     consumer.padding_mode)
            smaller.weight.copy_(consumer.weight[:, idx])
        else:
            spatial = consumer.in_features // conv.out_channels
            if spatial * conv.out_channels != consumer.in_features:
                raise ConfigError(f"{consumer_name}: {consumer.in_features} inputs are not a multiple of "
                                  f"{producer_name}'s {conv.out_channels} channels")
            features = (idx[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1)
            smaller = nn.Linear(len(keep) * spatial, consumer.out_features, consumer.bias is not None)
            smaller.weight.copy_(consumer.weight[:, features])
        if consumer.bias is not None:
            smaller.bias.copy_(consumer.bias)
    module.set_submodule(consumer_name, smaller)


def _parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def prune_channels(source, options) -> PruneResult:
    module = copy.deepcopy(source.torch_module()).cpu().eval()
    original = {}
    before = _parameter_count(module)
    plans, skipped = _plan(module)
    if not plans:
        raise ConfigError("channel pruning found no convolution it can shrink: "
                          + "; ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped else
                          "channel pruning found no convolution it can shrink")
    for producer, *_ in plans:
        original[producer] = module.get_submodule(producer).out_channels
    for target, steps in rounds(options):
        for producer, per_channel, consumer, kind in plans:
            conv = module.get_submodule(producer)
            keep_count = kept_channels(original[producer], target)
            if keep_count >= conv.out_channels:
                continue
            keep = strongest(conv.weight.detach().abs().reshape(conv.out_channels, -1).sum(1).numpy(), keep_count)
            _shrink(module, producer, per_channel, consumer, kind, keep)
        fine_tune(module, options, steps)
    # The layers _shrink builds are new modules, in training mode: one-shot pruning (no fine-tuning
    # to end in eval()) left BatchNorm using batch statistics, so the pruned reference differed from
    # its own export (MobileNetV2, 30%: fp32 artifact cosine 0.53 against it).
    module.eval()
    after = _parameter_count(module)
    per_layer = {name: {"sparsity": 1 - module.get_submodule(name).out_channels / count, "params": count,
                        "channels": f"{module.get_submodule(name).out_channels}/{count}"}
                 for name, count in original.items()}
    notes = [f"{name}: left whole ({why})" for name, why in skipped.items()]
    return PruneResult(module, per_layer, notes, {
        "framework": "torch", "method": "filter pruning by L1 norm (torch.fx dependency trace)",
        "parameters_before": before, "parameters_after": after},
        sparsity=1 - after / before)  # the fraction of parameters removed from the model

"""Magnitude pruning, framework-neutral: the masks, the schedule, and what the report says.

The framework modules (``prune_torch``, ``prune_keras``) own the weights; this module decides
which elements go. Structures:

- ``unstructured``: the smallest-magnitude weights, over all prunable layers at once
  (``scope="global"``) or layer by layer (``scope="layer"``);
- ``2:4``: in every group of 4 consecutive weights along the input axis, the 2 smallest
  (the N:M pattern sparse tensor cores run; 50% exactly, whatever ``sparsity`` says);
- ``channels``: whole output filters by L1 norm (the graph shrinks; ``prune_channels`` for PyTorch,
  ``prune_keras_channels`` for Keras).

Schedules: ``constant`` prunes to the target at once, then fine-tunes with the user's training
hook; ``polynomial`` raises sparsity from 0 to the target over ``PHASES`` rounds of
fine-tuning (s_k = s * (1 - (1 - k/K)^3)), each round re-ranking the weights as they are then.
"""

import gzip
import io

import numpy as np

from edgekit.choices import PruneSchedule, PruneScope, PruneStructure

PHASES = 5


def schedule(options) -> list:
    """The sparsity to reach before each round of fine-tuning."""
    if options.schedule == PruneSchedule.CONSTANT:
        return [options.sparsity]
    return [options.sparsity * (1 - (1 - k / PHASES) ** 3) for k in range(1, PHASES + 1)]


def step_budgets(options, rounds: int) -> list:
    base, extra = divmod(options.steps, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def rounds(options) -> list:
    """[(sparsity to reach, fine-tuning steps after it)]: the schedule when there is a training
    hook to recover in between (2:4 is 50% at once), else one-shot to the target."""
    targets = schedule(options) if options.train is not None and options.structure != "2:4" else [options.sparsity]
    return list(zip(targets, step_budgets(options, len(targets)) if options.train is not None else [0] * len(targets)))


def masks_for(weights: dict, sparsity: float, options, notes: list, output_axis: int) -> dict:
    """Keep-masks for ``options.structure`` (unstructured or 2:4). For 2:4 every axis but the
    output one is the reduction a group of 4 runs along; layers whose reduction is not a multiple
    of 4 stay dense (noted)."""
    if options.structure == PruneStructure.UNSTRUCTURED:
        return magnitude_masks(weights, sparsity, options.scope)
    masks = {}
    for name, w in weights.items():
        rows = np.moveaxis(w, output_axis, 0).reshape(w.shape[output_axis], -1)
        mask = n_of_m_mask(rows, input_axis=1)
        if mask is None:
            notes.append(f"{name}: {rows.shape[1]} inputs per output is not a multiple of 4; left dense")
            continue
        moved_shape = np.moveaxis(w, output_axis, 0).shape
        masks[name] = np.moveaxis(mask.reshape(moved_shape), 0, output_axis)
    return masks


def magnitude_masks(weights: dict, sparsity: float, scope: str) -> dict:
    """name -> boolean keep-mask zeroing the ``sparsity`` fraction of smallest |w|."""
    if scope == PruneScope.LAYER:
        return {name: _keep_largest(np.abs(w), sparsity) for name, w in weights.items()}
    magnitudes = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    count = int(round(sparsity * magnitudes.size))
    if count == 0:
        return {name: np.ones(w.shape, bool) for name, w in weights.items()}
    threshold = np.partition(magnitudes, count - 1)[count - 1]
    masks = {name: np.abs(w) > threshold for name, w in weights.items()}
    # Ties at the threshold: keep exactly the requested count overall.
    surplus = sum(int((~m).sum()) for m in masks.values()) - count
    for name, w in weights.items():
        if surplus <= 0:
            break
        ties = np.flatnonzero((np.abs(w) == threshold).ravel())[:surplus]
        flat = masks[name].ravel()
        flat[ties] = True
        masks[name] = flat.reshape(w.shape)
        surplus -= len(ties)
    return masks


def _keep_largest(magnitude, sparsity):
    count = int(round(sparsity * magnitude.size))
    keep = np.ones(magnitude.size, bool)
    if count:
        keep[np.argsort(magnitude.ravel(), kind="stable")[:count]] = False
    return keep.reshape(magnitude.shape)


def n_of_m_mask(weight: np.ndarray, input_axis: int, n=2, m=4) -> np.ndarray | None:
    """Keep the ``n`` largest of every ``m`` consecutive weights along ``input_axis``; None when
    that axis is not a multiple of ``m`` (the layer is left dense)."""
    moved = np.moveaxis(np.abs(weight), input_axis, -1)
    if moved.shape[-1] % m:
        return None
    groups = moved.reshape(-1, m)
    order = np.argsort(groups, axis=1, kind="stable")
    keep = np.ones_like(groups, bool)
    np.put_along_axis(keep, order[:, :m - n], False, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, input_axis)


def kept_channels(channels, sparsity, multiple=8) -> int:
    """Filters to keep: rounded to a multiple of 8 in layers of 32 or more (int8 and fp32 CPU kernels
    work in blocks of 8/16 channels; odd widths ran slower here), exact in smaller ones."""
    exact = channels * (1 - sparsity)
    if channels >= 32:
        return int(min(channels, max(multiple, multiple * round(exact / multiple))))
    return max(1, int(round(exact)))


def strongest(norms, count) -> np.ndarray:
    """The indices (in order) of the ``count`` filters with the largest L1 norms: the ones kept."""
    return np.sort(np.argsort(-np.asarray(norms), kind="stable")[:count])


def layer_sparsity(weights: dict) -> dict:
    """name -> {"sparsity", "params"} measured on the weights themselves."""
    return {name: {"sparsity": float((w == 0).mean()) if w.size else 0.0, "params": int(w.size)}
            for name, w in weights.items()}


def overall_sparsity(per_layer: dict) -> float:
    total = sum(v["params"] for v in per_layer.values())
    return sum(v["sparsity"] * v["params"] for v in per_layer.values()) / total if total else 0.0


def gzip_size(path) -> int:
    """Bytes of the file gzip-compressed (level 9): unstructured sparsity pays off here."""
    buffer = io.BytesIO()
    with open(path, "rb") as fh, gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(fh.read())
    return buffer.tell()


class PruneResult:
    """The pruned framework model and the sparsity measured on its weights (or, for channel
    pruning, given: the fraction of parameters removed)."""

    def __init__(self, model, per_layer: dict, notes=(), details=None, sparsity=None):
        self.model = model
        self.per_layer = per_layer
        self.sparsity = overall_sparsity(per_layer) if sparsity is None else sparsity
        self.notes = tuple(notes)
        self.details = details or {}


def fine_tune(module, options, steps, callbacks=()):
    """Run the user's training hook on ``module`` (train mode during it), if there is one."""
    if options.train is not None and steps:
        module.train()
        options.train(module, steps, list(callbacks))
        module.eval()

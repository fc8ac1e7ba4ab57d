"""The parity metrics the device needs too (the self-test) and the toolkit's gate uses: one copy."""

import numpy as np


def sample_cosines(a, b):
    """Cosine similarity of each sample (flattened); 1 where both are all zeros."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = norms == 0
    return np.where(both_zero, np.where((a == b).all(axis=1), 1.0, 0.0), dots / np.where(both_zero, 1, norms))


# The Hugging Face convention for which token positions are real (1) and which are padding (0).
TOKEN_MASK_INPUT = "attention_mask"


def token_mask(inputs: dict):
    """The eval data's ``attention_mask`` ([samples, sequence] integers), or None."""
    mask = inputs.get(TOKEN_MASK_INPUT)
    if mask is None or np.asarray(mask).ndim != 2 or np.asarray(mask).dtype.kind not in "iub":
        return None
    return np.asarray(mask) != 0


def masked(array, mask):
    """Padding positions of a per-token output ([samples, sequence, ...]) set to 0: what a model
    computes at padded tokens is never used, and under int8 it drifts freely (a real MiniLM's
    per-sentence cosine over all 64 positions 0.54 at worst, where its real tokens hold)."""
    if mask is None or array.ndim < 2 or array.shape[:2] != mask.shape:
        return array, False
    return np.where(mask.reshape(mask.shape + (1,) * (array.ndim - 2)), array, 0), True

"""Affine (de)quantization of int8/uint8 model inputs and outputs.

real = scale * (q - zero_point). A scale of 0 means "not quantized" (the
TFLite convention), so callers pass such tensors through unchanged.
"""

import numpy as np

_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
           np.dtype(np.int16): (-32768, 32767)}


def quantize(x, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Map real values to the integer grid, rounding half to even and saturating."""
    dtype = np.dtype(dtype)
    if dtype not in _LIMITS:
        raise ValueError(f"quantized dtype must be int8, uint8 or int16, got {dtype}")
    if not scale > 0:
        raise ValueError(f"quantization scale must be > 0, got {scale}")
    lo, hi = _LIMITS[dtype]
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """Map integers back to float32 reals."""
    return ((np.asarray(q, dtype=np.int32) - zero_point) * np.float32(scale)).astype(np.float32)

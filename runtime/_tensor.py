"""TensorInfo: what the runtime knows about one model input or output."""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Layout(StrEnum):
    """The axis order of an image input (None on a tensor: not an image, or not known)."""
    NCHW = "nchw"
    NHWC = "nhwc"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output as the device sees it.

    ``shape`` uses None for a dynamic axis. ``scale``/``zero_point`` are set for
    quantized (int8/uint8) I/O; the runtime converts float data to and from it.
    ``alias`` is the source model's name for a tensor the converter renamed (litert-torch
    calls inputs ``args_0``): ``predict`` accepts either name and returns outputs by alias.
    """

    name: str
    shape: tuple
    dtype: np.dtype
    layout: Layout | None = None
    scale: float | None = None
    zero_point: int | None = None
    alias: str | None = None

    def __post_init__(self):
        if self.layout is not None:
            object.__setattr__(self, "layout", Layout(self.layout))

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale > 0 and self.dtype.kind in "iu"

    def to_dict(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
               "layout": self.layout}
        if self.quantized:
            out["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        if self.alias and self.alias != self.name:
            out["source_name"] = self.alias
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TensorInfo":
        quant = data.get("quantization") or {}
        return cls(name=data["name"], shape=tuple(data["shape"]), dtype=np.dtype(data["dtype"]),
                   layout=data.get("layout"), scale=quant.get("scale"),
                   zero_point=quant.get("zero_point"), alias=data.get("source_name"))

    @property
    def key(self) -> str:
        """The name callers use: the source model's name when the converter renamed the tensor."""
        return self.alias or self.name


def format_shape(shape, compact=False) -> str:
    """A shape as edgekit writes it everywhere: ``(N, 3, 224, ?)`` (N: a free batch axis, ?: another
    free axis), or ``Nx3x224x?`` with ``compact``."""
    dims = ["N" if d is None and i == 0 else "?" if d is None else str(d) for i, d in enumerate(shape)]
    return "x".join(dims) if compact else "(" + ", ".join(dims) + ")"


def to_layout(array, have, want):
    """A 4-D image batch from layout ``have`` to ``want`` (NCHW <-> NHWC); anything else as it is."""
    if have == want or array.ndim != 4 or not have or not want:
        return array
    return array.transpose((0, 2, 3, 1) if (have, want) == (Layout.NCHW, Layout.NHWC) else (0, 3, 1, 2))

"""edgekit.runtime — run an edgekit bundle (or a bare model file) on a device.

This package is what a device installs: it imports numpy and, lazily, the one
backend a model needs (onnxruntime for ``.onnx``). It never imports torch,
tensorflow, onnx or any other part of edgekit; ``tests/runtime`` proves it.

    >>> import edgekit.runtime as ekr
    >>> model = ekr.load("bundle/")          # or "model.onnx"
    >>> probs = model.predict(x)             # numpy in, numpy out
"""

from ._errors import BackendUnavailableError, EngineError, ModelLoadError, RuntimeInputError
from ._manifest import MANIFEST_NAME, SCHEMA_VERSION, preferred, read_manifest, sha256_file
from ._model import Model, TensorInfo, load, load_artifact
from ._records import ArtifactEntry, Manifest, ParityRecord
from ._tensor import Layout, format_shape
from ._quant import dequantize, quantize
from .backends import available_backends

__all__ = [
    "ArtifactEntry",
    "BackendUnavailableError",
    "EngineError",
    "Layout",
    "MANIFEST_NAME",
    "Manifest",
    "Model",
    "ModelLoadError",
    "ParityRecord",
    "RuntimeInputError",
    "SCHEMA_VERSION",
    "TensorInfo",
    "available_backends",
    "dequantize",
    "format_shape",
    "load",
    "load_artifact",
    "preferred",
    "quantize",
    "read_manifest",
    "sha256_file",
]

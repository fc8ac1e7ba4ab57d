"""edgekit.runtime — run an edgekit bundle (or a bare model file) on a device.

This package is what a device installs: it imports numpy and, lazily, the one
backend a model needs (onnxruntime for ``.onnx``). It never imports torch,
tensorflow, onnx or any other part of edgekit; ``tests/runtime`` proves it.

    >>> import edgekit.runtime as ekr
    >>> model = ekr.load("bundle/")          # or "model.onnx"
    >>> probs = model.predict(x)             # numpy in, numpy out
"""

import importlib as _importlib

# Loaded on first use (PEP 562): ``edgekit.runtime._args`` (the device tools' options, which the
# ``edgekit`` CLI declares from) is then importable without numpy.
_EXPORTS = {
    "BackendUnavailableError": "_errors", "EngineError": "_errors", "ModelLoadError": "_errors",
    "RuntimeInputError": "_errors",
    "MANIFEST_NAME": "_manifest", "SCHEMA_VERSION": "_manifest", "preferred": "_manifest",
    "read_manifest": "_manifest", "sha256_file": "_manifest",
    "Model": "_model", "TensorInfo": "_model", "load": "_model", "load_artifact": "_model",
    "ArtifactEntry": "_records", "Manifest": "_records", "ParityRecord": "_records",
    "Layout": "_tensor", "format_shape": "_tensor",
    "dequantize": "_quant", "quantize": "_quant",
    "available_backends": "backends",
}


def __getattr__(name):
    if name == "backends":  # the subpackage, as ``ekr.backends`` was before the exports were lazy
        return _importlib.import_module(".backends", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgekit.runtime' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # (the next access does not come here)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


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

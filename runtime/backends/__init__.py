"""Runtime backends, one module per engine, imported only when a model needs it.

Each backend class takes ``(path, threads=None, **engine_options)`` and exposes ``inputs`` and
``outputs`` (lists of TensorInfo, as the file declares them) and
``run(feeds: dict[str, ndarray]) -> list[ndarray]``, which returns arrays the caller owns and may be
called from several threads at once on one loaded backend (each module says how it keeps that promise).
Adding an engine is one module and one line in ``_BACKENDS``.
"""

import importlib
import importlib.util
from pathlib import Path

from .._errors import BackendUnavailableError, ModelLoadError

# name -> (class path, module that must be importable, file suffixes it runs)
_BACKENDS = {
    "onnxruntime": ("edgekit.runtime.backends._onnxruntime:OnnxRuntimeBackend",
                    "onnxruntime", (".onnx",)),
    "tflite": ("edgekit.runtime.backends._tflite:TFLiteBackend", "ai_edge_litert", (".tflite",)),
    "openvino": ("edgekit.runtime.backends._openvino:OpenVINOBackend", "openvino", (".xml",)),
}
_EXTRA = {"onnxruntime": "onnx", "tflite": "tflite", "openvino": "openvino"}
# Backends that can run from any one of several packages (checked in order).
_ALTERNATIVES = {"tflite": ("ai_edge_litert", "tflite_runtime", "tensorflow")}


def _installed(name) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in _ALTERNATIVES.get(name, (_BACKENDS[name][1],)))


def available_backends() -> list[str]:
    return [name for name in _BACKENDS if _installed(name)]


def backend_for(path: Path, backend: str = "auto") -> type:
    suffix = Path(path).suffix.lower()
    if backend == "auto":
        names = [n for n, (_, _, suffixes) in _BACKENDS.items() if suffix in suffixes]
        if not names:
            known = sorted({s for _, _, sfx in _BACKENDS.values() for s in sfx})
            raise ModelLoadError(f"no runtime backend runs '{suffix}' files ({path}); known: {known}")
        usable = [n for n in names if _installed(n)]
        backend = (usable or names)[0]
    if backend not in _BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; known: {sorted(_BACKENDS)}")
    target, module, suffixes = _BACKENDS[backend]
    if suffix not in suffixes:
        raise ModelLoadError(f"backend {backend!r} runs {list(suffixes)} files, not {path.name}")
    if not _installed(backend):
        raise BackendUnavailableError(
            f"backend {backend!r} needs the '{module}' package: pip install 'edgekit[{_EXTRA[backend]}]'")
    mod_name, attr = target.split(":")
    return getattr(importlib.import_module(mod_name), attr)

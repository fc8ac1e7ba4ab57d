"""Runtime backends, one module per engine, imported only when a model needs it.

Each backend class takes ``(path, threads=None)`` and exposes ``inputs`` and
``outputs`` (lists of TensorInfo, as the file declares them) and
``run(feeds: dict[str, ndarray]) -> list[ndarray]``. Adding an engine is one
module and one line in ``_BACKENDS``.
"""

import importlib
import importlib.util
from pathlib import Path

from .._errors import BackendUnavailableError, ModelLoadError

# name -> (class path, module that must be importable, file suffixes it runs)
_BACKENDS = {
    "onnxruntime": ("edgekit.runtime.backends._onnxruntime:OnnxRuntimeBackend",
                    "onnxruntime", (".onnx",)),
}
_EXTRA = {"onnxruntime": "onnx"}


def available_backends() -> list[str]:
    return [name for name, (_, module, _) in _BACKENDS.items()
            if importlib.util.find_spec(module) is not None]


def backend_for(path: Path, backend: str = "auto") -> type:
    suffix = Path(path).suffix.lower()
    if backend == "auto":
        names = [n for n, (_, _, suffixes) in _BACKENDS.items() if suffix in suffixes]
        if not names:
            known = sorted({s for _, _, sfx in _BACKENDS.values() for s in sfx})
            raise ModelLoadError(f"no runtime backend runs '{suffix}' files ({path}); known: {known}")
        usable = [n for n in names if importlib.util.find_spec(_BACKENDS[n][1]) is not None]
        backend = (usable or names)[0]
    if backend not in _BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; known: {sorted(_BACKENDS)}")
    target, module, suffixes = _BACKENDS[backend]
    if suffix not in suffixes:
        raise ModelLoadError(f"backend {backend!r} runs {list(suffixes)} files, not {path.name}")
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the '{module}' package: pip install 'edgekit[{_EXTRA[backend]}]'")
    mod_name, attr = target.split(":")
    return getattr(importlib.import_module(mod_name), attr)

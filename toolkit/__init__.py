"""edgekit — prune, quantize, convert and parity-verify models for edge devices.

The top-level package stays light: ``import edgekit`` (and so ``import
edgekit.runtime`` on a device) loads no framework. ``edgekit.export(...)``, ``edgekit.verify(...)``
and ``edgekit.sweep(...)`` are functions, loaded on first use; no submodule bears
their names (the converters live in ``edgekit.converters``), so no import can shadow them.
"""

from ._version import __version__

__all__ = ["__version__", "export", "verify", "sweep", "errors"]


def __getattr__(name):
    # PEP 562: heavy parts load on first use only.
    if name == "export":
        from .pipeline import export
        return export
    if name == "verify":
        from .verification import verify
        return verify
    if name == "sweep":
        from .sweep_run import sweep
        return sweep
    if name == "errors":
        from . import errors
        return errors
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")

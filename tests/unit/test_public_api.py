"""The public surface: the names edgekit documents are what it documents, whatever was imported."""

import importlib
import inspect
import pkgutil
import types

import edgekit


def test_public_names_are_not_shadowed_by_submodules():
    """``import edgekit, edgekit.verify`` used to replace the function edgekit.verify with its
    module (any export imported it): ``edgekit.verify(bundle, data)`` raised 'module is not callable'."""
    for info in pkgutil.iter_modules(edgekit.__path__):
        if info.name != "__main__":  # (running it is the CLI)
            importlib.import_module(f"edgekit.{info.name}")  # every submodule of the package, as a run may
    for package in ("converters", "quantize", "runtime", "sources", "cli"):  # mapped from their own folders
        importlib.import_module(f"edgekit.{package}")
    kinds = {"__version__": lambda v: isinstance(v, str),
             "export": inspect.isfunction,  # (was a callable module until the converters moved out)
             "verify": inspect.isfunction,
             "sweep": inspect.isfunction,
             "errors": lambda v: isinstance(v, types.ModuleType)}
    assert set(edgekit.__all__) == set(kinds)
    for name, is_documented_kind in kinds.items():
        assert is_documented_kind(getattr(edgekit, name)), (name, getattr(edgekit, name))
    assert list(inspect.signature(edgekit.verify).parameters)[:2] == ["bundle", "eval"]

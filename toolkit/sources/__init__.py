"""Model sources: one module per framework, behind a registry.

A source class has a cheap ``accepts(model)`` (no framework import) and
``load(model, weights=, input_specs=)`` returning an object with ``framework``,
``description``, ``native``, ``input_specs``, ``output_names``,
``probe(dataset, *, timeout)`` and ``reference(dataset, device, *, timeout)``. ``timeout`` limits
runs of model files from elsewhere (ONNX, run in an isolated child); a framework model built by
the user's own code runs in-process and ignores it. ``load_source`` asks the registered sources
in order; adding a framework is one module and one line.
"""

import importlib
from pathlib import Path

from .._pyfile import UserCode, is_pyfile_ref, load_attr
from ..errors import ConfigError, InputError
from ..registry import Registry

SOURCES = Registry("sources")
SOURCES.register("torch", "edgekit.sources.torch_source:TorchSource", requires=("torch", "onnx"),
                 extra="torch")
SOURCES.register("tf", "edgekit.sources.tf_source:TFSource", requires=("tensorflow",), extra="tf")
SOURCES.register("onnx", "edgekit.sources.onnx_source:OnnxSource", requires=("onnx", "onnxruntime"),
                 extra="onnx")

__all__ = ["SOURCES", "load_source"]


def load_source(model, *, weights=None, input_specs=None, framework=None, trust_model=False, custom_objects=None):
    """Pick the source that accepts ``model`` (or the named ``framework``) and load it.

    ``trust_model``: allow model files that can run code when loaded (``.pt2`` programs,
    TorchScript archives); off by default. ``custom_objects``: the user's Python files (or a dict)
    defining a saved Keras model's own classes (``TFSource``)."""
    entries = SOURCES.entries()
    description = None
    # A model edgekit built or loaded itself may be changed in place; one the caller passed may not.
    owned = isinstance(model, (str, Path))
    if is_pyfile_ref(model):
        # FILE.py:FACTORY: the user's own code builds the model; dispatch on what it returns.
        factory = load_attr(model)
        if not callable(factory):
            raise InputError(f"{model} is not callable; expected a factory returning a model")
        description, model = model, UserCode(factory, f"the model factory {model}")()
    if framework is None:
        framework = next((name for name, entry in entries.items() if _accepts(entry, model)), None)
    if custom_objects and framework not in (None, "tf"):
        named = description or (str(model) if isinstance(model, (str, Path)) else type(model).__name__)
        raise ConfigError(f"--custom-objects applies to Keras models (.keras, .h5); {named} is a {framework} model")
    source = None if framework is None else SOURCES.get(framework).load(
        model, weights=weights, input_specs=input_specs, trust_model=trust_model,
        **({"custom_objects": custom_objects} if custom_objects else {}))
    if source is not None:
        if description:
            source.description = description
        source.owned = owned
        return source
    what = f"{description} returned a {type(model).__name__}" if description else f"cannot tell which framework {model!r} is for"
    raise InputError(
        f"{what}; expected FILE.py:FACTORY returning a torch.nn.Module or a Keras model, a .pt2 "
        "torch.export program or TorchScript archive (with --trust-model), a .keras/.h5 file, a SavedModel folder, an .onnx file, or a live model")


def _accepts(entry, model) -> bool:
    """The source class's cheap check, without importing its framework."""
    module, attr = entry.target.split(":")
    return getattr(importlib.import_module(module), attr).accepts(model)

"""Model sources: one module per framework, behind a registry.

A source class has a cheap ``accepts(model)`` (no framework import) and
``load(model, weights=, input_specs=)`` returning an object with ``framework``,
``description``, ``native``, ``input_specs``, ``output_names``,
``probe(dataset)`` and ``reference(dataset, device)``. ``load_source`` asks the
registered sources in order; adding a framework is one module and one line.
"""

import importlib

from ..errors import InputError
from ..registry import Registry

SOURCES = Registry("sources")
SOURCES.register("torch", "edgekit.sources.torch_source:TorchSource", requires=("torch", "onnx"),
                 extra="torch")
SOURCES.register("onnx", "edgekit.sources.onnx_source:OnnxSource", requires=("onnx", "onnxruntime"),
                 extra="onnx")

__all__ = ["SOURCES", "load_source"]


def load_source(model, *, weights=None, input_specs=None, framework=None):
    """Pick the source that accepts ``model`` (or the named ``framework``) and load it."""
    entries = SOURCES.entries()
    if framework is not None:
        return SOURCES.get(framework).load(model, weights=weights, input_specs=input_specs)
    for entry in entries.values():
        module, attr = entry.target.split(":")
        if getattr(importlib.import_module(module), attr).accepts(model):
            return entry.load().load(model, weights=weights, input_specs=input_specs)
    raise InputError(
        f"cannot tell which framework {model!r} is for; expected FILE.py:FACTORY (PyTorch), "
        "a .pt2 torch.export program, an .onnx file, or a live model object")

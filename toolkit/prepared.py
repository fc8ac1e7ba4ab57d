"""PreparedModel: what converters, quantizers and the compression stages receive of the user's model.

A source (``edgekit.sources``) is loaded, given its input specs and probed once; the pipeline then
freezes it, and from there on it is a PreparedModel: its inputs and outputs no longer change, and a
stage that needs the framework's model asks for it through one of the capability methods below
(a method of another framework raises UnsupportedError) instead of reaching into the source's
attributes. A compressed model (pruned, QAT) is a new PreparedModel (``with_model``).
"""

from pathlib import Path
from typing import Protocol, runtime_checkable

from edgekit.runtime import TensorInfo


@runtime_checkable
class PreparedModel(Protocol):
    framework: str                     # edgekit.choices.Framework: torch | tf | onnx
    kind: str                          # how it was given: module, program; keras, tf_keras, saved_model; onnx
    description: str                   # for messages and the manifest: the file or FILE.py:factory
    input_specs: tuple[TensorInfo, ...]
    output_names: tuple[str, ...]
    owned: bool                        # edgekit loaded it itself (may change it in place), not the caller's object

    def torch_module(self):
        """PyTorch: the ``nn.Module`` (a torch.export program's module)."""

    def torch_program(self):
        """PyTorch: the ``torch.export.ExportedProgram`` the model was given as, else None."""

    def keras_model(self):
        """Keras / TensorFlow: the Keras model (None for a SavedModel folder)."""

    def saved_model_dir(self) -> Path:
        """Keras / TensorFlow: a SavedModel of the model (written once, on first use)."""

    def onnx_model(self):
        """ONNX: the loaded ``onnx.ModelProto``."""

    def onnx_path(self) -> Path | None:
        """ONNX: the file it was loaded from (None for an in-memory model)."""

    def weight_bytes(self) -> int:
        """Bytes of the model's weights in the framework (the size before export)."""

    def with_model(self, native, suffix: str) -> "PreparedModel":
        """The same inputs and outputs around another framework model (a compressed copy)."""

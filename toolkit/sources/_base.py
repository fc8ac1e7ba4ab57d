"""What every source shares: the PreparedModel capability methods a source of another framework
lacks (each raises UnsupportedError naming what was asked and what the model is), and freezing
after load and probe."""

from ..errors import UnsupportedError


class SourceBase:
    framework = ""
    kind = ""
    owned = False  # set by load_source: edgekit loaded the model itself and may change it in place

    def freeze(self):
        """From here on the model's inputs and outputs are fixed (the pipeline calls it after the
        probe); setting a public attribute raises AttributeError."""
        self.input_specs = tuple(self.input_specs)
        self.output_names = tuple(self.output_names)
        self._frozen = True
        return self

    def __setattr__(self, name, value):
        if not name.startswith("_") and self.__dict__.get("_frozen"):
            raise AttributeError(f"{type(self).__name__} of {self.description} is frozen after load and probe; "
                                 f"{name} cannot change (a changed model is a new one: with_model)")
        super().__setattr__(name, value)

    def _lacks(self, what: str):
        raise UnsupportedError(f"{what}: {self.description} is a {self.framework} model")

    def torch_module(self):
        self._lacks("a PyTorch module is needed")

    def torch_program(self):
        return None

    def keras_model(self):
        self._lacks("a Keras model is needed")

    def saved_model_dir(self):
        self._lacks("a TensorFlow SavedModel is needed")

    def onnx_model(self):
        self._lacks("an ONNX model is needed")

    def onnx_path(self):
        self._lacks("an ONNX file is needed")

    def weight_bytes(self) -> int | None:
        return None

    def with_model(self, native, suffix):
        self._lacks("pruning and QAT need a PyTorch or Keras model")

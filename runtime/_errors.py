"""Errors raised by the runtime.

They subclass ValueError/ImportError so that device code that does not know
edgekit can still catch them. The toolkit's own error tree (``edgekit.errors``)
is not imported here: the runtime stands alone.
"""


class ModelLoadError(ValueError):
    """The bundle or model file is missing, malformed, or fails its checksum."""


class RuntimeInputError(ValueError):
    """The data passed to ``predict`` does not fit the model's inputs."""


class EngineError(RuntimeError):
    """The inference engine failed while running the model (the engine's own message kept)."""


class BackendUnavailableError(ImportError):
    """The backend needed for this model is not installed."""

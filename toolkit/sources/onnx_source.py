"""ONNX source: an ``.onnx`` file. There is no framework: the fp32 ONNX run through the runtime is the reference."""

from pathlib import Path

import numpy as np

from edgekit.runtime import TensorInfo

from ..errors import InputError
from ..reference import ReferenceOutputs

_ONNX_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64, 2: np.uint8, 3: np.int8,
                5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_}


def guess_layout(shape, dtype) -> str | None:
    if len(shape) != 4 or np.dtype(dtype).kind != "f":
        return None
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "nchw"
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "nhwc"
    return "nchw" if shape[1] in (1, 3, 4) else None


def onnx_input_specs(model) -> list:
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_DTYPES:
            raise InputError(f"ONNX input {value.name!r} has element type {tensor.elem_type}, not a plain tensor type")
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        dtype = np.dtype(_ONNX_DTYPES[tensor.elem_type])
        specs.append(TensorInfo(name=value.name, shape=shape, dtype=dtype, layout=guess_layout(shape, dtype)))
    return specs


def _tensors(graph):
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def check_external_data(model, folder: Path):
    """An external-data ``location`` must be a plain relative path to a regular, singly linked file
    inside the model's folder: not absolute, no ``..``, no symlink, no hard link, no escape."""
    folder = folder.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        relative = Path(location)
        if not location or relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"tensor {tensor.name!r}: external data location {location!r} is not a plain "
                             "relative path inside the model's folder")
        target = folder / relative
        if target.is_symlink():
            raise InputError(f"tensor {tensor.name!r}: external data {location!r} is a symbolic link; refused")
        if not target.is_file():
            raise InputError(f"tensor {tensor.name!r}: external data file {location!r} is missing")
        if target.stat().st_nlink > 1:
            raise InputError(f"tensor {tensor.name!r}: external data {location!r} is a hard link; refused")
        if folder not in target.resolve().parents:
            raise InputError(f"tensor {tensor.name!r}: external data {location!r} resolves outside {folder}")


def load_checked(path: Path):
    """Load an ONNX file whose external data (if any) passed ``check_external_data``, then run the
    checker with full checks."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    check_external_data(model, path.parent)
    try:
        load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    return model


class OnnxSource:
    framework = "onnx"

    @staticmethod
    def accepts(model) -> bool:
        if isinstance(model, (str, Path)):
            return str(model).lower().endswith(".onnx")
        return type(model).__module__.split(".")[0] == "onnx"

    @classmethod
    def load(cls, model, *, weights=None, input_specs=None, trust_model=False):
        from ..errors import ConfigError
        if weights is not None:
            raise ConfigError("--weights does not apply to an ONNX model (its weights are inside the file)")
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise InputError(f"{path} does not exist")
            proto = load_checked(path)
            description = str(path)
        else:
            proto, path, description = model, None, "onnx.ModelProto"
        return cls(proto, path, description, input_specs)

    def __init__(self, proto, path, description, input_specs):
        self.native = proto
        self.path = path
        self.description = description
        self.input_specs = list(input_specs) if input_specs else onnx_input_specs(proto)
        self.output_names = [o.name for o in proto.graph.output]

    def specs_from_data(self, dataset):
        return self.input_specs

    def probe(self, dataset):
        self._model()
        try:
            self._session.run({s.name: dataset.inputs[s.name][:1] for s in self.input_specs})
        except Exception as exc:
            raise InputError(f"the ONNX model rejected the data: {exc}") from None
        return self.output_names

    def _model(self):
        if getattr(self, "_session", None) is None:
            import tempfile
            import edgekit.runtime as ekr
            with tempfile.TemporaryDirectory() as tmp:
                file = Path(tmp) / "model.onnx"
                file.write_bytes(self.native.SerializeToString())
                self._session = ekr.load(file)
        return self._session

    def reference(self, dataset, device) -> ReferenceOutputs:
        import onnxruntime
        outputs = self._model().run({s.name: dataset.inputs[s.name] for s in self.input_specs})
        return ReferenceOutputs(outputs, "onnxruntime", "cpu", "cpu", {"onnxruntime": onnxruntime.__version__},
                                dataset.sha256(), len(dataset))

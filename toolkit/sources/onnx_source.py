"""ONNX source: an ``.onnx`` file. There is no framework: the fp32 ONNX run through the runtime is the reference."""

from pathlib import Path

import numpy as np

from edgekit.runtime import Layout, TensorInfo

from ..config import VERIFY_TIMEOUT_S
from ..errors import InputError
from ..memory import VERIFY_BATCH, MemoryPlan
from ..reference import ReferenceOutputs
from ._base import SourceBase

_ONNX_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64, 2: np.uint8, 3: np.int8,
                5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_}


def guess_layout(shape, dtype) -> Layout | None:
    if len(shape) != 4 or np.dtype(dtype).kind != "f":
        return None
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return Layout.NCHW
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return Layout.NHWC
    return Layout.NCHW if shape[1] in (1, 3, 4) else None


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


def check_external_data(path: Path):
    """The runtime's rule for external data (``edgekit.runtime.backends._onnx_external``): a plain
    relative path to a regular, singly linked file inside the model's folder; a usage error here."""
    from edgekit.runtime import ModelLoadError
    from edgekit.runtime.backends._onnx_external import check_external_data as check
    try:
        check(path)
    except ModelLoadError as exc:
        raise InputError(str(exc)) from exc


def load_checked(path: Path):
    """Load an ONNX file whose external data (if any) passed ``check_external_data``, then run the
    checker with full checks."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model
    check_external_data(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    try:
        load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise InputError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    return model


class OnnxSource(SourceBase):
    framework = "onnx"
    kind = "onnx"

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

    def onnx_model(self):
        return self.native

    def onnx_path(self):
        return self.path

    def specs_from_data(self, dataset):
        return self.input_specs

    def probe(self, dataset, *, timeout=VERIFY_TIMEOUT_S):
        self._run({s.name: dataset.inputs[s.name][:1] for s in self.input_specs}, timeout)
        return self.output_names

    def _run(self, inputs, timeout, batch=VERIFY_BATCH) -> dict:
        """The model over ``inputs`` in an isolated child: an ONNX file from elsewhere can crash
        onnxruntime or never finish (a Loop with a 2^62 trip count); here that is a clean error."""
        import tempfile
        import edgekit.runtime as ekr
        from edgekit.runtime._child import ChildFailure, run_isolated
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "model.onnx"
            file.write_bytes(self.native.SerializeToString())
            try:
                return run_isolated(file, inputs, timeout=timeout, batch=batch, what="running the source ONNX model")
            except ChildFailure as exc:
                raise InputError(f"the ONNX model failed on the data: {exc}") from exc
            except ekr.ModelLoadError as exc:
                raise InputError(f"onnxruntime cannot load the ONNX model: {exc}") from exc

    def reference(self, dataset, device, *, timeout=VERIFY_TIMEOUT_S, memory=MemoryPlan()) -> ReferenceOutputs:
        """onnxruntime's outputs, in a child as verification runs, in the same batches (``memory.child_batch``):
        the fp32 ONNX artifact, the same graph, then matches bit for bit."""
        import onnxruntime
        outputs = self._run({s.name: dataset.inputs[s.name] for s in self.input_specs}, timeout, memory.child_batch)
        return ReferenceOutputs(outputs, "onnxruntime", "cpu", "cpu", {"onnxruntime": onnxruntime.__version__},
                                dataset.sha256(), len(dataset))

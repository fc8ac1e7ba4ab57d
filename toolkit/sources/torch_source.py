"""PyTorch source: ``file.py:factory`` (+ weights), a ``.pt2`` torch.export program, or a live module."""

import inspect
import logging
from pathlib import Path

import numpy as np

from edgekit.runtime import Layout, TensorInfo

from ..config import ReferenceDevice
from .._torch import flatten_outputs
from ..errors import ConfigError, InputError
from ..memory import MemoryPlan
from ..reference import ReferenceOutputs
from ._base import SourceBase

log = logging.getLogger("edgekit.sources.torch")


def resolve_device(requested, cuda_available: bool) -> str:
    """auto -> cuda when present, else cpu; an explicit cuda without CUDA is an error, not a fallback."""
    requested = ReferenceDevice(requested)
    if requested == ReferenceDevice.CUDA and not cuda_available:
        raise ConfigError("--reference-device cuda: CUDA is not available here (torch.cuda.is_available() "
                          "is False); use auto or cpu")
    if requested == ReferenceDevice.AUTO:
        return "cuda" if cuda_available else "cpu"
    return requested.value


TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit")


class TorchSource(SourceBase):
    framework = "torch"

    @staticmethod
    def accepts(model) -> bool:
        if isinstance(model, (str, Path)):
            return Path(model).suffix.lower() in (".pt2",) + TORCHSCRIPT_SUFFIXES
        return type(model).__module__.split(".")[0] == "torch" or any(
            c.__module__.startswith("torch.") for c in type(model).__mro__)

    @classmethod
    def load(cls, model, *, weights=None, input_specs=None, trust_model=False):
        import torch

        description = str(model) if isinstance(model, (str, Path)) else type(model).__name__
        specs = list(input_specs) if input_specs else None
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not trust_model:
                kind = "a torch.export program" if path.suffix.lower() == ".pt2" else "a TorchScript archive"
                raise InputError(
                    f"{path} is {kind}, which can run code when loaded; edgekit loads it only with "
                    "--trust-model (Python API: trust_model=True). For a file from elsewhere, build the model "
                    "in code (FILE.py:factory) and load its state_dict with --weights (weights_only=True)")
            model = _load_program(path) if path.suffix.lower() == ".pt2" else _load_torchscript(path)
        if isinstance(model, torch.export.ExportedProgram):
            specs = specs or _program_specs(model)
            if weights is not None:
                raise ConfigError("--weights applies to FILE.py:FACTORY models; a .pt2 program holds its weights")
        elif isinstance(model, torch.nn.Module):
            if weights is not None:
                _load_weights(model, Path(weights))
            model.eval()
        else:
            raise InputError(f"{description} gave {type(model).__name__}; expected a torch.nn.Module "
                             "or a torch.export.ExportedProgram")
        return cls(model, description, specs)

    def __init__(self, native, description, input_specs):
        self.native = native
        self.description = description
        self.input_specs = input_specs
        self.output_names = None
        import torch
        is_program = isinstance(native, torch.export.ExportedProgram)
        self.kind = "program" if is_program else "module"
        self._module = native.module() if is_program else native

    def torch_module(self):
        return self._module

    def torch_program(self):
        return self.native if self.kind == "program" else None

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._module.state_dict().values())

    def with_model(self, module, suffix) -> "TorchSource":
        """The same source (inputs, outputs) holding another module: a compressed copy."""
        other = TorchSource(module, self.description + suffix, self.input_specs)
        other.output_names = self.output_names
        other.owned = True  # edgekit's own compressed copy
        return other.freeze()

    def input_names(self, count: int) -> list[str]:
        if self.input_specs:
            return [s.name for s in self.input_specs]
        forward = self._module.forward
        try:
            params = [p.name for p in inspect.signature(forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (ValueError, TypeError):  # TorchScript: the compiled schema names the arguments
            schema = getattr(forward, "schema", None)
            params = [a.name for a in schema.arguments[1:]] if schema is not None else []
        return params[:count] if len(params) >= count else [f"input_{i}" for i in range(count)]

    def specs_from_data(self, dataset) -> list:
        """Input specs for a module that declares none: per-sample shapes from the data, batch dynamic."""
        names = self.input_names(len(dataset.inputs))
        arrays = list(dataset.inputs.values())
        if len(arrays) > 1:
            missing = [n for n in names if n not in dataset.inputs]
            if missing:
                raise InputError(f"the model's forward() takes {names}; the data has {sorted(dataset.inputs)}")
            arrays = [dataset.inputs[n] for n in names]
        specs = []
        for name, array in zip(names, arrays):
            dtype = np.float32 if array.dtype.kind == "f" else array.dtype
            layout = Layout.NCHW if array.ndim == 4 and array.dtype.kind == "f" else None
            specs.append(TensorInfo(name=name, shape=(None,) + tuple(array.shape[1:]),
                                    dtype=np.dtype(dtype), layout=layout))
        return specs

    def probe(self, dataset, *, timeout=None) -> list[str]:
        """Run two samples on the CPU: proves the data fits and learns the output names."""
        import torch
        feeds = [torch.from_numpy(np.ascontiguousarray(dataset.inputs[s.name][:2])) for s in self.input_specs]
        try:
            with torch.inference_mode():
                result = self._module(*feeds)
        except Exception as exc:
            shapes = {s.name: tuple(dataset.inputs[s.name].shape) for s in self.input_specs}
            hint = ""
            if any(len(v) == 4 and v[-1] in (1, 3, 4) and v[1] not in (1, 3, 4) for v in shapes.values()):
                hint = (" — the data looks NHWC, PyTorch models take NCHW: transpose it with "
                        "x.transpose(0, 3, 1, 2) (edgekit never transposes silently)")
            raise InputError(f"the model rejected the data (inputs {shapes}): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}") from exc
        self.output_names = list(flatten_outputs(result))
        return self.output_names

    def reference(self, dataset, device, *, timeout=None, memory=MemoryPlan()) -> ReferenceOutputs:
        """The module's outputs on ``dataset``, ``memory.batch`` samples per call."""
        import torch
        torch_device = resolve_device(device, torch.cuda.is_available())
        module = self._module.to(torch_device)
        chunks = {}
        count = len(dataset)
        try:
            with torch.inference_mode():
                for start in range(0, count, memory.batch):
                    feeds = [torch.from_numpy(np.ascontiguousarray(dataset.inputs[s.name][start:start + memory.batch]))
                             .to(torch_device) for s in self.input_specs]
                    for name, value in flatten_outputs(module(*feeds)).items():
                        chunks.setdefault(name, []).append(value.detach().float().cpu().numpy())
        finally:
            self._module.to("cpu")
        versions = {"torch": torch.__version__}
        device_name = "cpu"
        if torch_device == "cuda":
            versions["cuda"] = torch.version.cuda
            device_name = torch.cuda.get_device_name()
        outputs = {k: np.concatenate(v) for k, v in chunks.items()}
        return ReferenceOutputs(outputs, "torch", torch_device, device_name, versions,
                                dataset.sha256(), count)


def _load_weights(module, path: Path):
    import torch
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        from edgekit._filekind import describe
        kind = describe(path)
        if kind and "PyTorch" not in kind and "pickle" not in kind:
            raise InputError(f"weights: {path} is {kind}; expected a PyTorch state_dict saved with "
                             "torch.save(model.state_dict(), 'weights.pt')") from exc
        raise InputError(f"cannot load weights {path} with weights_only=True (only tensors and plain "
                         f"containers are allowed): {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}; expected a state_dict (dict of tensors)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights {path} do not fit the model: {exc}") from exc


def _load_torchscript(path: Path):
    import torch
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InputError(f"cannot load TorchScript archive {path}: {type(exc).__name__}: {exc}") from exc


def _load_program(path: Path):
    import torch
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise InputError(f"cannot load torch.export program {path}: {type(exc).__name__}: {exc}") from exc


def _program_specs(program) -> list:
    import torch
    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise InputError(f"program input {node.name!r} is not a tensor; edgekit feeds tensors only")
        shape = tuple(d if isinstance(d, int) else None for d in value.shape)
        dtype = np.dtype(str(value.dtype).removeprefix("torch."))
        layout = Layout.NCHW if len(shape) == 4 and dtype.kind == "f" else None
        specs.append(TensorInfo(name=node.name, shape=shape, dtype=dtype, layout=layout))
    return specs

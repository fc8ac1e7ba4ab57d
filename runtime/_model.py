"""``load()`` and the ``Model`` it returns."""

import os
import warnings
from pathlib import Path

import numpy as np

from ._cpu import describe_host, host_profile
from ._errors import ModelLoadError, RuntimeInputError
from ._manifest import artifact_path, read_manifest, select_artifact
from ._records import ArtifactEntry
from ._quant import dequantize, quantize
from ._tensor import TensorInfo, format_shape
from .backends import backend_for

__all__ = ["Model", "TensorInfo", "load", "load_artifact"]


def load(path, backend="auto", *, artifact=None, precision=None, threads=None,
         check_hash=True, isolate=False, **engine_options) -> "Model":
    """Load a bundle directory or a bare model file.

    For a bundle, ``artifact`` (an id such as ``"onnx-int8"``) or ``precision``
    picks the artifact; otherwise the bundle's default (the best one that passed
    parity at export time). ``backend`` is ``"auto"`` or a name from
    ``available_backends()``; ``threads`` sets the engine's intra-op threads; further
    keywords go to the engine (OpenVINO: ``streams``, ``inference_precision``).
    ``isolate=True`` first parses the file in a child process, so that a crash in a native
    parser on a file you did not produce becomes a ModelLoadError instead of killing the caller.
    """
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        fmt = None if backend == "auto" else _format_of_backend(backend)
        entry = select_artifact(manifest, artifact=artifact, precision=precision, fmt=fmt, cpu=host_profile())
        _warn_if_unverified(entry)
        file = artifact_path(path, entry, check_hash=check_hash)
        if isolate:
            probe_isolated(file, backend)
        return load_artifact(file, entry, backend=backend, threads=threads, manifest=manifest, **engine_options)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist (expected a bundle folder or a model file)")
    if artifact is not None or precision is not None:
        raise ModelLoadError("artifact= and precision= select inside a bundle; "
                             f"{path} is a single model file")
    if isolate:
        probe_isolated(path, backend)
    engine = _engine(path, backend, threads, engine_options)
    return Model(engine, list(engine.inputs), list(engine.outputs))


def load_artifact(file, entry, *, backend="auto", threads=None, manifest=None, **engine_options) -> "Model":
    """One model file described by a manifest entry (an ArtifactEntry, or its dict): its names,
    layouts, quantized I/O."""
    if not isinstance(entry, ArtifactEntry):
        entry = ArtifactEntry.from_dict(entry)
    engine = _engine(Path(file), backend, threads, engine_options)
    inputs, outputs = list(entry.inputs), list(entry.outputs)
    _check_against_file(entry, inputs, engine.inputs, outputs, engine.outputs)
    return Model(engine, inputs, outputs, artifact=entry, manifest=manifest)


def _warn_if_unverified(entry):
    """A RuntimeWarning when this CPU belongs to no profile the artifact was verified on: its int8
    kernels may differ from every CPU that checked it (bundles that record no profiles: silent)."""
    if entry.verified_on is None:
        return
    verified = entry.verified_profiles
    host = host_profile()
    if host not in verified:
        warnings.warn(f"artifact {entry.id!r} was verified on {verified or 'no CPU profile'}; this CPU is "
                      f"{describe_host()}, which it was not verified on: its accuracy here is unchecked "
                      f"(re-export with --target-cpu {host or 'host'} on such a machine, or verify it here)",
                      RuntimeWarning, stacklevel=3)


def probe_isolated(path, backend="auto", timeout=600):
    """Load ``path`` and run it once on zeros in an isolated child Python first; its crash, hang or
    refusal becomes a ModelLoadError here (``_child`` says how the child is isolated)."""
    from ._child import ChildFailure, spawn
    try:
        spawn(["probe", os.path.abspath(path), backend], timeout=timeout, what=f"loading {path}")
    except ChildFailure as exc:
        raise ModelLoadError(f"model rejected: {exc}") from exc


def trial_inputs(model) -> dict:
    """One sample of zeros per input (dynamic axes of size 1): enough to make the engine read
    every constant the graph uses."""
    return {t.key: np.zeros(tuple(1 if d is None else d for d in t.shape), t.dtype) for t in model.inputs}


def _engine(path, backend, threads, engine_options):
    cls = backend_for(path, backend)
    if engine_options:
        import inspect
        try:
            inspect.signature(cls).bind(path, threads=threads, **engine_options)
        except TypeError as exc:
            raise ModelLoadError(f"backend {cls.name!r} does not take the options {sorted(engine_options)}") from exc
    return cls(path, threads=threads, **engine_options)


def _format_of_backend(backend: str) -> str:
    return {"onnxruntime": "onnx"}.get(backend, backend)  # "tflite" and "openvino" are both


def _check_against_file(entry, inputs, file_inputs, outputs, file_outputs):
    for declared, actual, kind in ((inputs, file_inputs, "inputs"), (outputs, file_outputs, "outputs")):
        got = [(t.name, t.dtype) for t in actual]
        want = [(t.name, t.dtype) for t in declared]
        if got != want:
            raise ModelLoadError(
                f"artifact {entry.id!r}: the manifest declares {kind} {want} "
                f"but the file has {got}")


class Model:
    """A loaded model: numpy in, numpy out.

    ``inputs``/``outputs`` describe the tensors (name, shape with None for
    dynamic axes, dtype, layout, quantization). ``predict`` accepts one array
    (single-input models), a list in input order, or a dict by name; a missing
    batch axis is added and removed again; float data for quantized inputs is
    quantized, quantized outputs are dequantized.
    """

    def __init__(self, engine, inputs, outputs, *, artifact=None, manifest=None):
        self._engine = engine
        self.inputs = inputs
        self.outputs = outputs
        self.artifact = artifact    # the bundle's ArtifactEntry (None for a bare model file)
        self.manifest = manifest    # the bundle's Manifest (None for a bare file or a lone artifact)
        self.backend = engine.name
        # Fixed batch 1 (common in TFLite): larger batches are run one sample at a time.
        self._batch_one = [t.shape[:1] == (1,) for t in engine.inputs]

    def __repr__(self):
        ins = ", ".join(f"{t.name}{list(t.shape)}:{t.dtype.name}" for t in self.inputs)
        return f"<edgekit.runtime.Model {self.artifact.id if self.artifact else ''} backend={self.backend} inputs=[{ins}]>"

    def __call__(self, *args, **kwargs):
        return self.predict(*args, **kwargs)

    def predict(self, x=None, **named):
        """Run the model; return one array, or a dict by output name when there are several."""
        outputs = self.run(named if x is None else x)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def run(self, x) -> dict:
        """Run the model and return every output, as a dict by name."""
        feeds, added_batch = self._feeds(x)
        if any(self._batch_one) and next(iter(feeds.values())).shape[0] != 1:
            results = self._run_per_sample(feeds)
        else:
            results = self._engine.run(feeds)
        out = {}
        for info, value in zip(self.outputs, results):
            if info.quantized:
                value = dequantize(value, info.scale, info.zero_point)
            out[info.key] = value[0] if added_batch else value
        return out

    def run_batched(self, inputs: dict, batch_size: int) -> dict:
        """``run`` over a whole data set (arrays by input name, batch axis first), ``batch_size``
        samples per call; every output concatenated."""
        count = len(next(iter(inputs.values())))
        chunks = [self.run({k: v[i:i + batch_size] for k, v in inputs.items()}) for i in range(0, count, batch_size)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _run_per_sample(self, feeds):
        count = next(iter(feeds.values())).shape[0]
        per_sample = [self._engine.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
        return [np.concatenate(parts, axis=0) for parts in zip(*per_sample)]

    def _feeds(self, x):
        if isinstance(x, dict):
            missing = [t.key for t in self.inputs if t.key not in x and t.name not in x]
            extra = sorted(set(x) - {t.name for t in self.inputs} - {t.key for t in self.inputs})
            if missing or extra:
                raise RuntimeInputError(
                    f"expected inputs {[t.key for t in self.inputs]}, got {sorted(x)}"
                    + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else ""))
            values = [x[t.key] if t.key in x else x[t.name] for t in self.inputs]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(self.inputs):
                raise RuntimeInputError(f"expected {len(self.inputs)} inputs "
                                        f"{[t.key for t in self.inputs]}, got {len(x)}")
            values = list(x)
        else:
            if len(self.inputs) != 1:
                raise RuntimeInputError(f"this model has {len(self.inputs)} inputs "
                                        f"{[t.key for t in self.inputs]}: pass a dict by name")
            values = [x]
        feeds = {}
        added = set()
        for info, value in zip(self.inputs, values):
            value, was_added = _prepare(info, value)
            feeds[info.name] = value
            added.add(was_added)
        if len(added) > 1:
            raise RuntimeInputError("pass either every input with its batch axis or none")
        return feeds, added.pop()


def _prepare(info: TensorInfo, value):
    value = np.asarray(value)
    added = False
    if value.ndim == len(info.shape) - 1:
        value = value[None]
        added = True
    elif value.ndim != len(info.shape):
        raise RuntimeInputError(
            f"input {info.key!r}: expected rank {len(info.shape)} shape {format_shape(info.shape)} "
            f"(or one sample of rank {len(info.shape) - 1}), got shape {value.shape}")
    for axis, (want, got) in enumerate(zip(info.shape, value.shape)):
        if axis and want is not None and want != got:
            raise RuntimeInputError(
                f"input {info.key!r}: expected shape {format_shape(info.shape)}"
                f"{' layout ' + info.layout if info.layout else ''}, got {value.shape} "
                f"(axis {axis} is {got}, expected {want})")
    if value.dtype == info.dtype:
        return value, added
    if info.quantized and value.dtype.kind == "f":
        return quantize(value, info.scale, info.zero_point, info.dtype), added
    if value.dtype.kind == info.dtype.kind == "f":
        return value.astype(info.dtype), added
    if value.dtype.kind in "iu" and info.dtype.kind in "iu":
        limits = np.iinfo(info.dtype)
        if value.size and (value.min() < limits.min or value.max() > limits.max):
            raise RuntimeInputError(f"input {info.key!r}: values outside the range of {info.dtype}")
        return value.astype(info.dtype), added
    raise RuntimeInputError(f"input {info.key!r}: expected dtype {info.dtype.name}, got {value.dtype.name}")

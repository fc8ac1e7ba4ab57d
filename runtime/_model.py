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
        model = load_artifact(file, entry, backend=backend, threads=threads, manifest=manifest, **engine_options)
        model.bundle = path
        return model
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
        self.bundle = None          # the bundle folder it was loaded from (set by load)
        self.backend = engine.name
        # Fixed batch 1 (common in TFLite): larger batches are run one sample at a time.
        self._batch_one = any(t.shape[:1] == (1,) for t in engine.inputs)
        # Input checks run once per shape/dtype signature of the data passed; the plan they produce
        # (where each feed comes from, what conversion it needs) is reused on every later call.
        self._plans = {}
        self._dequantized = [(t.key, (t.scale, t.zero_point) if t.quantized else None) for t in outputs]

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
        signature = _signature(x)
        plan = self._plans.get(signature)
        if plan is None:
            plan = self._plan(x)  # every check, once per signature
            if signature is not None and len(self._plans) < MAX_PLANS:
                self._plans[signature] = plan
        feeds = plan.feeds(x)
        if plan.per_sample:
            results = self._run_per_sample(feeds)
        else:
            results = self._engine.run(feeds)
        return self._outputs(results, plan.added)

    def selftest(self):
        """Run this artifact on the golden samples its bundle stores and judge it against the stored
        reference outputs, with the tolerance it was verified with (``_selftest``): no eval data and
        no framework needed. Returns a SelfTestResult (``.passed``, ``.failures``, ``.figures``)."""
        from ._selftest import selftest
        if self.bundle is None:
            raise ModelLoadError("selftest needs a model loaded from a bundle folder: edgekit.runtime.load(DIR)")
        return selftest(self, self.bundle)

    def bind(self, example=None, **named):
        """A pre-checked fast path for data shaped like ``example`` (one array, a list in input
        order, or a dict by name): the returned callable ``f(x)`` checks only that ``x`` has the
        example's shapes and dtypes (anything else goes through ``predict`` and its checks) and
        calls the engine directly; it returns what ``predict`` returns. For serving loops where the
        wrapper's own cost matters (measured in benchmarks/bench.py)."""
        example = named if example is None else example
        return _bound(self, self._plan(example), example)

    def _outputs(self, results, added) -> dict:
        out = {}
        for (key, quantized), value in zip(self._dequantized, results):
            if quantized is not None:
                value = dequantize(value, *quantized)
            out[key] = value[0] if added else value
        return out

    def run_batched(self, inputs: dict, batch_size: int, on_batch=None) -> dict:
        """``run`` over a whole data set (arrays by input name, batch axis first), ``batch_size``
        samples per call; every output concatenated. ``on_batch(done, total)`` after each call."""
        count = len(next(iter(inputs.values())))
        chunks = []
        for i in range(0, count, batch_size):
            chunks.append(self.run({k: v[i:i + batch_size] for k, v in inputs.items()}))
            if on_batch is not None:
                on_batch(min(i + batch_size, count), count)
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _run_per_sample(self, feeds):
        count = next(iter(feeds.values())).shape[0]
        per_sample = [self._engine.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
        return [np.concatenate(parts, axis=0) for parts in zip(*per_sample)]

    def _plan(self, x) -> "_Plan":
        """Check ``x`` against the inputs (names, ranks, shapes, dtypes) and say how it becomes the
        engine's feeds; RuntimeInputError naming the input and what was expected when it does not fit."""
        if isinstance(x, dict):
            missing = [t.key for t in self.inputs if t.key not in x and t.name not in x]
            extra = sorted(set(x) - {t.name for t in self.inputs} - {t.key for t in self.inputs})
            if missing or extra:
                raise RuntimeInputError(
                    f"expected inputs {[t.key for t in self.inputs]}, got {sorted(x)}"
                    + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else ""))
            sources = [t.key if t.key in x else t.name for t in self.inputs]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(self.inputs):
                raise RuntimeInputError(f"expected {len(self.inputs)} inputs "
                                        f"{[t.key for t in self.inputs]}, got {len(x)}")
            sources = list(range(len(x)))
        else:
            if len(self.inputs) != 1:
                raise RuntimeInputError(f"this model has {len(self.inputs)} inputs "
                                        f"{[t.key for t in self.inputs]}: pass a dict by name")
            sources = [None]
        steps, added, batch = [], set(), set()
        for info, source in zip(self.inputs, sources):
            value = x if source is None else x[source]
            convert, was_added, count = _check(info, value)
            steps.append((info.name, source, convert))
            added.add(was_added)
            batch.add(count)
        if len(added) > 1:
            raise RuntimeInputError("pass either every input with its batch axis or none")
        added = added.pop()
        return _Plan(tuple(steps), added, self._batch_one and not added and batch != {1})


MAX_PLANS = 16  # signatures remembered per model (a serving loop has one or two; a data set's last batch one more)


def _signature(x):
    """The shapes and dtypes of what was passed, or None when it is not made of numpy arrays (it is
    then checked on every call)."""
    if isinstance(x, np.ndarray):
        return x.shape, x.dtype
    if isinstance(x, dict) and all(isinstance(v, np.ndarray) for v in x.values()):
        return tuple((k, v.shape, v.dtype) for k, v in x.items())
    if isinstance(x, (list, tuple)) and all(isinstance(v, np.ndarray) for v in x):
        return ("list",) + tuple((v.shape, v.dtype) for v in x)
    return None


class _Plan:
    """How data of one signature becomes the engine's feeds: per input, its name in the engine,
    where it is in what was passed (a key, an index, or the array itself) and the conversion it needs."""

    __slots__ = ("steps", "added", "per_sample")

    def __init__(self, steps, added, per_sample):
        self.steps, self.added, self.per_sample = steps, added, per_sample

    def feeds(self, x) -> dict:
        feeds = {}
        for name, source, convert in self.steps:
            value = x if source is None else x[source]
            feeds[name] = value if convert is None else convert(value)
        return feeds


def _bound(model, plan, example):
    """``Model.bind``'s callable. One array in, one float array out and nothing to convert: the
    engine's own one-value call behind an identity check of shape and dtype (a closure with its
    values bound as defaults: attribute lookups cost microseconds here). Otherwise, or for other
    data, the plan or ``predict``."""
    signature, run, outputs = _signature(example), model._engine.run, model._outputs

    def general(x):
        if _signature(x) != signature:
            return model.predict(x)  # not the bound data: every check, as predict does
        feeds = plan.feeds(x)
        results = model._run_per_sample(feeds) if plan.per_sample else run(feeds)
        named = outputs(results, plan.added)
        return next(iter(named.values())) if len(named) == 1 else named

    single = getattr(model._engine, "single", None)
    if not (single is not None and isinstance(example, np.ndarray) and len(model.inputs) == len(model.outputs) == 1
            and plan.steps[0][2] is None and not plan.added and not plan.per_sample
            and model._dequantized[0][1] is None):
        return general

    def fast(x, _ndarray=np.ndarray, _shape=example.shape, _dtype=example.dtype, _call=single(), _general=general):
        if x.__class__ is _ndarray and x.shape == _shape and x.dtype is _dtype:
            return _call(x)
        return _general(x)
    return fast


def _check(info: TensorInfo, value) -> tuple:
    """(conversion or None, whether a batch axis is added, batch size) for ``value`` as input
    ``info``; RuntimeInputError when it cannot be that input."""
    array = np.asarray(value)
    added = array.ndim == len(info.shape) - 1
    if not added and array.ndim != len(info.shape):
        raise RuntimeInputError(
            f"input {info.key!r}: expected rank {len(info.shape)} shape {format_shape(info.shape)} "
            f"(or one sample of rank {len(info.shape) - 1}), got shape {array.shape}")
    shape = (1, *array.shape) if added else array.shape
    for axis, (want, got) in enumerate(zip(info.shape, shape)):
        if axis and want is not None and want != got:
            raise RuntimeInputError(
                f"input {info.key!r}: expected shape {format_shape(info.shape)}"
                f"{' layout ' + info.layout if info.layout else ''}, got {shape} "
                f"(axis {axis} is {got}, expected {want})")
    steps = [step for step, needed in ((np.asarray, not isinstance(value, np.ndarray)),
                                       (_with_batch_axis, added), (_conversion(info, array), True)) if needed and step]
    if not steps:
        return None, added, shape[0]
    if len(steps) == 1:
        return steps[0], added, shape[0]
    return (lambda v: _chained(v, steps)), added, shape[0]


def _with_batch_axis(value):
    return value[None]


def _chained(value, steps):
    for step in steps:
        value = step(value)
    return value


def _conversion(info: TensorInfo, value):
    """What turns ``value``'s dtype into the input's (None: nothing), checked on ``value``."""
    if value.dtype == info.dtype:
        return None
    if info.quantized and value.dtype.kind == "f":
        return lambda v: quantize(v, info.scale, info.zero_point, info.dtype)
    if value.dtype.kind == info.dtype.kind == "f":
        return lambda v: v.astype(info.dtype)
    if value.dtype.kind in "iu" and info.dtype.kind in "iu":
        limits = np.iinfo(info.dtype)

        def narrowed(v):  # the range is a property of the values: checked on every call
            if v.size and (v.min() < limits.min or v.max() > limits.max):
                raise RuntimeInputError(f"input {info.key!r}: values outside the range of {info.dtype}")
            return v.astype(info.dtype)
        narrowed(value)
        return narrowed
    raise RuntimeInputError(f"input {info.key!r}: expected dtype {info.dtype.name}, got {value.dtype.name}")

"""Calibration and evaluation data: loading, binding to the model's inputs, validation.

A data set is given as an ``.npz`` (array ``x`` or one array per input name,
optional ``y`` labels), an ``.npy`` (inputs only), a folder of images with an
``ImagePreprocess``, a ``file.py:callable`` yielding batches, or in Python as an
array, a tuple ``(x, y)``, a dict, or a ``Dataset``. Nothing is unpickled, and numpy files
are size-checked before they are read (``edgekit._npz``: at most ``EDGEKIT_MAX_ARRAY_BYTES``,
default 2 GiB, of arrays per file).
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgekit.runtime as ekr
from edgekit.runtime import Layout

from ._npz import load_npy, load_npz
from ._pyfile import is_pyfile_ref, load_attr
from .errors import CalibrationError, ConfigError, InputError

log = logging.getLogger("edgekit.data")

LABEL_KEYS = ("y", "labels", "label")
SINGLE_INPUT_KEY = "x"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Inputs by name (``"x"`` until bound to a single-input model), optional labels."""

    inputs: dict
    labels: np.ndarray | None = None
    origin: str = "<memory>"
    class_names: tuple | None = None

    def __len__(self):
        return len(next(iter(self.inputs.values())))

    def take(self, count: int) -> "Dataset":
        labels = None if self.labels is None else self.labels[:count]
        return Dataset({k: v[:count] for k, v in self.inputs.items()}, labels, self.origin,
                       self.class_names)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.inputs):
            array = np.ascontiguousarray(self.inputs[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
            digest.update(array.tobytes())
        if self.labels is not None:
            digest.update(b"labels")
            digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class ImagePreprocess:
    """How a folder of images becomes model input: resize, scale to [0, 1], normalize, lay out."""

    size: tuple = (224, 224)
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    layout: Layout = Layout.NCHW
    grayscale: bool = False

    def __post_init__(self):
        if self.layout not in tuple(Layout):
            raise ConfigError(f"preprocess layout: expected one of {[v.value for v in Layout]}, got {self.layout!r}")
        object.__setattr__(self, "layout", Layout(self.layout))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"preprocess size: expected (height, width), got {self.size!r}")
        if any(s == 0 for s in self.std):
            raise ConfigError(f"preprocess std: must not contain 0, got {self.std!r}")

    def to_dict(self):
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "layout": self.layout, "grayscale": self.grayscale, "scale": "1/255"}


def load_data(spec, *, preprocess: ImagePreprocess | None = None, role: str = "data") -> Dataset:
    """Turn any supported data description into a Dataset (not yet bound or validated)."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, np.ndarray):
        return Dataset({SINGLE_INPUT_KEY: spec})
    if isinstance(spec, tuple) and len(spec) == 2:
        x, y = spec
        inputs = dict(x) if isinstance(x, dict) else {SINGLE_INPUT_KEY: np.asarray(x)}
        return Dataset(inputs, np.asarray(y))
    if isinstance(spec, dict):
        return _from_mapping(spec, "<dict>")
    if is_pyfile_ref(spec):
        return _from_callable(load_attr(spec), spec)
    if callable(spec):
        return _from_callable(spec, getattr(spec, "__name__", "<callable>"))
    if isinstance(spec, (str, Path)):
        return _from_path(Path(spec), preprocess, role)
    raise ConfigError(f"{role}: expected a path, FILE.py:CALLABLE, array, (x, y) or dict, "
                      f"got {type(spec).__name__}")


def _from_path(path: Path, preprocess, role) -> Dataset:
    if not path.exists():
        raise InputError(f"{role}: {path} does not exist")
    if path.is_dir():
        return _from_image_folder(path, preprocess or ImagePreprocess(), role)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _from_mapping(load_npz(path, role=role), str(path))
    if suffix == ".npy":
        return Dataset({SINGLE_INPUT_KEY: load_npy(path, role=role)}, origin=str(path))
    raise InputError(f"{role}: {path} has suffix {suffix!r}; expected .npz, .npy, an image folder "
                     "or FILE.py:CALLABLE")


def _from_mapping(mapping: dict, origin: str) -> Dataset:
    labels = None
    inputs = {}
    for key, value in mapping.items():
        if key in LABEL_KEYS:
            if labels is not None:
                raise InputError(f"{origin}: more than one label array ({LABEL_KEYS})")
            labels = np.asarray(value)
        else:
            inputs[key] = np.asarray(value)
    if not inputs:
        raise InputError(f"{origin}: no input arrays (expected 'x' or one array per input name)")
    return Dataset(inputs, labels, origin)


def _from_callable(fn, origin: str) -> Dataset:
    batches = fn() if callable(fn) else fn
    parts = [load_data(batch, role=origin) for batch in batches]
    if not parts:
        raise InputError(f"{origin} yielded no batches")
    keys = set(parts[0].inputs)
    if any(set(p.inputs) != keys for p in parts) or len({p.labels is None for p in parts}) > 1:
        raise InputError(f"{origin}: every batch must carry the same inputs (and labels, or none)")
    inputs = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
    labels = None if parts[0].labels is None else np.concatenate([p.labels for p in parts])
    return Dataset(inputs, labels, origin)


def _from_image_folder(root: Path, pre: ImagePreprocess, role: str) -> Dataset:
    """A flat folder (no labels) or one sub-folder per class (labels = sorted class index)."""
    try:
        from PIL import Image
    except ImportError as exc:
        from .errors import MissingDependencyError
        raise MissingDependencyError("image folders need Pillow: pip install 'edgekit[images]'") from exc
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{role}: no images ({sorted(IMAGE_SUFFIXES)}) in {root}")
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as img:  # Pillow keeps its decompression-bomb limit
                img = img.convert("L" if pre.grayscale else "RGB").resize(
                    (pre.size[1], pre.size[0]), Image.BILINEAR)
                images.append(np.asarray(img, dtype=np.float32) / 255.0)
        except (OSError, Image.DecompressionBombError) as exc:
            raise InputError(f"{role}: cannot read image {path}: {exc}") from exc
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., None]
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == Layout.NCHW:
        x = x.transpose(0, 3, 1, 2)
    labels = np.asarray([i for _, i in files], np.int64) if classes else None
    return Dataset({SINGLE_INPUT_KEY: np.ascontiguousarray(x, np.float32)}, labels, str(root),
                   tuple(classes) or None)


def bind(dataset: Dataset, specs, *, role: str) -> Dataset:
    """Rename ``x`` to the single input's name and check every input is present."""
    names = [s.name for s in specs]
    inputs = dict(dataset.inputs)
    if len(names) == 1 and set(inputs) == {SINGLE_INPUT_KEY} and names[0] != SINGLE_INPUT_KEY:
        inputs = {names[0]: inputs.pop(SINGLE_INPUT_KEY)}
    missing = [n for n in names if n not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        raise InputError(f"{role} ({dataset.origin}): the model expects inputs {names}, the data has "
                         f"{sorted(dataset.inputs)}" + (f"; missing {missing}" if missing else "")
                         + (f"; unexpected {extra}" if extra else ""))
    return Dataset(inputs, dataset.labels, dataset.origin, dataset.class_names)


def validate(dataset: Dataset, specs, *, role: str) -> Dataset:
    """Check shapes, dtypes, layout, counts and finiteness against the input specs.

    Returns the data set with float64 inputs narrowed to the float dtype the model
    takes (the one lossless-enough cast done silently); everything else that does
    not fit is an InputError saying what was expected and what came.
    """
    dataset = bind(dataset, specs, role=role)
    counts = {name: len(a) if a.ndim else 0 for name, a in dataset.inputs.items()}
    if len(set(counts.values())) != 1:
        raise InputError(f"{role} ({dataset.origin}): inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise InputError(f"{role} ({dataset.origin}) is empty: expected at least one sample")
    if dataset.labels is not None and len(dataset.labels) != count:
        raise InputError(f"{role} ({dataset.origin}): {len(dataset.labels)} labels for {count} samples")
    if dataset.labels is not None and dataset.labels.dtype.kind not in "iu":
        raise InputError(f"{role} ({dataset.origin}): labels must be integer class ids, "
                         f"got dtype {dataset.labels.dtype}")
    inputs = {}
    for spec in specs:
        array = dataset.inputs[spec.name]
        _check_shape(array, spec, role, dataset.origin)
        array = _check_dtype(array, spec, role, dataset.origin)
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array)
            if bad.any():
                first = int(np.argwhere(bad.reshape(count, -1).any(axis=1))[0, 0])
                raise InputError(f"{role} ({dataset.origin}): input {spec.name!r} holds {int(bad.sum())} "
                                 f"NaN/inf values (first in sample {first}); expected finite numbers")
        inputs[spec.name] = array
    return Dataset(inputs, dataset.labels, dataset.origin, dataset.class_names)


def _check_shape(array, spec, role, origin):
    expected = ekr.format_shape(spec.shape)
    layout = f" [{spec.layout.upper()}]" if spec.layout else ""
    if array.ndim != len(spec.shape):
        raise InputError(f"{role} ({origin}): input {spec.name!r} expected shape {expected}{layout} "
                         f"(rank {len(spec.shape)} with the batch axis), got {array.shape}")
    mismatched = [i for i, d in enumerate(spec.shape) if i and d is not None and array.shape[i] != d]
    if not mismatched:
        return
    hint = ""
    if array.ndim == 4 and spec.layout == Layout.NCHW and array.shape[1:] == (spec.shape[2], spec.shape[3], spec.shape[1]):
        hint = " — the data looks NHWC; transpose it with x.transpose(0, 3, 1, 2) (edgekit never transposes silently)"
    elif array.ndim == 4 and spec.layout == Layout.NHWC and array.shape[1:] == (spec.shape[3], spec.shape[1], spec.shape[2]):
        hint = " — the data looks NCHW; transpose it with x.transpose(0, 2, 3, 1) (edgekit never transposes silently)"
    raise InputError(f"{role} ({origin}): input {spec.name!r} expected shape {expected}{layout}, "
                     f"got {array.shape}{hint}")


def _check_dtype(array, spec, role, origin):
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    if array.dtype.kind == "f" and want.kind == "f":
        return array.astype(want)
    if array.dtype.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"{role} ({origin}): input {spec.name!r} values exceed {want}")
        return array.astype(want)
    raise InputError(f"{role} ({origin}): input {spec.name!r} expected dtype {want.name}, "
                     f"got {array.dtype.name}")


def check_calibration(dataset: Dataset, *, min_samples: int) -> list[str]:
    """Refuse calibration data that cannot calibrate; return warnings for weak data."""
    warnings = []
    count = len(dataset)
    for name, array in dataset.inputs.items():
        if array.dtype.kind == "f" and array.size and float(array.min()) == float(array.max()):
            raise CalibrationError(
                f"calibration input {name!r} is constant (every value is {float(array.min())}); "
                "expected real samples — a constant set gives a zero range and a useless int8 model")
    if count < min_samples:
        message = (f"only {count} calibration samples (minimum {min_samples}); int8 ranges may be "
                   "poorly estimated — give more samples or lower min_calibration_samples")
        log.warning(message)
        warnings.append(message)
    return warnings

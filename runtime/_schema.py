"""The schema of ``manifest.json``: every key the runtime, ``edgekit verify`` and ``edgekit info``
read, with what each must hold. ``MANIFEST(manifest, "")`` raises ModelLoadError naming the key
(``artifacts[2].inputs[0].shape``), what was expected and what came.

Each node is called as node(value, where) and raises ModelLoadError("WHERE: expected ..., got
...") when the value does not fit; ``expected`` is the text that says what fits. Objects accept
keys the schema does not name (written by newer exports or for people), unless ``closed``.
"""

import json

from ._errors import ModelLoadError
from ._tensor import Layout

MAX_MANIFEST_BYTES = 16 << 20  # an export writes a few KiB; the cap bounds memory and parse time
MAX_NESTING = 32               # an export nests 6 levels (artifacts[i].parity.per_output.NAME)
PRECISIONS = ("fp32", "fp16", "int8", "dynamic", "int16x8")  # edgekit.config.Precision; a test keeps them equal
DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64")
QUANTIZED_DTYPES = ("int8", "uint8", "int16")  # what _quant.quantize maps to


def _shown(value) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:6]}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


class _Is:
    """A value for which ``test`` holds."""

    def __init__(self, expected, test):
        self.expected = expected
        self.fits = test

    def __call__(self, value, where):
        if not self.fits(value):
            raise ModelLoadError(f"{where}: expected {self.expected}, got {_shown(value)}")


class _Nullable:
    """null, or what ``node`` accepts (whose own message names a wrong value inside it)."""

    def __init__(self, node):
        self.node = node
        self.expected = f"{node.expected} or null"

    def fits(self, value) -> bool:
        return value is None or self.node.fits(value)

    def __call__(self, value, where):
        if not self.fits(value):
            raise ModelLoadError(f"{where}: expected {self.expected}, got {_shown(value)}")
        if value is not None:
            self.node(value, where)


class _ListOf:
    def __init__(self, item, expected, *, lengths=None):
        self.item = item
        self.expected = expected
        self.lengths = lengths

    def fits(self, value) -> bool:
        return isinstance(value, list) and (self.lengths is None or len(value) in self.lengths)

    def __call__(self, value, where):
        if not self.fits(value):
            raise ModelLoadError(f"{where}: expected {self.expected}, got {_shown(value)}")
        for index, item in enumerate(value):
            self.item(item, _join(where, index))


class _Object:
    def __init__(self, expected, *, required=None, optional=None, closed=False, check=None):
        self.expected = expected
        self.required = required or {}
        self.optional = optional or {}
        self.closed = closed
        self.check = check

    def fits(self, value) -> bool:
        return isinstance(value, dict)

    def __call__(self, value, where):
        if not self.fits(value):
            raise ModelLoadError(f"{where}: expected {self.expected}, got {_shown(value)}")
        for key, node in self.required.items():
            if key not in value:
                raise ModelLoadError(f"{where or 'top level'}: the key {key!r} is missing (expected {node.expected})")
            node(value[key], _join(where, key))
        for key, node in self.optional.items():
            if key in value:
                node(value[key], _join(where, key))
        unknown = sorted(set(value) - set(self.required) - set(self.optional))
        if self.closed and unknown:
            raise ModelLoadError(f"{where}: unknown keys {unknown}; expected only "
                                 f"{sorted({**self.required, **self.optional})}")
        if self.check is not None:
            self.check(value, where)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return _is_number(value) and float("-inf") < value < float("inf")


def _is_sha256(value) -> bool:
    """A hex digest, or blank (which ``artifact_path`` refuses unless check_hash=False)."""
    digest = value.strip() if isinstance(value, str) else None
    return digest is not None and (digest == "" or (len(digest) == 64 and set(digest) <= _HEX_DIGITS))


def _is_name(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_file_name(value) -> bool:
    return _is_name(value) and "\0" not in value  # the OS refuses NUL in a path


def _quantization_fits(tensor, where):
    quant = tensor.get("quantization") or {}
    scale, zero_point = quant.get("scale"), quant.get("zero_point")
    if scale is None or scale == 0:
        return
    if zero_point is None:
        raise ModelLoadError(f"{where}.quantization: a scale > 0 needs an integer zero_point, got null")
    if tensor["dtype"] not in QUANTIZED_DTYPES:
        raise ModelLoadError(f"{where}.quantization: a quantized tensor must have dtype "
                             f"{' or '.join(QUANTIZED_DTYPES)}, got {tensor['dtype']!r}")


OUTPUT_KINDS = ("classification", "regression", "embedding", "detection")  # edgekit.config.OUTPUT_KINDS


def _kinds_known(kinds, where):
    for name, kind in kinds.items():
        if kind not in OUTPUT_KINDS:
            raise ModelLoadError(f"{_join(where, name)}: expected one of {list(OUTPUT_KINDS)}, got {_shown(kind)}")


def _each(mapping, where, node):
    for key, value in mapping.items():
        node(value, _join(where, key))


def _ids_unique(manifest, where):
    seen = {}
    for index, entry in enumerate(manifest["artifacts"]):
        if entry["id"] in seen:
            raise ModelLoadError(f"artifacts[{index}].id: {entry['id']!r} is already the id of "
                                 f"artifacts[{seen[entry['id']]}]; expected unique ids")
        seen[entry["id"]] = index


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_NON_EMPTY = range(1, MAX_MANIFEST_BYTES)  # a list cannot hold more items than its file has bytes
_TEXT = _Is("a string", lambda v: isinstance(v, str))
_NAME = _Is("a non-empty string", _is_name)
_FILE = _Is("a file name inside the bundle", _is_file_name)
_COUNT = _Is("an integer >= 0", lambda v: _is_int(v) and v >= 0)
_NUMBER = _Is("a number", _is_number)
_FLAG = _Is("true or false", lambda v: isinstance(v, bool))
_SHA256 = _Is("a sha256 hex digest (64 hex digits)", _is_sha256)
_MAPPING = _Object("an object")

_QUANTIZATION = _Object("an object with scale and zero_point", optional={
    "scale": _Nullable(_Is("a finite number >= 0", lambda v: _is_finite(v) and v >= 0)),
    "zero_point": _Nullable(_Is("an integer within int32", lambda v: _is_int(v) and -2**31 <= v < 2**31)),
})
_LAYOUT = _Is(f"one of {[layout.value for layout in Layout]}", lambda v: v in tuple(Layout))
_TENSOR = _Object("a tensor description, an object with name, shape and dtype", required={
    "name": _NAME,
    "shape": _ListOf(_Nullable(_COUNT), "a list of integers or null (one per axis)", lengths=range(65)),
    "dtype": _Is(f"one of {list(DTYPES)}", lambda v: v in DTYPES),
}, optional={"layout": _Nullable(_LAYOUT), "quantization": _Nullable(_QUANTIZATION), "source_name": _Nullable(_TEXT)},
    check=_quantization_fits)
_TENSORS = _ListOf(_TENSOR, "a list of tensor descriptions")

_REFERENCE = _Object("the reference outputs' provenance, an object with 'file'", required={"file": _FILE}, optional={
    "sha256": _SHA256, "eval_sha256": _SHA256, "num_samples": _COUNT,
    "outputs": _ListOf(_NAME, "a non-empty list of output names", lengths=_NON_EMPTY),
    "framework": _TEXT, "device": _TEXT, "device_name": _TEXT, "versions": _MAPPING,
})
_FIGURES = _Object("an object from figure name to a number", check=lambda value, where: _each(value, where, _NUMBER))
_LIMITS = {name: _Nullable(_NUMBER) for name in ("min_cosine", "max_accuracy_drop", "min_top1_agreement",
                                                  "max_abs_error", "min_sample_cosine")}
_TOLERANCE = _Object("the tolerance it was judged by, an object", optional={
    **_LIMITS, "per_output": _Object("an object from output name to its limits", check=lambda value, where: _each(
        value, where, _Object("an object of limits", optional=_LIMITS)))})
_COMPANION = _Object("a companion file, an object with 'file' and 'sha256'", required={"file": _FILE},
                     optional={"sha256": _SHA256, "size_bytes": _COUNT})
_ARTIFACT = _Object("an artifact entry, an object", required={
    "id": _NAME, "format": _NAME, "file": _FILE, "inputs": _TENSORS, "outputs": _TENSORS,
    "precision": _Is(f"one of {list(PRECISIONS)}", lambda v: v in PRECISIONS),
}, optional={
    "sha256": _SHA256,
    "companions": _ListOf(_COMPANION, "a list of companion files"),
    "scheme": _TEXT,
    "latency_ms": _Nullable(_NUMBER),
    "size_bytes": _COUNT,
    "gzip_bytes": _Nullable(_COUNT),
    "contents": _Object("an object", optional={"sparsity": _Nullable(_NUMBER)}),
    "parity": _Object("an object", optional={"passed": _FLAG, "accuracy": _NUMBER, "cosine": _NUMBER,
                                             "tolerance": _TOLERANCE}),
    "reference": _REFERENCE,
    "verified_on": _ListOf(_Object("a verification record, an object with 'profile', 'how' and 'passed'",
                                   required={"profile": _NAME, "how": _TEXT, "passed": _FLAG}),
                           "a list of verification records"),
    "not_verified": _Object("an object from profile name to the reason it was not verified"),
    "golden": _Object("an object from output name to its figures on the golden samples",
                      check=lambda value, where: _each(value, where, _FIGURES)),
})
_PREPROCESSING = _Object("the image preprocessing, an object", closed=True, optional={
    "size": _ListOf(_Is("an integer >= 1", lambda v: _is_int(v) and v >= 1), "[height, width]", lengths=(2,)),
    "mean": _ListOf(_Is("a finite number", _is_finite),
                    "a list of 1 or 3 numbers", lengths=(1, 3)),
    "std": _ListOf(_Is("a finite number other than 0", lambda v: _is_finite(v) and v != 0),
                   "a list of 1 or 3 numbers", lengths=(1, 3)),
    "layout": _LAYOUT,
    "grayscale": _FLAG,
    "scale": _TEXT,
})
MANIFEST = _Object("an edgekit manifest, a JSON object", required={
    "artifacts": _ListOf(_ARTIFACT, "a non-empty list of artifact entries", lengths=_NON_EMPTY),
    "inputs": _TENSORS,
    "reference": _REFERENCE,
}, optional={
    "default_artifact": _Nullable(_NAME),
    "outputs": _ListOf(_TEXT, "a list of output names"),
    "preprocessing": _Nullable(_PREPROCESSING),
    "labels": _Nullable(_ListOf(_TEXT, "a list of class names")),
    "source": _MAPPING,
    "output_kinds": _Object("an object from output name to its kind", check=lambda value, where: _kinds_known(
        value, where)),
    "edgekit_version": _TEXT,
    "golden": _Nullable(_Object("the golden samples, an object with file, sha256, samples and references",
                                required={"file": _FILE, "sha256": _SHA256, "samples": _COUNT,
                                          "references": _ListOf(_FILE, "a list of reference file names")})),
    "target_cpu": _Object("the target CPU profiles, an object", optional={
        "requested": _ListOf(_TEXT, "a list of profile names"),
        "not_verified": _Object("an object from profile name to the reason it was not verified")}),
}, check=_ids_unique)

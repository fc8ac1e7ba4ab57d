"""Reading a bundle's ``manifest.json``.

The toolkit writes the manifest; this module is the one place that reads it, so both agree on
the schema through ``SCHEMA_VERSION`` and the schema below. A bundle may come from anyone: the
manifest is size-capped, parsed with a nesting limit, and checked on load against the schema of
every key the runtime, ``edgekit verify`` and ``edgekit info`` read. A violation is a
ModelLoadError naming the key (``artifacts[2].inputs[0].shape``), what was expected and what came.
A file of the bundle is opened only when it is a regular file inside the bundle (symlinks
resolved) and, unless ``check_hash=False``, matches the sha256 the manifest records for it.
"""

import hashlib
import json
import os
import stat
from pathlib import Path

from ._errors import ModelLoadError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # an export writes a few KiB; the cap bounds memory and parse time
MAX_NESTING = 32               # an export nests 6 levels (artifacts[i].parity.per_output.NAME)
PRECISIONS = ("fp32", "fp16", "int8", "dynamic", "int16x8")  # edgekit.config.Precision; a test keeps them equal
DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64")
QUANTIZED_DTYPES = ("int8", "uint8", "int16")  # what _quant.quantize maps to
# Files an engine opens beside the one it is given, whatever the manifest lists: OpenVINO reads
# <stem>.bin next to an IR's .xml. Each must be a listed companion, checked like the main file.
OPENED_BESIDE = {".xml": (".bin",)}


def sha256_file(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with _open_regular(path) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not os.path.lexists(path):
        raise ModelLoadError(f"{bundle_dir} is not an edgekit bundle: no {MANIFEST_NAME} in it")
    manifest = _parse(path, _read_capped(_bundle_file(bundle_dir, MANIFEST_NAME, "the bundle's manifest"),
                                         MAX_MANIFEST_BYTES))
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path}: expected a JSON object (an edgekit manifest), got {_shown(manifest)}")
    version = manifest.get("schema_version")
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise ModelLoadError(
            f"{path} has schema_version {_shown(version)}; this runtime reads version {SCHEMA_VERSION}. "
            "Re-export the bundle or install the matching edgekit version.")
    try:
        _check_nesting(manifest)
        _MANIFEST(manifest, "")
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc} (a damaged or hand-edited manifest: re-export the bundle)") from exc
    return manifest


def _read_capped(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelLoadError(f"{path} is {size} bytes; expected at most {limit} (an export writes a few KiB)")
        with _open_regular(path) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if len(data) > limit:
        raise ModelLoadError(f"{path} grew past {limit} bytes while it was read")
    return data


def _parse(path: Path, data: bytes):
    try:
        return json.loads(data.decode("utf-8"), parse_int=_parse_int)
    except RecursionError as exc:
        raise ModelLoadError(f"{path} nests deeper than a JSON parser can follow; "
                             f"expected at most {MAX_NESTING} levels") from exc
    except ValueError as exc:  # bad UTF-8, bad JSON, or an integer past 64 bits (_parse_int)
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc


def _parse_int(text: str) -> int:
    # Checked before int() converts it: past 4300 digits Python refuses, and far sooner the number
    # means nothing to a manifest (sizes, counts and ids fit in 64 bits).
    digits = len(text.lstrip("-"))
    if digits > 19 or not -2**63 <= int(text) < 2**63:
        raise ValueError(f"an integer of {digits} digits ({text[:12]}...); expected integers that fit in 64 bits")
    return int(text)


def _check_nesting(manifest):
    stack = [(manifest, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_NESTING:
            raise ModelLoadError(f"{where}: values nest {depth} levels deep; expected at most {MAX_NESTING}")
        children = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend((child, depth + 1, _join(where, key)) for key, child in children
                     if isinstance(child, (dict, list)))


def select_artifact(manifest: dict, *, artifact=None, precision=None, fmt=None) -> dict:
    """Pick one artifact entry: by id, else by precision/format (the bundle's default when it is
    among the candidates, else the fastest measured that takes the source's layout), else the
    bundle's default."""
    entries = manifest["artifacts"]
    if artifact is not None:
        found = [e for e in entries if e.get("id") == artifact]
        if not found:
            raise ModelLoadError(
                f"no artifact {artifact!r} in this bundle; it holds {[e.get('id') for e in entries]}")
        return found[0]
    candidates = [e for e in entries
                  if (precision is None or e.get("precision") == precision)
                  and (fmt is None or e.get("format") == fmt)]
    if not candidates:
        have = [(e.get("format"), e.get("precision")) for e in entries]
        raise ModelLoadError(
            f"no artifact with format={fmt!r} precision={precision!r} in this bundle; it holds {have}")
    default = manifest.get("default_artifact")
    for entry in candidates:
        if entry.get("id") == default:
            return entry
    # Otherwise the fastest measured at export time (several formats can hold one precision),
    # among those fed in the source model's own layout (the data a caller has) where any are.
    source_layouts = [t.get("layout") for t in manifest.get("inputs", [])]
    same_layout = [e for e in candidates if [t.get("layout") for t in e.get("inputs", [])] == source_layouts]
    candidates = same_layout or candidates
    timed = [e for e in candidates if e.get("latency_ms") is not None]
    return min(timed, key=lambda e: e["latency_ms"]) if timed else candidates[0]


def artifact_path(bundle_dir: Path, entry: dict, *, check_hash: bool) -> Path:
    """The artifact's main file, after checking that it, its companions and every file its engine
    opens beside it (an IR's ``.bin``, which must be a listed companion) are regular files inside
    the bundle and, unless ``check_hash=False``, match their sha256."""
    owner = f"artifact {entry.get('id')!r}"
    main = _checked_file(bundle_dir, owner, entry["file"], entry.get("sha256"), check_hash)
    companions = {_checked_file(bundle_dir, owner, c["file"], c.get("sha256"), check_hash)
                  for c in entry.get("companions", [])}
    for suffix in OPENED_BESIDE.get(main.suffix.lower(), ()):
        beside = main.with_suffix(suffix)
        if _resolved(beside) not in companions:
            raise ModelLoadError(
                f"{owner}: its engine also reads {beside.name} beside {main.name}, but no companion listed in "
                f"the manifest is that file (it resolves to {_resolved(beside)}); expected a 'companions' entry "
                f"for {beside.name} with its sha256 — re-export the bundle")
    return main


def _bundle_file(bundle_dir, name: str, owner: str) -> Path:
    """``name`` resolved (symlinks followed), after checking it is a regular file inside the bundle."""
    root = _resolved(Path(bundle_dir))
    path = _resolved(root / name)
    if Path(name).is_absolute() or root not in path.parents:
        raise ModelLoadError(f"{owner}: file {name!r} points outside the bundle {bundle_dir} "
                             "(expected a file inside the bundle folder)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{owner}: file {path} is missing") from exc
    except OSError as exc:
        raise ModelLoadError(f"{owner}: cannot read {path}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise ModelLoadError(f"{owner}: {path} is not a regular file ({_file_kind(mode)}); "
                             "expected the file the manifest names")
    return path


def _checked_file(bundle_dir, owner, name, sha256, check_hash) -> Path:
    path = _bundle_file(bundle_dir, name, owner)
    if not check_hash:
        return path
    if not (sha256 or "").strip():
        raise ModelLoadError(
            f"{owner}: the manifest records no sha256 for {name!r}, so the file cannot be checked; "
            "re-export the bundle, or load with check_hash=False to skip the check")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelLoadError(f"{owner}: cannot read {path}: {exc}") from exc
    if actual != sha256.strip().lower():
        raise ModelLoadError(
            f"{owner}: {path.name} does not match the sha256 in the manifest "
            "(corrupted or modified after export)")
    return path


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise ModelLoadError(f"cannot resolve {path}: {exc}") from exc


def _open_regular(path):
    """Open ``path`` for reading if it is a regular file. O_NONBLOCK keeps a FIFO swapped in after
    a check from blocking the open, and fstat checks what was actually opened."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ModelLoadError(f"{path} is not a regular file ({_file_kind(mode)})")
    return os.fdopen(fd, "rb")


def _file_kind(mode) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


# --- the schema --------------------------------------------------------------------------------
# Each node is called as node(value, where) and raises ModelLoadError("WHERE: expected ..., got
# ...") when the value does not fit; ``expected`` is the text that says what fits. Objects accept
# keys the schema does not name (written by newer exports or for people), unless ``closed``.

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
_TENSOR = _Object("a tensor description, an object with name, shape and dtype", required={
    "name": _NAME,
    "shape": _ListOf(_Nullable(_COUNT), "a list of integers or null (one per axis)", lengths=range(65)),
    "dtype": _Is(f"one of {list(DTYPES)}", lambda v: v in DTYPES),
}, optional={"layout": _Nullable(_TEXT), "quantization": _Nullable(_QUANTIZATION), "source_name": _Nullable(_TEXT)},
    check=_quantization_fits)
_TENSORS = _ListOf(_TENSOR, "a list of tensor descriptions")

_REFERENCE = _Object("the reference outputs' provenance, an object with 'file'", required={"file": _FILE}, optional={
    "sha256": _SHA256, "eval_sha256": _SHA256, "num_samples": _COUNT,
    "outputs": _ListOf(_NAME, "a non-empty list of output names", lengths=_NON_EMPTY),
    "framework": _TEXT, "device": _TEXT, "device_name": _TEXT, "versions": _MAPPING,
})
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
    "parity": _Object("an object", optional={"passed": _FLAG, "accuracy": _NUMBER, "cosine": _NUMBER}),
    "reference": _REFERENCE,
})
_PREPROCESSING = _Object("the image preprocessing, an object", closed=True, optional={
    "size": _ListOf(_Is("an integer >= 1", lambda v: _is_int(v) and v >= 1), "[height, width]", lengths=(2,)),
    "mean": _ListOf(_Is("a finite number", _is_finite),
                    "a list of 1 or 3 numbers", lengths=(1, 3)),
    "std": _ListOf(_Is("a finite number other than 0", lambda v: _is_finite(v) and v != 0),
                   "a list of 1 or 3 numbers", lengths=(1, 3)),
    "layout": _Is("'nchw' or 'nhwc'", lambda v: v in ("nchw", "nhwc")),
    "grayscale": _FLAG,
    "scale": _TEXT,
})
_MANIFEST = _Object("an edgekit manifest, a JSON object", required={
    "artifacts": _ListOf(_ARTIFACT, "a non-empty list of artifact entries", lengths=_NON_EMPTY),
    "inputs": _TENSORS,
    "reference": _REFERENCE,
}, optional={
    "default_artifact": _Nullable(_NAME),
    "outputs": _ListOf(_TEXT, "a list of output names"),
    "preprocessing": _Nullable(_PREPROCESSING),
    "labels": _Nullable(_ListOf(_TEXT, "a list of class names")),
    "source": _MAPPING,
    "edgekit_version": _TEXT,
}, check=_ids_unique)

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
from ._records import SCHEMA_VERSION, ArtifactEntry, Manifest
from ._schema import MAX_MANIFEST_BYTES, MAX_NESTING, _join

MANIFEST_NAME = "manifest.json"
# Files an engine opens beside the one it is given, whatever the manifest lists: OpenVINO reads
# <stem>.bin next to an IR's .xml. Each must be a listed companion, checked like the main file.
OPENED_BESIDE = {".xml": (".bin",)}


def sha256_file(file, chunk=1 << 20) -> str:
    """sha256 of a regular file: a path, or a binary file already open (read from where it is)."""
    if hasattr(file, "read"):
        digest = hashlib.sha256()
        while block := file.read(chunk):
            digest.update(block)
        return digest.hexdigest()
    with open_regular(file) as fh:
        return sha256_file(fh, chunk)


def read_manifest(bundle_dir: Path) -> Manifest:
    """The bundle's manifest, checked (``Manifest.from_dict``)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not os.path.lexists(path):
        raise ModelLoadError(f"{bundle_dir} is not an edgekit bundle: no {MANIFEST_NAME} in it")
    data = _parse(path, _read_capped(bundle_file(bundle_dir, MANIFEST_NAME, "the bundle's manifest"),
                                     MAX_MANIFEST_BYTES))
    if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION:
        try:
            _check_nesting(data)
            return Manifest.from_dict(data, str(path))
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc} (a damaged or hand-edited manifest: re-export the bundle)") from exc
    return Manifest.from_dict(data, str(path))  # (its error names the wrong type or version)


def _read_capped(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelLoadError(f"{path} is {size} bytes; expected at most {limit} (an export writes a few KiB)")
        with open_regular(path) as fh:
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


def select_artifact(manifest: Manifest, *, artifact=None, precision=None, fmt=None, cpu=None) -> ArtifactEntry:
    """Pick one artifact entry: by id, else by precision/format (the bundle's default when it is
    among the candidates, else the fastest measured that takes the source's layout), else the
    bundle's default. With ``cpu`` (a profile name), artifacts verified on that profile are
    preferred over those that were not."""
    if artifact is not None:
        return manifest.artifact(artifact)
    candidates = [e for e in manifest.artifacts
                  if (precision is None or e.precision == precision) and (fmt is None or e.format == fmt)]
    if not candidates:
        have = [(e.format, e.precision) for e in manifest.artifacts]
        raise ModelLoadError(
            f"no artifact with format={fmt!r} precision={precision!r} in this bundle; it holds {have}")
    verified_here = [e for e in candidates if cpu is not None and cpu in e.verified_profiles]
    candidates = verified_here or candidates
    for entry in candidates:
        if entry.id == manifest.default_artifact:
            return entry
    # Otherwise by the rule the export chose its default with (several formats can hold one precision).
    return preferred(candidates, manifest.source_layouts)


def preferred(entries: list, source_layouts=None, margin=1.10) -> ArtifactEntry:
    """The one artifact-choice rule (the export's default, and ``load``'s pick among candidates):
    among those fed in the source model's own layout where any are (the data a caller has), those
    within ``margin`` of the fastest measured latency (noise on a tiny model must not flip the
    choice), the smallest."""
    if source_layouts is not None:
        entries = [e for e in entries if [t.layout for t in e.inputs] == list(source_layouts)] or entries
    timed = [e for e in entries if e.latency_ms is not None]
    if timed:
        fastest = min(e.latency_ms for e in timed)
        entries = [e for e in timed if e.latency_ms <= fastest * margin]
    return min(entries, key=lambda e: e.size_bytes or 0)


def artifact_path(bundle_dir: Path, entry: ArtifactEntry, *, check_hash: bool) -> Path:
    """The artifact's main file, after checking that it, its companions and every file its engine
    opens beside it (an IR's ``.bin``, which must be a listed companion) are regular files inside
    the bundle and, unless ``check_hash=False``, match their sha256."""
    owner = f"artifact {entry.id!r}"
    main = _checked_file(bundle_dir, owner, entry.file, entry.sha256, check_hash)
    companions = {_checked_file(bundle_dir, owner, c.file, c.sha256, check_hash) for c in entry.companions}
    for suffix in OPENED_BESIDE.get(main.suffix.lower(), ()):
        beside = main.with_suffix(suffix)
        if _resolved(beside) not in companions:
            raise ModelLoadError(
                f"{owner}: its engine also reads {beside.name} beside {main.name}, but no companion listed in "
                f"the manifest is that file (it resolves to {_resolved(beside)}); expected a 'companions' entry "
                f"for {beside.name} with its sha256 — re-export the bundle")
    return main


def bundle_file(bundle_dir, name: str, owner: str) -> Path:
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
    path = bundle_file(bundle_dir, name, owner)
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


def open_regular(path):
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

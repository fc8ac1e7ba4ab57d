"""Reading a bundle's ``manifest.json``.

The toolkit writes the manifest; this module is the one place that reads it,
so both agree on the schema through ``SCHEMA_VERSION`` and the key names here.
"""

import hashlib
import json
from pathlib import Path

from ._errors import ModelLoadError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelLoadError(f"{bundle_dir} is not an edgekit bundle: no {MANIFEST_NAME} in it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise ModelLoadError(f"{path} has no 'artifacts' list; is it an edgekit manifest?")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelLoadError(
            f"{path} has schema_version {version!r}; this runtime reads version {SCHEMA_VERSION}. "
            "Re-export the bundle or install the matching edgekit version.")
    return manifest


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
    """The artifact's main file, after checking it and its companion files (an IR's ``.bin``)
    lie inside the bundle, exist, and match their sha256."""
    files = [{"file": entry.get("file", ""), "sha256": entry.get("sha256")}] + list(entry.get("companions", []))
    paths = [_checked_file(bundle_dir, entry, f.get("file", ""), f.get("sha256"), check_hash) for f in files]
    return paths[0]


def _checked_file(bundle_dir, entry, name, sha256, check_hash) -> Path:
    path = (Path(bundle_dir) / name).resolve()
    if Path(name).is_absolute() or Path(bundle_dir).resolve() not in path.parents:
        raise ModelLoadError(f"artifact file {name!r} points outside the bundle {bundle_dir}")
    if not path.is_file():
        raise ModelLoadError(f"artifact {entry.get('id')!r}: file {path} is missing")
    if check_hash and sha256 and sha256_file(path) != sha256:
        raise ModelLoadError(
            f"artifact {entry.get('id')!r}: {path.name} does not match the sha256 in the manifest "
            "(corrupted or modified after export)")
    return path

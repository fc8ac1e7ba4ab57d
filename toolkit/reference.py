"""Reference outputs: the source model run in its own framework on the eval data.

They are stored in the bundle as ``reference.npz`` (plain arrays, one per
output, ``allow_pickle=False``) with their provenance and the file's sha256 in
the manifest, so that ``edgekit verify`` on a machine without the framework
still compares against the reference computed at export time (on the GPU where
there was one).

A bundle may come from anyone, so loading checks what the gate will trust: the
file is a regular file inside the bundle (a symlink out of it is refused), it
matches the sha256 in the manifest, it passes the size checks of ``edgekit._npz``,
and every value is finite (a NaN reference would make every comparison
meaningless). Bundles exported before the sha256 was recorded load with a
logged warning: the hash sits in the same unsigned manifest, so refusing them
would protect against corruption only, at the cost of a re-export.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.runtime import sha256_file

from ._npz import open_array_file, read_npz
from .errors import InputError

log = logging.getLogger("edgekit.reference")

REFERENCE_NAME = "reference.npz"
_PREFIX = "output:"
_ROLE = "reference outputs"


@dataclass(frozen=True)
class ReferenceOutputs:
    outputs: dict                 # output name -> array over the eval set
    framework: str
    device: str                   # "cpu" or "cuda"
    device_name: str = ""
    versions: dict = field(default_factory=dict)
    eval_sha256: str = ""
    num_samples: int = 0
    file: str = REFERENCE_NAME    # a bundle can hold several (the QAT model's: reference.qat.npz)

    def provenance(self) -> dict:
        return {"file": self.file, "framework": self.framework, "device": self.device,
                "device_name": self.device_name, "versions": self.versions,
                "eval_sha256": self.eval_sha256, "num_samples": self.num_samples,
                "outputs": list(self.outputs)}

    def save(self, directory: Path) -> str:
        """Write ``self.file`` into ``directory``; return its sha256, for the manifest."""
        path = Path(directory) / self.file
        with open(path, "wb") as fh:
            np.savez(fh, **{_PREFIX + k: v for k, v in self.outputs.items()})
        return sha256_file(path)

    @classmethod
    def load(cls, directory: Path, provenance: dict) -> "ReferenceOutputs":
        path = _inside_bundle(directory, provenance.get("file", REFERENCE_NAME))
        with open_array_file(path, role=_ROLE) as fh:
            _check_sha256(fh, path, provenance.get("sha256"))
            arrays = read_npz(fh, path, role=_ROLE)
        outputs = {k[len(_PREFIX):]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
        order = provenance.get("outputs") or list(outputs)
        if not outputs or sorted(order) != sorted(outputs):
            raise InputError(f"{path} holds outputs {sorted(outputs)}, the manifest names {order}; "
                             "expected the same non-empty set — re-export the bundle")
        for name, array in outputs.items():
            _check_values(path, name, array)
        return cls({k: outputs[k] for k in order}, provenance.get("framework", "?"),
                   provenance.get("device", "?"), provenance.get("device_name", ""),
                   provenance.get("versions", {}), provenance.get("eval_sha256", ""),
                   provenance.get("num_samples", 0), path.name)


def _inside_bundle(directory, name) -> Path:
    """The runtime's rule for any file of a bundle: a regular file inside it, symlinks resolved."""
    from edgekit.runtime import ModelLoadError
    from edgekit.runtime._manifest import bundle_file
    try:
        return bundle_file(directory, name, "the reference outputs")
    except ModelLoadError as exc:
        raise InputError(str(exc)) from exc


def _check_sha256(fh, path, expected):
    if not (expected or "").strip():
        log.warning("%s: the manifest records no sha256 for it (a bundle exported before edgekit recorded "
                    "one), so it is used unchecked; re-export the bundle to record it", path)
        return
    if sha256_file(fh) != expected.strip().lower():
        raise InputError(f"{path.name} does not match the sha256 in the manifest (corrupted or modified "
                         "after export); re-export the bundle")
    fh.seek(0)


def _check_values(path, name, array):
    if array.dtype.kind not in "biuf" or array.ndim == 0:
        raise InputError(f"{path}: output {name!r} is a {array.dtype} array of shape {array.shape}; expected "
                         "real numbers with one row per eval sample — re-export the bundle")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        count = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{path}: output {name!r} holds {count} NaN/inf values; a reference must be finite "
                         "(against NaN every comparison is meaningless) — re-export the bundle")

"""Reference outputs: the source model run in its own framework on the eval data.

They are stored in the bundle as ``reference.npz`` (plain arrays, one per
output, ``allow_pickle=False``) with their provenance in the manifest, so that
``edgekit verify`` on a machine without the framework still compares against
the reference computed at export time (on the GPU where there was one).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

REFERENCE_NAME = "reference.npz"
_PREFIX = "output:"


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

    def save(self, directory: Path) -> Path:
        path = Path(directory) / self.file
        with open(path, "wb") as fh:
            np.savez(fh, **{_PREFIX + k: v for k, v in self.outputs.items()})
        return path

    @classmethod
    def load(cls, directory: Path, provenance: dict) -> "ReferenceOutputs":
        name = provenance.get("file", REFERENCE_NAME)
        if Path(name).name != name or name in ("", ".", ".."):
            raise InputError(f"reference file {name!r}: expected a file name inside the bundle")
        path = Path(directory) / name
        try:
            with np.load(path, allow_pickle=False) as archive:
                outputs = {k[len(_PREFIX):]: archive[k] for k in archive.files if k.startswith(_PREFIX)}
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read the bundle's reference outputs {path}: {exc}") from None
        order = provenance.get("outputs") or list(outputs)
        if sorted(order) != sorted(outputs):
            raise InputError(f"{path} holds outputs {sorted(outputs)}, the manifest names {order}")
        return cls({k: outputs[k] for k in order}, provenance.get("framework", "?"),
                   provenance.get("device", "?"), provenance.get("device_name", ""),
                   provenance.get("versions", {}), provenance.get("eval_sha256", ""),
                   provenance.get("num_samples", 0), path.name)

"""The bundle's manifest as typed, frozen records: ``Manifest``, ``ArtifactEntry``, ``ParityRecord``.

``Manifest.from_dict`` is the one way in: it checks the dict against the schema (``_schema``: every
key the runtime, ``edgekit verify`` and ``edgekit info`` read), the schema version and that every
file named stays inside the bundle, and raises ModelLoadError naming the key, what was expected and
what came. The export checks the manifest it writes through it, so nothing can be written that a device
would refuse to read. Keys the records do not name (the
export's provenance: seed, data hashes, environment, compression rows) are kept in ``extra`` and
written back unchanged. The mapping fields are read-only views.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import PurePosixPath, PureWindowsPath
from types import MappingProxyType

from ._errors import ModelLoadError
from ._schema import MANIFEST, _is_int, _shown
from ._tensor import TensorInfo

SCHEMA_VERSION = 1


def _frozen(value):
    """Nested dicts as read-only views, lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


_EMPTY = MappingProxyType({})


def _empty():
    return field(default_factory=lambda: _EMPTY)


def _split(data: dict, cls) -> tuple[dict, dict]:
    """(the keys ``cls`` names, the rest)."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _inside_bundle(name: str, where: str):
    """A file name the manifest gives must stay in the bundle folder: relative, no '..' part."""
    for flavour in (PurePosixPath(name), PureWindowsPath(name)):
        if flavour.is_absolute() or flavour.anchor or ".." in flavour.parts:
            raise ModelLoadError(f"{where}: {name!r} points outside the bundle; expected a file name inside it")


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    file: str
    sha256: str = ""
    size_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class Verification:
    """Where an artifact's parity was measured: a CPU profile, how (natively or emulated), the verdict."""
    profile: str
    how: str
    passed: bool


@dataclass(frozen=True, kw_only=True)
class ParityRecord:
    """An artifact's verdict at export: ``passed`` (None: not judged), its failures, the headline
    figures, and ``extra`` (per-output and per-profile figures, the tolerance it was judged by)."""
    passed: bool | None = None
    failures: tuple = ()
    cosine: float | None = None
    accuracy: float | None = None
    tolerance: MappingProxyType | None = None
    extra: MappingProxyType = _empty()

    @classmethod
    def from_dict(cls, data: dict) -> "ParityRecord":
        known, rest = _split(data, cls)
        return cls(**{k: _frozen(v) for k, v in known.items()}, extra=_frozen(rest))

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True, kw_only=True)
class ArtifactEntry:
    id: str
    format: str
    precision: str
    file: str
    inputs: tuple
    outputs: tuple
    sha256: str = ""
    scheme: str = ""
    companions: tuple = ()
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    latency_ms: float | None = None
    parity: ParityRecord | None = None
    reference: MappingProxyType | None = None      # the QAT model's own reference outputs, for its int8
    verified_on: tuple | None = None                # Verification per profile; None: not recorded
    not_verified: MappingProxyType = _empty()
    golden: MappingProxyType | None = None          # output -> what the export measured on the golden samples
    contents: MappingProxyType = _empty()  # what the file holds (op counts, dtypes, sparsity)
    quantization: MappingProxyType = _empty()  # the recipe applied and searched
    extra: MappingProxyType = _empty()

    @classmethod
    def from_dict(cls, data: dict) -> "ArtifactEntry":
        known, rest = _split(data, cls)
        values = {k: _frozen(v) for k, v in known.items()}
        values["inputs"] = tuple(TensorInfo.from_dict(t) for t in data["inputs"])
        values["outputs"] = tuple(TensorInfo.from_dict(t) for t in data["outputs"])
        values["companions"] = tuple(FileRecord(**c) for c in data.get("companions", ()))
        if data.get("parity") is not None:
            values["parity"] = ParityRecord.from_dict(data["parity"])
        if data.get("verified_on") is not None:
            values["verified_on"] = tuple(Verification(**{k: v[k] for k in ("profile", "how", "passed")})
                                          for v in data["verified_on"])
        return cls(**values, extra=_frozen(rest))

    @property
    def verified_profiles(self) -> list:
        """The CPU profiles it passed parity on (``[]`` for bundles that do not record them)."""
        return [v.profile for v in self.verified_on or () if v.passed]

    @property
    def files(self) -> list:
        """Its main file, then its companions."""
        return [self.file, *(c.file for c in self.companions)]

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    artifacts: tuple
    inputs: tuple
    reference: MappingProxyType
    schema_version: int = SCHEMA_VERSION
    outputs: tuple = ()
    default_artifact: str | None = None
    preprocessing: MappingProxyType | None = None
    labels: tuple | None = None
    source: MappingProxyType = _empty()
    output_kinds: MappingProxyType = _empty()
    target_cpu: MappingProxyType = _empty()
    golden: MappingProxyType | None = None          # the golden samples' file (``_selftest``)
    edgekit_version: str = ""
    extra: MappingProxyType = _empty()

    @classmethod
    def from_dict(cls, data, where: str = "the manifest") -> "Manifest":
        """Check ``data`` (a parsed manifest.json) and make the records; ModelLoadError naming the
        key when it does not fit."""
        if not isinstance(data, dict):
            raise ModelLoadError(f"{where}: expected a JSON object (an edgekit manifest), got {_shown(data)}")
        version = data.get("schema_version")
        if not _is_int(version) or version != SCHEMA_VERSION:
            raise ModelLoadError(
                f"{where} has schema_version {_shown(version)}; this runtime reads version {SCHEMA_VERSION}. "
                "Re-export the bundle or install the matching edgekit version.")
        MANIFEST(data, "")
        for index, entry in enumerate(data["artifacts"]):
            for name in [entry["file"], *(c["file"] for c in entry.get("companions", ()))]:
                _inside_bundle(name, f"artifacts[{index}]")
        for key, provenance in [("reference", data["reference"])] + [
                (f"artifacts[{i}].reference", e["reference"]) for i, e in enumerate(data["artifacts"]) if "reference" in e]:
            _inside_bundle(provenance["file"], key)
        if data.get("golden"):
            _inside_bundle(data["golden"]["file"], "golden")
        known, rest = _split(data, cls)
        values = {k: _frozen(v) for k, v in known.items()}
        values["artifacts"] = tuple(ArtifactEntry.from_dict(a) for a in data["artifacts"])
        values["inputs"] = tuple(TensorInfo.from_dict(t) for t in data["inputs"])
        return cls(**values, extra=_frozen(rest))

    def artifact(self, artifact_id: str) -> ArtifactEntry:
        for entry in self.artifacts:
            if entry.id == artifact_id:
                return entry
        raise ModelLoadError(f"no artifact {artifact_id!r} in this bundle; it holds {[e.id for e in self.artifacts]}")

    @property
    def source_layouts(self) -> list:
        return [t.layout for t in self.inputs]

    def to_dict(self) -> dict:
        return _to_dict(self)


def _to_dict(record) -> dict:
    """A record as manifest JSON: its fields in declaration order (optional ones left unset, None,
    omitted), then ``extra``."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name == "extra":
            out.update(plain(value))
        elif value is not None or f.default is not None:
            out[f.name] = _json(value)
    return out


def _json(value):
    if isinstance(value, TensorInfo):
        return value.to_dict()
    if is_dataclass(value):
        return _to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (dict, MappingProxyType)):
        return {k: _json(v) for k, v in value.items()}
    return value


plain = _json  # a record's value as JSON-ready data (the inverse of ``_frozen``)

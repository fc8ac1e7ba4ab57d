"""Typed manifests for tests of the runtime's choices, with only the fields a test cares about."""

TENSOR = {"name": "x", "shape": [None, 4], "dtype": "float32"}


def artifact(**fields) -> dict:
    """A complete manifest artifact entry (as a dict) around the fields given."""
    inputs = [dict(TENSOR, **t) for t in fields.pop("inputs", [{}])]
    return {"file": f"{fields['id']}.bin", "outputs": [dict(TENSOR, name="y")], **fields, "inputs": inputs}


def manifest_of(artifacts, **top):
    """A typed Manifest from partial artifact dicts (id, format, precision, latency, ...): the
    fields a test does not care about filled with valid values."""
    import edgekit.runtime as ekr
    entries = [artifact(**a) for a in artifacts]
    inputs = [dict(TENSOR, **t) for t in top.pop("inputs", [{}])]
    return ekr.Manifest.from_dict({"schema_version": ekr.SCHEMA_VERSION, "artifacts": entries, "inputs": inputs,
                                   "reference": {"file": "reference.npz"}, **top})

"""Hostile bundles: malformed manifests, missing hashes, files outside the bundle or not files at all,
and corrupt reference outputs. Each must end in a clean error (exit 2 or 1), never a raw exception,
a hang, or a pass. The bundle is a tiny torch model exported here to ONNX and OpenVINO IR."""

import hashlib
import io
import json
import os
import random
import shutil

import numpy as np
import pytest

import edgekit.runtime as ekr
from edgekit.cli.main import main
from edgekit.errors import InputError, ParityError
from edgekit.verification import verify

from ..timeouts import deadline

CLEAN = (ekr.ModelLoadError, InputError, ParityError)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(bundle dir, eval .npz): ONNX and OpenVINO fp32 artifacts of a 4 -> 3 MLP."""
    import torch

    import edgekit
    work = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    np.savez(work / "eval.npz", x=x)
    edgekit.export(model, calib=x, eval=x, targets=["onnx", "openvino"], out=work / "b", measure_latency=False)
    return work / "b", work / "eval.npz"


def _copy(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle[0], copy, symlinks=True)
    return copy


def _manifest(copy):
    return json.loads((copy / "manifest.json").read_text())


def _write(copy, manifest):
    (copy / "manifest.json").write_text(json.dumps(manifest))


def _edit(copy, change):
    manifest = _manifest(copy)
    change(manifest)
    _write(copy, manifest)


def _ov(manifest):
    return next(a for a in manifest["artifacts"] if a["format"] == "openvino")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli_verify(copy, eval_path):
    return main(["verify", str(copy), "--eval", str(eval_path)])


def test_runtime_precisions_are_the_toolkits():
    from edgekit.config import Precision
    from edgekit.runtime._schema import PRECISIONS
    assert sorted(PRECISIONS) == sorted(str(p) for p in Precision)


def test_an_exported_manifest_passes_the_schema_and_records_every_hash(bundle):
    manifest = ekr.read_manifest(bundle[0])
    assert manifest.reference["sha256"] == _sha256(bundle[0] / "reference.npz")
    assert all(a.sha256 for a in manifest.artifacts)
    assert [c.file for c in manifest.artifact("openvino-fp32").companions] == ["model.bin"]
    assert verify(bundle[0], bundle[1], isolate=False).passed


def test_the_manifest_records_are_frozen_and_round_trip(bundle):
    import dataclasses
    manifest = ekr.read_manifest(bundle[0])
    again = ekr.Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    entry = manifest.artifact("onnx-fp32")
    assert isinstance(entry.parity, ekr.ParityRecord) and entry.parity.passed
    assert entry.inputs[0].key == manifest.inputs[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.file = "elsewhere.onnx"
    with pytest.raises(TypeError):
        entry.quantization["recipe"] = "edited"  # read-only views, not the export's dicts
    # What the records do not name (the export's provenance) is kept, not dropped.
    assert manifest.extra["seed"] == 0 and "environment" in manifest.extra


@pytest.mark.parametrize("change, match", [
    (lambda m: _ov(m)["inputs"][0].update(shape="abc"),
     r"artifacts\[1\]\.inputs\[0\]\.shape: expected a list of integers or null.*got 'abc'"),
    (lambda m: _ov(m)["inputs"][0].update(shape=[None, "4"]), r"shape\[1\]: expected an integer >= 0 or null, got '4'"),
    (lambda m: m["inputs"][0].update(dtype="object"), r"inputs\[0\]\.dtype: expected one of \[.*'float32'"),
    (lambda m: m["inputs"][0].update(name=5), r"inputs\[0\]\.name: expected a non-empty string, got 5"),
    (lambda m: _ov(m).update(precision="int3"), r"precision: expected one of \['fp32'"),
    (lambda m: _ov(m).update(companions=["model.bin"]), r"companions\[0\]: expected a companion file"),
    (lambda m: _ov(m).update(latency_ms="fast"), r"latency_ms: expected a number or null, got 'fast'"),
    (lambda m: _ov(m).update(size_bytes=-1), r"size_bytes: expected an integer >= 0, got -1"),
    (lambda m: _ov(m).update(file="../model.xml"), r"artifacts\[1\]: '\.\./model\.xml' points outside the bundle"),
    (lambda m: _ov(m)["companions"][0].update(file="/etc/passwd"), r"'/etc/passwd' points outside the bundle"),
    (lambda m: m["reference"].update(file="C:\\ref.npz"), r"reference: 'C:\\\\ref\.npz' points outside the bundle"),
    (lambda m: _ov(m).update(parity={"cosine": "0.99"}), r"parity\.cosine: expected a number"),
    (lambda m: _ov(m)["outputs"][0].update(dtype="int8", quantization={"scale": 0.5}), "needs an integer zero_point"),
    (lambda m: _ov(m)["outputs"][0].update(quantization={"scale": 0.5, "zero_point": 0}), "must have dtype int8"),
    (lambda m: m.update(reference=[]), r"reference: expected the reference outputs' provenance"),
    (lambda m: m["reference"].update(outputs=[]), r"reference\.outputs: expected a non-empty list"),
    (lambda m: m["reference"].update(sha256="xyz"), r"reference\.sha256: expected a sha256 hex digest"),
    (lambda m: m.update(preprocessing={"layout": "chwn"}), r"preprocessing\.layout: expected one of \['nchw', 'nhwc'\]"),
    (lambda m: m["inputs"][0].update(layout="chwn"), r"inputs\[0\]\.layout: expected one of \['nchw', 'nhwc'\]"),
    (lambda m: m.update(preprocessing={"resize": 3}), r"preprocessing: unknown keys \['resize'\]"),
    (lambda m: m.update(source="torch"), r"source: expected an object, got 'torch'"),
    (lambda m: m.update(artifacts={}), r"artifacts: expected a non-empty list of artifact entries"),
    (lambda m: m.update(artifacts=[]), r"artifacts: expected a non-empty list"),
    (lambda m: m["artifacts"].append(dict(_ov(m))), r"artifacts\[2\]\.id: 'openvino-fp32' is already the id"),
    (lambda m: m.update(default_artifact=7), r"default_artifact: expected a non-empty string or null, got 7"),
])
def test_schema_violations_name_the_field_and_what_was_expected(bundle, tmp_path, change, match, capsys):
    copy = _copy(bundle, tmp_path)
    _edit(copy, change)
    with pytest.raises(ekr.ModelLoadError, match=match):
        ekr.load(copy)
    assert _cli_verify(copy, bundle[1]) == 2
    assert main(["info", str(copy)]) == 2
    assert "re-export the bundle" in capsys.readouterr().err


@pytest.mark.parametrize("path", [
    ("artifacts", 1, "file"), ("artifacts", 1, "id"), ("artifacts", 1, "precision"), ("artifacts", 1, "inputs"),
    ("artifacts", 1, "outputs", 0, "shape"), ("artifacts", 1, "companions", 0, "file"), ("inputs", 0, "dtype"),
    ("inputs",), ("artifacts",), ("reference",), ("reference", "file"),
])
def test_a_missing_key_is_named_as_missing(bundle, tmp_path, path):
    copy = _copy(bundle, tmp_path)
    manifest = _manifest(copy)
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    _write(copy, manifest)
    with pytest.raises(ekr.ModelLoadError, match=f"the key '{path[-1]}' is missing"):
        ekr.load(copy)


def _deep(levels):
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("text, match", [
    ('{"schema_version": 1, "artifacts": ' + _deep(200_000) + "}", "nests deeper than a JSON parser"),
    ('{"schema_version": 1, "environment": ' + _deep(40) + "}", "nest 3[3-9] levels deep; expected at most 32"),
    ('{"schema_version": 1, "seed": ' + "9" * 5000 + "}", "an integer of 5000 digits"),
    ('{"schema_version": 1, "seed": 18446744073709551616}', "expected integers that fit in 64 bits"),
    ('{"schema_version": 1, "artifacts": [{"id": "a"', "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (b"\xff\xfe{}", "is not valid JSON"),
])
def test_unparseable_manifests_are_clean_errors(bundle, tmp_path, text, match):
    copy = _copy(bundle, tmp_path)
    (copy / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ekr.ModelLoadError, match=match):
        ekr.load(copy)
    assert _cli_verify(copy, bundle[1]) == 2


def test_an_oversized_manifest_is_refused_before_it_is_read(bundle, tmp_path):
    from edgekit.runtime._schema import MAX_MANIFEST_BYTES
    copy = _copy(bundle, tmp_path)
    manifest = _manifest(copy)
    manifest["padding"] = "x" * MAX_MANIFEST_BYTES
    _write(copy, manifest)
    with pytest.raises(ekr.ModelLoadError, match=f"expected at most {MAX_MANIFEST_BYTES}"):
        ekr.load(copy)


@pytest.mark.parametrize("artifact", ["onnx-fp32", "openvino-fp32"])
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_a_missing_or_blank_sha256_is_refused_unless_check_hash_is_off(bundle, tmp_path, artifact, blank):
    copy = _copy(bundle, tmp_path)
    manifest = _manifest(copy)
    entry = next(a for a in manifest["artifacts"] if a["id"] == artifact)
    holder = entry["companions"][0] if "companions" in entry else entry  # the IR's .bin, the ONNX file
    if blank is None:
        del holder["sha256"]
    else:
        holder["sha256"] = blank
    _write(copy, manifest)
    with pytest.raises(ekr.ModelLoadError, match=f"records no sha256 for '{holder['file']}'"):
        ekr.load(copy, artifact=artifact)
    x = np.zeros((2, 4), np.float32)
    unchecked = ekr.load(copy, artifact=artifact, check_hash=False).predict(x)
    np.testing.assert_allclose(unchecked, ekr.load(bundle[0], artifact=artifact).predict(x), rtol=1e-6)
    with pytest.raises(ParityError, match="records no sha256"):
        verify(copy, bundle[1], isolate=False)


def _outside_weights(bundle, tmp_path):
    """A copy of the IR's weights outside the bundle, with every value changed: if the engine read it,
    predictions would come from a file no manifest vouches for."""
    outside = tmp_path / "elsewhere.bin"
    weights = np.frombuffer((bundle[0] / "model.bin").read_bytes(), np.float32)
    outside.write_bytes((weights + 1).astype(np.float32).tobytes())
    return outside


@pytest.mark.parametrize("companion", ["removed", "decoy", "listed"])
def test_ir_weights_are_read_only_from_a_listed_hashed_file_inside_the_bundle(bundle, tmp_path, companion):
    copy = _copy(bundle, tmp_path)
    (copy / "model.bin").unlink()
    (copy / "model.bin").symlink_to(_outside_weights(bundle, tmp_path))
    manifest = _manifest(copy)
    if companion == "removed":
        del _ov(manifest)["companions"]
    elif companion == "decoy":  # a genuine, hashed file that the engine never opens
        shutil.copy(bundle[0] / "model.bin", copy / "decoy.bin")
        _ov(manifest)["companions"][0]["file"] = "decoy.bin"
    _write(copy, manifest)
    match = "points outside the bundle" if companion == "listed" else "its engine also reads model.bin beside model.xml"
    for check_hash in (True, False):
        with pytest.raises(ekr.ModelLoadError, match=match):
            ekr.load(copy, artifact="openvino-fp32", check_hash=check_hash)


@pytest.mark.parametrize("name, make", [
    ("model.onnx", os.mkfifo), ("model.bin", os.mkfifo), ("model.onnx", os.mkdir), ("manifest.json", os.mkfifo),
])
def test_a_fifo_or_folder_in_place_of_a_file_is_refused_without_blocking(bundle, tmp_path, name, make):
    copy = _copy(bundle, tmp_path)
    (copy / name).unlink()
    make(copy / name)
    artifact = "openvino-fp32" if name == "model.bin" else "onnx-fp32"
    with deadline(10), pytest.raises(ekr.ModelLoadError, match="is not a regular file"):
        ekr.load(copy, artifact=artifact)


def test_a_fifo_named_reference_npz_fails_verify_without_blocking(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "reference.npz").unlink()
    os.mkfifo(copy / "reference.npz")
    with deadline(10), pytest.raises(InputError, match="not a regular file"):
        verify(copy, bundle[1], isolate=False)


def test_a_reference_symlinked_out_of_the_bundle_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    outside = tmp_path / "outside.npz"
    shutil.move(copy / "reference.npz", outside)
    (copy / "reference.npz").symlink_to(outside)
    with pytest.raises(InputError, match="outside the bundle"):
        verify(copy, bundle[1], isolate=False)


def _resave_reference(copy, change, *, rehash):
    """Rewrite reference.npz with ``change`` applied to its arrays; with ``rehash`` record its new sha256."""
    with np.load(copy / "reference.npz") as archive:
        arrays = {k: archive[k].copy() for k in archive.files}
    change(arrays)
    np.savez(copy / "reference.npz", **arrays)
    if rehash:
        _edit(copy, lambda m: m["reference"].update(sha256=_sha256(copy / "reference.npz")))


def test_a_modified_reference_fails_its_sha256(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    _resave_reference(copy, lambda a: a["output:output"].__setitem__((0, 0), 0.5), rehash=False)
    with pytest.raises(InputError, match="reference.npz does not match the sha256 in the manifest"):
        verify(copy, bundle[1], isolate=False)


def test_a_reference_without_sha256_loads_with_a_warning(bundle, tmp_path, caplog):
    """Bundles exported before the sha256 was recorded still verify, with a logged warning."""
    copy = _copy(bundle, tmp_path)
    _edit(copy, lambda m: m["reference"].pop("sha256"))
    with caplog.at_level("WARNING", logger="edgekit.reference"):
        assert verify(copy, bundle[1], isolate=False).passed
    assert "records no sha256" in caplog.text and "re-export" in caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_reference_fails_verify(bundle, tmp_path, bad):
    copy = _copy(bundle, tmp_path)
    _resave_reference(copy, lambda a: a["output:output"].__setitem__((3, 1), bad), rehash=True)
    with pytest.raises(InputError, match="output 'output' holds 1 NaN/inf values"):
        verify(copy, bundle[1], isolate=False)
    assert _cli_verify(copy, bundle[1]) == 2


# --- fuzzing ----------------------------------------------------------------------------------------------------------
# Seeded mutations of a real manifest and reference.npz. Every outcome must be a clean error or a pass,
# and a mutation listed below as one that must fail must not pass. "*" matches any list index.

MUST_FAIL_DELETIONS = [
    ("schema_version",), ("artifacts",), ("inputs",), ("reference",), ("reference", "file"),
    *(("artifacts", "*", key) for key in ("id", "format", "precision", "file", "sha256", "companions", "inputs",
                                          "outputs")),
    ("artifacts", "*", "companions", "*", "file"), ("artifacts", "*", "companions", "*", "sha256"),
    *((*tensors, "*", key) for tensors in (("inputs",), ("artifacts", "*", "inputs"), ("artifacts", "*", "outputs"))
      for key in ("name", "shape", "dtype")),
]
_TENSOR_KEYS = ("name", "shape", "dtype", "layout", "quantization", "source_name")
# Keys the schema guards: a value of another JSON type there must be refused.
GUARDED = [
    (), ("schema_version",), ("artifacts",), ("artifacts", "*"), ("inputs",), ("inputs", "*"), ("reference",),
    ("outputs",), ("outputs", "*"), ("source",), ("edgekit_version",), ("default_artifact",),
    *(("reference", key) for key in ("file", "sha256", "eval_sha256", "num_samples", "outputs", "framework", "device",
                                     "device_name", "versions")),
    ("reference", "outputs", "*"),
    *(("artifacts", "*", key) for key in ("id", "format", "precision", "file", "sha256", "companions", "scheme",
                                          "latency_ms", "size_bytes", "gzip_bytes", "contents", "parity", "inputs",
                                          "outputs")),
    ("artifacts", "*", "companions", "*"), ("artifacts", "*", "contents", "sparsity"),
    *(("artifacts", "*", "companions", "*", key) for key in ("file", "sha256", "size_bytes")),
    *(("artifacts", "*", "parity", key) for key in ("passed", "accuracy", "cosine")),
    *((*tensors, "*", key) for tensors in (("inputs",), ("artifacts", "*", "inputs"), ("artifacts", "*", "outputs"))
      for key in _TENSOR_KEYS),
    *((*tensors, "*", "shape", "*") for tensors in (("inputs",), ("artifacts", "*", "inputs"),
                                                   ("artifacts", "*", "outputs"))),
    ("artifacts", "*", "outputs"), ("artifacts", "*", "inputs", "*"), ("artifacts", "*", "outputs", "*"),
]
OTHER_TYPES = {str: [12345, True, [], {"a": 1}], int: ["7", False, [7], {}], float: ["0.5", [0.5], {}],
               bool: ["true", 1, []], list: ["[]", 3, {}], dict: ["{}", 3, [1]]}


def _matches(path, patterns):
    return any(len(path) == len(p) and all(q == "*" and isinstance(k, int) or q == k for k, q in zip(path, p))
               for p in patterns)


def _paths(value, prefix=()):
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*prefix, key))


def _set(manifest, path, value):
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


_DELETE = object()
_PLACEHOLDER = "@@replaced@@"


def _manifest_mutations(manifest, rng, count):
    """(description, must_fail, manifest text) for ``count`` seeded mutations of ``manifest``; most hit
    keys the schema guards, the rest anywhere (where a harmless change must still verify)."""
    paths = [p for p in _paths(manifest) if p]
    pools = {"schema": [p for p in paths if _matches(p, GUARDED)], "any": paths,
             "target": [p for p in paths if p[-1] in ("file", "sha256")]}
    text = json.dumps(manifest)
    for _ in range(count):
        kind = rng.choice(["delete", "swap", "swap", "retarget", "deep", "huge_int", "nan", "truncate"])
        path = rng.choice(pools["target" if kind == "retarget" else "schema" if rng.random() < 0.6 else "any"])
        mutated = json.loads(text)
        value = _get(manifest, path)
        if kind == "delete" and isinstance(_get(manifest, path[:-1]), dict):
            _set(mutated, path, _DELETE)
            yield f"delete {path}", _matches(path, MUST_FAIL_DELETIONS), json.dumps(mutated)
        elif kind == "swap" and type(value) in OTHER_TYPES:
            _set(mutated, path, rng.choice(OTHER_TYPES[type(value)]))
            yield f"swap {path}", _matches(path, GUARDED), json.dumps(mutated)
        elif kind == "retarget":
            new = rng.choice(["../outside.npz", "/etc/passwd", "missing.onnx"]) if path[-1] == "file" else "0" * 64
            _set(mutated, path, new)
            yield f"retarget {path} -> {new}", True, json.dumps(mutated)
        elif kind in ("deep", "huge_int"):
            _set(mutated, path, _PLACEHOLDER)
            replacement = _deep(rng.choice([40, 200_000])) if kind == "deep" else rng.choice(["9" * 5000, "9" * 25])
            yield f"{kind} at {path}", True, json.dumps(mutated).replace(json.dumps(_PLACEHOLDER), replacement)
        elif kind == "nan" and isinstance(value, (int, float)) and not isinstance(value, bool):
            _set(mutated, path, float("nan"))
            yield f"NaN at {path}", False, json.dumps(mutated)
        elif kind == "truncate":
            cut = rng.randrange(len(text) - 1)
            yield f"truncate manifest at {cut}", True, text[:cut]


def _get(value, path):
    for key in path:
        value = value[key]
    return value


def _reference_mutations(reference, manifest, rng, count):
    """(description, must_fail, manifest text, reference bytes) for seeded corruptions of reference.npz."""
    unhashed = json.loads(json.dumps(manifest))
    del unhashed["reference"]["sha256"]
    for _ in range(count):
        kind = rng.choice(["flip", "flip_unhashed", "truncate", "nan", "inf"])
        if kind in ("flip", "flip_unhashed"):
            data = bytearray(reference)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            # Hashed, any flip must fail; unhashed, a flip in a timestamp may pass, a flip in the data may not.
            yield (f"{kind} reference.npz bits", kind == "flip",
                   json.dumps(manifest if kind == "flip" else unhashed), bytes(data))
        elif kind == "truncate":
            cut = rng.randrange(len(reference))
            yield f"truncate reference.npz at {cut}", True, json.dumps(unhashed), reference[:cut]
        else:
            with np.load(io.BytesIO(reference)) as archive:
                arrays = {k: archive[k].copy() for k in archive.files}
            arrays["output:output"].flat[rng.randrange(arrays["output:output"].size)] = getattr(np, kind)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            rehashed = json.loads(json.dumps(manifest))
            rehashed["reference"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
            yield f"{kind} in reference.npz", True, json.dumps(rehashed), buffer.getvalue()


def _outcome(copy, eval_path, description):
    """None when the bundle loads and verifies; the clean error otherwise; a test failure for anything else."""
    try:
        with deadline(20):
            model = ekr.load(copy)
            verify(copy, eval_path, isolate=False)
            model.selftest()  # reads the golden samples and the recorded figures and tolerances
    except CLEAN as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any other exception is the defect this test looks for
        pytest.fail(f"{description}: raw {type(exc).__name__}: {exc}")
    return None


def test_fuzzed_manifests_and_references_fail_cleanly(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    manifest = _manifest(copy)
    reference = (copy / "reference.npz").read_bytes()
    rng = random.Random(20261125)
    cases = [(d, must, text, reference) for d, must, text in _manifest_mutations(manifest, rng, 260)]
    cases += list(_reference_mutations(reference, manifest, rng, 60))
    tally = {"failed cleanly": 0, "passed": 0, "must fail": 0}
    for description, must_fail, text, reference_bytes in cases:
        (copy / "manifest.json").write_text(text)
        (copy / "reference.npz").write_bytes(reference_bytes)
        error = _outcome(copy, bundle[1], description)
        assert error is not None or not must_fail, f"{description}: passed, but this mutation must fail"
        tally["failed cleanly" if error else "passed"] += 1
        tally["must fail"] += must_fail
    # The loop exercised both sides: mutations that must fail, and harmless ones that still verify.
    assert tally["must fail"] >= 150 and tally["passed"] >= 15, tally

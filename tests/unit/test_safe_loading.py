"""Untrusted model files: nothing in them runs, and each refusal says what to do instead."""

import os
import subprocess
import sys

import numpy as np
import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit.errors import InputError


def _evil_checkpoint(path, marker):
    code = f"""
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"0.weight": torch.zeros(2), "evil": Evil()}}, {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("force_env", [False, True])
def test_pickle_payload_in_weights_never_runs(tmp_path, digits_files, force_env, monkeypatch):
    marker = tmp_path / "PWNED"
    _evil_checkpoint(tmp_path / "evil.pt", marker)
    if force_env:  # a user's environment that asks torch for the unsafe default
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(InputError, match="weights_only=True"):
        edgekit.export(digits_files["factory"], weights=tmp_path / "evil.pt", eval=digits_files["eval"],
                       out=tmp_path / "b")
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_pt2_and_torchscript_need_trust(tmp_path, digits_files):
    import torch

    import digits
    scripted = torch.jit.script(digits.build_model().eval())
    scripted.save(str(tmp_path / "m.ts"))
    with pytest.raises(InputError, match="--trust-model"):
        edgekit.export(str(tmp_path / "m.ts"), eval=digits_files["eval"], out=tmp_path / "b")
    report = edgekit.export(str(tmp_path / "m.ts"), eval=digits_files["eval"], out=tmp_path / "b",
                            trust_model=True, measure_latency=False)
    assert report.passed


def test_h5_with_a_lambda_layer_is_refused_before_loading(tmp_path):
    import tf_keras
    inp = tf_keras.Input((4,))
    out = tf_keras.layers.Lambda(lambda x: x * 2)(tf_keras.layers.Dense(3)(inp))
    tf_keras.Model(inp, out).save(tmp_path / "lambda.h5")
    with pytest.raises(InputError, match="Lambda layers"):
        edgekit.export(str(tmp_path / "lambda.h5"), eval=np.zeros((4, 4), np.float32), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_ir_with_truncated_weights_or_a_bad_graph_is_a_clean_error(tmp_path, openvino_bundle):
    import shutil
    for name in ("model.xml", "model.bin"):
        shutil.copy(openvino_bundle / name, tmp_path / name)
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ekr.ModelLoadError, match="truncated or mismatched"):
        ekr.load(tmp_path / "model.xml")
    (tmp_path / "model.bin").write_bytes(data)
    (tmp_path / "model.xml").write_text("<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><x>&b;</x>")
    with pytest.raises(ekr.ModelLoadError, match="not an OpenVINO IR"):
        ekr.load(tmp_path / "model.xml")
    (tmp_path / "model.xml").write_bytes(b"\x00\xff garbage")
    with pytest.raises(ekr.ModelLoadError, match="not a valid OpenVINO IR"):
        ekr.load(tmp_path / "model.xml")
    os.remove(tmp_path / "model.bin")
    with pytest.raises(ekr.ModelLoadError, match="weights file model.bin is missing"):
        ekr.load(tmp_path / "model.xml")


FUZZ = """
import random, shutil, sys, json
from pathlib import Path
import numpy as np
import edgekit.runtime as ekr
rng = random.Random(0)
outcomes = {}
for src in sys.argv[2:]:
    src = Path(src)
    data = src.read_bytes()
    for trial in range(30):
        folder = Path(sys.argv[1]) / f"{src.name}-{trial}"
        folder.mkdir(parents=True)
        if src.suffix == ".xml":
            shutil.copy(src.with_suffix(".bin"), folder / src.with_suffix(".bin").name)
        if trial == 0:
            mutated = b""
        elif trial == 1:
            mutated = data[: len(data) // 2]
        else:
            raw = bytearray(data)
            for _ in range(rng.choice([1, 8, 64])):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            mutated = bytes(raw)
        (folder / src.name).write_bytes(mutated)
        try:
            model = ekr.load(folder / src.name)
            model.predict(np.zeros([d or 1 for d in model.inputs[0].shape], model.inputs[0].dtype))
            outcome = "loaded"
        except ekr.ModelLoadError:
            outcome = "refused"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        outcomes.setdefault(src.suffix, []).append(outcome)
print(json.dumps(outcomes))
"""


def test_mutated_model_files_give_clean_errors_never_crashes(tmp_path, openvino_bundle, keras_bundle):
    """Zero-byte, truncated and bit-flipped files of every format: a ModelLoadError, or (where only
    weight bytes changed) a model that still runs; never another exception, never a crash."""
    import json
    files = [openvino_bundle / "model.int8.onnx", openvino_bundle / "model.int8.xml", keras_bundle / "model.int8.tflite"]
    result = subprocess.run([sys.executable, "-c", FUZZ, str(tmp_path), *map(str, files)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"a loader crashed: {result.stderr[-2000:]}"
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(outcomes) == {".onnx", ".xml", ".tflite"}
    for suffix, results in outcomes.items():
        assert results[0] == results[1] == "refused", suffix  # empty and truncated files
        assert set(results) <= {"loaded", "refused"}, (suffix, [r for r in results if r not in ("loaded", "refused")])


def _external_model(folder, location):
    from onnx import TensorProto, helper
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.ones(16, np.float32))
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location, setup, message", [
    ("/etc/passwd", None, "not a plain relative path"),
    ("../secret.bin", "outside", "not a plain relative path"),
    ("link.bin", "symlink", "symbolic link"),
    ("hard.bin", "hardlink", "hard link"),
    ("missing.bin", None, "is missing"),
])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location, setup, message):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(16, 7, np.float32).tobytes())
    folder = tmp_path / "model"
    path = _external_model(folder, location)
    if setup == "symlink":
        (folder / "link.bin").symlink_to(secret)
    elif setup == "hardlink":
        os.link(secret, folder / "hard.bin")
    with pytest.raises(InputError, match=message):
        edgekit.export(str(path), eval=np.zeros((4, 4), np.float32), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_onnx_external_data_inside_the_folder_loads(tmp_path):
    folder = tmp_path / "model"
    path = _external_model(folder, "weights.bin")
    (folder / "weights.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    report = edgekit.export(str(path), eval=x, out=tmp_path / "b", measure_latency=False)
    assert report.passed
    np.testing.assert_allclose(ekr.load(tmp_path / "b").predict(x), x, atol=1e-6)


def test_isolation_turns_a_parser_crash_into_a_clean_rejection(tmp_path, digits_bundle, digits_files,
                                                               monkeypatch, capsys):
    """A native parser that dies (simulated: an onnxruntime that aborts, first on the child's import path)
    must not take the caller with it: ekr.load(isolate=True) raises, and `edgekit verify` reports it."""
    from edgekit.cli.main import main
    from edgekit.runtime import _child
    (tmp_path / "onnxruntime.py").write_text("import os\nos.abort()\n")
    real_path = _child._import_path
    monkeypatch.setattr(_child, "_import_path", lambda: [str(tmp_path), *real_path()])
    bundle = digits_bundle[0]
    with pytest.raises(ekr.ModelLoadError, match="crashed the isolated process"):
        ekr.load(bundle / "model.onnx", isolate=True)
    assert main(["verify", str(bundle), "--eval", str(digits_files["eval"]), "--artifact", "onnx-fp32"]) == 1
    captured = capsys.readouterr()
    assert "crashed the isolated process" in captured.out + captured.err
    monkeypatch.undo()
    assert ekr.load(bundle / "model.onnx", isolate=True).predict(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)


def test_children_never_import_from_the_working_directory(tmp_path, digits_bundle, digits_files, monkeypatch):
    """A json.py (or numpy.py, onnxruntime.py) where `edgekit verify` runs must not run in its children
    (`python -c` would put the working directory first on sys.path), also with PYTHONPATH/user site set."""
    from edgekit.cli.main import main
    hostile = tmp_path / "checkout"
    hostile.mkdir()
    marker = tmp_path / "pwned"
    for name in ("json", "numpy", "onnxruntime", "sitecustomize", "usercustomize"):
        (hostile / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    monkeypatch.chdir(hostile)
    monkeypatch.syspath_prepend(str(hostile))  # as `python -m edgekit` run there would have it
    monkeypatch.setenv("PYTHONPATH", str(hostile))
    assert main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["eval"]), "--artifact", "onnx-fp32"]) == 0
    ekr.load(digits_bundle[0], artifact="onnx-int8", isolate=True)
    assert not marker.exists(), f"a module from the working directory ran in a child: {marker.read_text()}"


def test_two_exports_with_the_same_inputs_are_byte_identical(tmp_path, openvino_bundle, digits_files):
    import json
    edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                   eval=digits_files["eval"], targets=["openvino", "onnx"], int8=True, out=tmp_path / "again",
                   measure_latency=False)
    first = json.loads((openvino_bundle / "manifest.json").read_text())["artifacts"]
    second = json.loads((tmp_path / "again" / "manifest.json").read_text())["artifacts"]
    assert {a["id"]: (a["sha256"], [c["sha256"] for c in a.get("companions", [])]) for a in first} == \
           {a["id"]: (a["sha256"], [c["sha256"] for c in a.get("companions", [])]) for a in second}


@pytest.mark.parametrize("name, content, extra", [
    ("m.onnx", b"", []), ("m.onnx", b"TFL3 not onnx" * 10, []), ("m.keras", b"", []),
    ("m.keras", b"PK\x03\x04 truncated zip", []), ("m.h5", b"", []), ("m.h5", b"\x89HDF\r\n\x1a\n", []),
    ("m.pt2", b"", ["--trust-model"]), ("m.ts", b"garbage", ["--trust-model"]),
])
def test_broken_source_model_files_are_usage_errors_without_output(tmp_path, digits_files, capsys, name, content,
                                                                   extra):
    from edgekit.cli.main import main
    (tmp_path / name).write_bytes(content)
    code = main(["export", str(tmp_path / name), "--eval", str(digits_files["eval"]), "--out", str(tmp_path / "b"),
                 *extra])
    assert code == 2, capsys.readouterr()
    assert name in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_broken_weights_files_are_usage_errors(tmp_path, digits_files, capsys):
    from edgekit.cli.main import main
    good = (digits_files["weights"]).read_bytes()
    np.savez(tmp_path / "arrays.npz", w=np.zeros(3))
    cases = (("zero.pt", b"", "is an empty file"), ("half.pt", good[: len(good) // 2], "is a damaged zip file"),
             ("text.pt", b"not a checkpoint", "is a text file (starting 'not a checkpoint')"),
             ("arrays.npz", None, "is a NumPy .npz archive; expected a PyTorch state_dict"))
    for name, content, message in cases:
        if content is not None:
            (tmp_path / name).write_bytes(content)
        assert main(["export", digits_files["factory"], "--weights", str(tmp_path / name), "--eval",
                     str(digits_files["eval"]), "--out", str(tmp_path / "b")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_data_file_that_is_not_what_its_name_says_is_named(tmp_path, digits_files, capsys):
    from edgekit.cli.main import main
    (tmp_path / "notes.npz").write_text("x,y\n1,2\n")
    np.save(tmp_path / "array.npy", np.zeros((4, 1, 8, 8), np.float32))
    (tmp_path / "array.npz").write_bytes((tmp_path / "array.npy").read_bytes())
    for name, message in (("notes.npz", "is a text file (starting 'x,y')"), ("array.npz", "is a NumPy .npy array")):
        assert main(["export", digits_files["factory"], "--weights", str(digits_files["weights"]), "--eval",
                     str(tmp_path / name), "--out", str(tmp_path / "b")]) == 2
        assert message in capsys.readouterr().err

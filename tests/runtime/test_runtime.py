import json
import subprocess
import sys

import numpy as np
import pytest

import edgekit.runtime as ekr

HEAVY = ("torch", "tensorflow", "onnx", "onnxscript", "nncf", "openvino", "tf_keras", "keras",
         "edgekit.converters", "edgekit.quantize", "edgekit.pipeline", "edgekit.sources", "edgekit.verification")


@pytest.mark.parametrize("kind", ["onnx", "tflite", "openvino"])
def test_runtime_imports_only_numpy_and_its_backend(kind, request):
    if kind == "onnx":
        bundle, _ = request.getfixturevalue("digits_bundle")
        x_eval = request.getfixturevalue("digits_splits")[2][0]
        backend = "onnxruntime"
    elif kind == "openvino":
        bundle = request.getfixturevalue("openvino_bundle")
        x_eval = request.getfixturevalue("digits_splits")[2][0]
        backend = "openvino"
    else:
        bundle = request.getfixturevalue("keras_bundle")
        x_eval = request.getfixturevalue("keras_digits")["splits"][2][0]
        backend = "ai_edge_litert"
    np.save(bundle.parent / "sample.npy", x_eval[:3])
    code = f"""
import sys, json, numpy as np
import edgekit.runtime as ekr
model = ekr.load({str(bundle)!r}, backend={"openvino" if kind == "openvino" else "auto"!r})
out = model.predict(np.load({str(bundle.parent / 'sample.npy')!r}))
print(json.dumps({{"shape": list(out.shape), "modules": sorted(sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["shape"] == [3, 10]
    loaded = set(data["modules"])
    assert backend in loaded
    leaked = [m for m in loaded for heavy in HEAVY if heavy != backend and (m == heavy or m.startswith(heavy + "."))]
    assert leaked == []


def test_predict_adds_and_removes_the_batch_axis(digits_bundle, digits_splits):
    bundle, _ = digits_bundle
    _, _, (x_eval, _) = digits_splits
    model = ekr.load(bundle, precision="fp32")
    batch = model.predict(x_eval[:4])
    single = model(x_eval[1])
    assert batch.shape == (4, 10) and single.shape == (10,)
    np.testing.assert_allclose(single, batch[1], rtol=1e-5, atol=1e-5)
    assert model.predict(x_eval[:2].astype(np.float64)).dtype == np.float32
    assert model.run({"input": x_eval[:2]})["output"].shape == (2, 10)


def test_bundle_default_and_selection(digits_bundle):
    bundle, _ = digits_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert ekr.load(bundle).artifact.id == manifest["default_artifact"]
    assert ekr.load(bundle, artifact="onnx-int8").artifact.precision == "int8"
    with pytest.raises(ekr.ModelLoadError, match="no artifact"):
        ekr.load(bundle, artifact="tflite-int8")


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 8, 1), np.float32), r"expected shape \(N, 1, 8, 8\) layout nchw"),
    (np.zeros((2, 8), np.float32), "expected rank 4"),
    (np.zeros((2, 1, 8, 8), np.complex64), "expected dtype float32"),
])
def test_wrong_input_is_a_clear_error(digits_bundle, bad, match):
    model = ekr.load(digits_bundle[0], precision="fp32")
    with pytest.raises(ekr.RuntimeInputError, match=match):
        model.predict(bad)


def test_modified_artifact_fails_its_checksum(digits_bundle, tmp_path):
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(digits_bundle[0], copy)
    path = copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ekr.ModelLoadError, match="sha256"):
        ekr.load(copy, precision="fp32")


def test_schema_version_and_missing_manifest(tmp_path, digits_bundle):
    with pytest.raises(ekr.ModelLoadError, match="not an edgekit bundle"):
        ekr.load(tmp_path)
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(digits_bundle[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ekr.ModelLoadError, match="schema_version 99"):
        ekr.load(copy)


def test_artifact_path_cannot_escape_the_bundle(tmp_path, digits_bundle):
    import shutil
    copy = tmp_path / "b"
    shutil.copytree(digits_bundle[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["artifacts"][0]["file"] = "../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ekr.ModelLoadError, match="outside the bundle"):
        ekr.load(copy, artifact=manifest["artifacts"][0]["id"])


def test_quantized_io_is_converted_from_the_manifest():
    """A fixed-batch uint8-in/uint8-out model: float data in, dequantized float out, per-sample loop."""

    class Engine:
        name = "fake"
        inputs = [ekr.TensorInfo("x", (1, 3), np.dtype(np.uint8))]
        outputs = [ekr.TensorInfo("y", (1, 3), np.dtype(np.uint8))]
        calls = 0

        def run(self, feeds):
            Engine.calls += 1
            assert feeds["x"].dtype == np.uint8 and feeds["x"].shape == (1, 3)
            return [feeds["x"]]

    qin = ekr.TensorInfo("x", (1, 3), np.dtype(np.uint8), scale=0.5, zero_point=10)
    qout = ekr.TensorInfo("y", (1, 3), np.dtype(np.uint8), scale=0.5, zero_point=10)
    model = ekr.Model(Engine(), [qin], [qout])
    x = np.array([[0.0, 1.0, 2.5], [-5.0, 0.5, 3.0]], np.float32)
    np.testing.assert_allclose(model.predict(x), x)
    assert Engine.calls == 2


def test_bare_model_file_and_unknown_suffix(digits_bundle, tmp_path):
    model = ekr.load(digits_bundle[0] / "model.onnx")
    assert [t.name for t in model.inputs] == ["input"] and model.inputs[0].shape[0] is None
    (tmp_path / "m.xyz").write_bytes(b"123")
    with pytest.raises(ekr.ModelLoadError, match="no runtime backend"):
        ekr.load(tmp_path / "m.xyz")


def test_tflite_bundle_runs_batches_and_single_samples(keras_bundle, keras_digits):
    x_eval = keras_digits["splits"][2][0]
    model = ekr.load(keras_bundle, precision="int8", threads=2)
    assert model.backend == "tflite" and model.inputs[0].layout == "nhwc"
    batch = model.predict(x_eval[:7])
    single = model.predict(x_eval[3])
    assert batch.shape == (7, 10) and single.shape == (10,)
    np.testing.assert_allclose(single, batch[3], atol=1e-5)
    bare = ekr.load(keras_bundle / "model.int8.tflite")
    assert [t.name for t in bare.inputs] == ["image"]


def test_tflite_interpreter_falls_back_to_tf_lite(keras_bundle, keras_digits):
    """Without ai_edge_litert and tflite_runtime the backend runs on tensorflow.lite, same results."""
    x_eval = keras_digits["splits"][2][0][:5]
    expected = ekr.load(keras_bundle, artifact="tflite-int8").predict(x_eval)
    code = f"""
import sys, json, numpy as np
sys.modules["ai_edge_litert"] = sys.modules["ai_edge_litert.interpreter"] = None
sys.modules["tflite_runtime"] = sys.modules["tflite_runtime.interpreter"] = None
import edgekit.runtime as ekr
from edgekit.runtime.backends import _tflite
print(json.dumps({{"interpreter": _tflite.interpreter_class().__module__,
    "out": ekr.load({str(keras_bundle)!r}, artifact="tflite-int8").predict(np.load({str(keras_bundle.parent / 'fallback.npy')!r})).tolist()}}))
"""
    np.save(keras_bundle.parent / "fallback.npy", x_eval)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["interpreter"].startswith("tensorflow")
    np.testing.assert_allclose(np.array(data["out"]), expected, atol=1e-5)


def test_no_tflite_interpreter_is_a_clear_error(monkeypatch):
    from edgekit.runtime.backends import _tflite
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                 "tflite_runtime.interpreter", "tensorflow", "tensorflow.lite"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ekr.BackendUnavailableError, match="ai-edge-litert"):
        _tflite.interpreter_class()


def test_openvino_backend_caches_compiled_models_and_takes_engine_options(openvino_bundle, digits_splits):
    from edgekit.runtime.backends import _openvino
    x = digits_splits[2][0][:5]
    first = ekr.load(openvino_bundle, backend="openvino", precision="fp32", threads=2)
    again = ekr.load(openvino_bundle, backend="openvino", precision="fp32", threads=2)
    assert first._engine._compiled is again._engine._compiled  # compiled once per process
    two_streams = ekr.load(openvino_bundle, backend="openvino", precision="fp32", threads=2, streams=2)
    assert two_streams._engine._compiled is not first._engine._compiled
    np.testing.assert_allclose(two_streams.predict(x), first.predict(x), atol=1e-6)
    assert _openvino.core() is _openvino.core()
    # fp32 runs in f32 by default (the CPU plugin's own default here would be bf16).
    onnx_fp32 = ekr.load(openvino_bundle, artifact="onnx-fp32").predict(x)
    np.testing.assert_allclose(first.predict(x), onnx_fp32, atol=1e-4)
    with pytest.raises(ekr.ModelLoadError, match="does not take the options"):
        ekr.load(openvino_bundle, artifact="onnx-fp32", streams=2)
    with pytest.raises(ekr.ModelLoadError, match="does not take the options"):
        ekr.load(openvino_bundle, backend="openvino", colour="red")


def test_backend_choice_in_a_bundle_of_several_formats(openvino_bundle):
    manifest = json.loads((openvino_bundle / "manifest.json").read_text())
    assert ekr.load(openvino_bundle).artifact.id == manifest["default_artifact"]
    assert ekr.load(openvino_bundle, backend="openvino").artifact.format == "openvino"
    assert ekr.load(openvino_bundle, backend="onnxruntime", precision="int8").artifact.id == "onnx-int8"
    assert all(a.get("latency_ms") for a in manifest["artifacts"])  # what "auto" chose from


def test_select_artifact_prefers_the_default_then_the_fastest():
    from tests.manifests import manifest_of

    from edgekit.runtime._manifest import select_artifact
    artifacts = [{"id": "onnx-fp32", "format": "onnx", "precision": "fp32", "latency_ms": 0.5},
                 {"id": "onnx-int8", "format": "onnx", "precision": "int8", "latency_ms": 0.4},
                 {"id": "openvino-int8", "format": "openvino", "precision": "int8", "latency_ms": 0.2}]
    manifest = manifest_of(artifacts, default_artifact="onnx-fp32")
    assert select_artifact(manifest).id == "onnx-fp32"
    assert select_artifact(manifest, precision="int8").id == "openvino-int8"
    assert select_artifact(manifest, precision="int8", fmt="onnx").id == "onnx-int8"
    # A faster artifact that takes another layout (PyTorch -> TFLite is NHWC) is not picked by precision.
    nchw = [{"layout": "nchw"}]
    artifacts = [{**a, "inputs": nchw} for a in artifacts] + [
        {"id": "tflite-int8", "format": "tflite", "precision": "int8", "latency_ms": 0.1, "inputs": [{"layout": "nhwc"}]}]
    manifest = manifest_of(artifacts, default_artifact="onnx-fp32", inputs=nchw)
    assert select_artifact(manifest, precision="int8").id == "openvino-int8"
    assert select_artifact(manifest, precision="int8", fmt="tflite").id == "tflite-int8"


def test_inputs_are_checked_once_per_signature_and_bind_is_the_same_model(digits_bundle, digits_splits,
                                                                         monkeypatch):
    """The wrapper's cost: checks run once per shape/dtype signature (the plan is reused), and the
    bound fast path gives predict's outputs, falling back to predict's checks for other data."""
    from edgekit.runtime import _model
    x = digits_splits[2][0][:4]
    model = ekr.load(digits_bundle[0], artifact="onnx-int8")
    checks = []
    real_check = _model._check
    monkeypatch.setattr(_model, "_check", lambda *a: checks.append(a) or real_check(*a))
    first = model.predict(x)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict(x), first)
    model.predict(x[0])          # one sample (no batch axis): another signature, checked once
    model.predict(x[0])
    assert len(checks) == 2
    fast = model.bind(x)
    np.testing.assert_array_equal(fast(x), first)
    np.testing.assert_array_equal(fast(x[0]), first[0])        # other data: predict's path
    with pytest.raises(ekr.RuntimeInputError, match="expected shape"):
        fast(x[:, :, :4])


def test_cached_plans_still_check_integer_ranges_every_call():
    class Engine:
        name = "fake"
        inputs = [ekr.TensorInfo("ids", (None, 3), np.dtype(np.int32))]
        outputs = [ekr.TensorInfo("y", (None, 3), np.dtype(np.int32))]

        def run(self, feeds):
            return [feeds["ids"]]

    model = ekr.Model(Engine(), Engine.inputs, Engine.outputs)
    assert model.predict(np.ones((2, 3), np.int64)).dtype == np.int32
    with pytest.raises(ekr.RuntimeInputError, match="values outside the range of int32"):
        model.predict(np.full((2, 3), 2 ** 40, np.int64))   # same signature as the call before
    assert model.predict([[[1, 2, 3]]]).tolist() == [[1, 2, 3]]  # nested lists: converted (and checked) every call


def test_an_isolated_run_reports_its_batches_to_the_parent(digits_bundle, digits_splits):
    """The child writes how far it has got; the parent reads it while waiting, and the last at exit."""
    from edgekit.runtime._child import run_isolated
    out = digits_bundle[0]
    entry = ekr.read_manifest(out).artifact("onnx-int8")
    x = digits_splits[2][0][:100]
    seen = []
    outputs = run_isolated(out / entry.file, {entry.inputs[0].name: x}, timeout=120, entry=entry.to_dict(),
                           batch=32, on_batch=lambda done, total: seen.append((done, total)))
    assert len(next(iter(outputs.values()))) == 100
    assert seen and seen[-1] == (100, 100) and all(total == 100 and done in (32, 64, 96, 100) for done, total in seen)
    in_process = []
    ekr.load(out).run_batched({entry.inputs[0].name: x}, 32, lambda *event: in_process.append(event))
    assert in_process == [(32, 100), (64, 100), (96, 100), (100, 100)]


def test_an_isolated_child_never_outlives_the_call(tmp_path):
    """Ctrl-C (or any exception) while waiting kills and reaps the child: a model hung in native code
    would never see the signal itself."""
    from pathlib import Path

    from edgekit.runtime._child import Launcher, spawn
    pid_file = tmp_path / "pid"
    hung = Launcher(prefix=("sh", "-c", f"echo $$ > {pid_file}; exec sleep 60", "sh"))

    def interrupt():
        if pid_file.exists():
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        spawn(["probe", "model.onnx", "auto"], timeout=120, what="a hung model", launcher=hung, watch=interrupt)
    assert not Path(f"/proc/{int(pid_file.read_text())}").exists()

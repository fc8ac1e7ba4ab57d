"""PyTorch -> ONNX through the whole pipeline, on awkward small models."""

import json

import numpy as np
import pytest
import torch

import edgekit
import edgekit.runtime as ekr
from edgekit.errors import ConfigError, InputError
from edgekit.sources.torch_source import resolve_device
from tests.models import MODELS_FILE, prelu_ceil, two_input_tokens


def _tokens_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 50, (n, 6)).astype(np.int64),
            "features": rng.standard_normal((n, 4)).astype(np.float32)}


def test_multi_input_int64_tokens_and_dict_outputs(tmp_path):
    data = _tokens_data()
    report = edgekit.export(two_input_tokens(), calib=data, eval=_tokens_data(seed=1), fp16=True,
                            out=tmp_path / "b")
    assert report.passed
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["tokens", "features"]
    assert manifest["inputs"][0]["dtype"] == "int64"
    assert manifest["outputs"] == ["logits", "embedding"]
    model = ekr.load(tmp_path / "b", precision="fp32")
    out = model.predict({"tokens": data["tokens"][:3], "features": data["features"][:3]})
    with torch.inference_mode():
        ref = two_input_tokens()(torch.from_numpy(data["tokens"][:3]), torch.from_numpy(data["features"][:3]))
    np.testing.assert_allclose(out["logits"], ref["logits"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["embedding"], ref["embedding"].numpy(), rtol=1e-4, atol=1e-5)


def test_prelu_ceil_mode_int8_with_dynamic_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 3, 9, 9)).astype(np.float32)
    report = edgekit.export(f"{MODELS_FILE}:prelu_ceil", calib=x[:64], eval=x[64:], int8=True,
                            out=tmp_path / "b")
    int8 = next(a for a in report.artifacts if a["precision"] == "int8")
    assert int8["parity"]["cosine"] > 0.99
    assert "PRelu" in int8["contents"]["op_counts"]
    model = ekr.load(tmp_path / "b", artifact="onnx-fp32")
    for batch in (1, 5):
        with torch.inference_mode():
            ref = prelu_ceil()(torch.from_numpy(x[:batch])).numpy()
        np.testing.assert_allclose(model.predict(x[:batch]), ref, rtol=1e-4, atol=1e-5)


def test_torch_export_program_source(tmp_path):
    module = prelu_ceil()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.randn(2, 3, 9, 9),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "m.pt2")
    x = np.random.default_rng(0).standard_normal((20, 3, 9, 9)).astype(np.float32)
    with pytest.raises(InputError, match="trust-model"):
        edgekit.export(str(tmp_path / "m.pt2"), eval=x, out=tmp_path / "b")
    report = edgekit.export(str(tmp_path / "m.pt2"), eval=x, out=tmp_path / "b", trust_model=True)
    assert report.passed and report.source["framework"] == "torch"
    assert ekr.load(tmp_path / "b").inputs[0].shape[0] is None


def test_onnx_file_source_uses_fp32_onnx_as_reference(tmp_path, digits_bundle, digits_files):
    bundle, _ = digits_bundle
    report = edgekit.export(str(bundle / "model.onnx"), calib=digits_files["calib"], eval=digits_files["eval"],
                            int8=True, out=tmp_path / "b")
    assert report.reference["framework"] == "onnxruntime"
    fp32 = next(a for a in report.artifacts if a["precision"] == "fp32")
    assert fp32["parity"]["max_abs_error"] == 0.0
    assert report.passed


def test_weights_are_loaded_weights_only_and_must_fit(tmp_path, digits_files):
    torch.save({"not": "a state dict", "x": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit"):
        edgekit.export(digits_files["factory"], weights=tmp_path / "bad.pt", eval=digits_files["eval"],
                       out=tmp_path / "b")

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="weights_only=True"):
        edgekit.export(digits_files["factory"], weights=tmp_path / "evil.pt", eval=digits_files["eval"],
                       out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_reference_device_auto_falls_back_to_cpu_and_cuda_is_not_faked(monkeypatch):
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda", cuda_available=False)


def test_reference_runs_on_cpu_here_and_records_it(digits_bundle):
    _, report = digits_bundle
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert report.reference["device"] == expected
    assert report.reference["versions"]["torch"] == torch.__version__


def test_python_api_with_example_inputs_only(tmp_path):
    """No calibration or eval data: parity runs on the example inputs and says so."""
    x = np.random.default_rng(3).standard_normal((8, 3, 9, 9)).astype(np.float32)
    report = edgekit.export(prelu_ceil(), x, out=tmp_path / "b", measure_latency=False)
    assert report.passed and [a["id"] for a in report.artifacts] == ["onnx-fp32"]
    with pytest.raises(ConfigError, match="int8 needs calibration"):
        edgekit.export(prelu_ceil(), x, int8=True, out=tmp_path / "c")


def test_nhwc_eval_data_for_a_torch_module_is_refused_with_a_hint(tmp_path):
    x = np.random.default_rng(3).standard_normal((8, 9, 9, 3)).astype(np.float32)
    with pytest.raises(InputError, match="looks NHWC"):
        edgekit.export(prelu_ceil(), eval=x, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()

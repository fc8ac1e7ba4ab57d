"""PyTorch -> TFLite through litert-torch: NCHW modules get NHWC artifacts, int8 has int8 I/O."""

import json

import numpy as np
import pytest
import torch

import edgekit
import edgekit.runtime as ekr
from tests.models import MODELS_FILE, prelu_ceil, two_input_tokens


def test_digits_to_tflite_fp32_int8_dynamic(tmp_path, digits_files, digits_splits):
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=["tflite"], precisions=["int8", "dynamic", "fp16"],
                            out=tmp_path / "b", measure_latency=False)
    arts = {a["id"]: a for a in report.artifacts}
    assert set(arts) == {"tflite-fp32", "tflite-int8", "tflite-dynamic"}
    assert any("tflite fp16 from a torch model: not supported; no artifact made" in w for w in report.warnings)
    assert report.passed and arts["tflite-int8"]["parity"]["accuracy_drop"] <= 1.0
    int8 = arts["tflite-int8"]
    assert int8["inputs"][0]["layout"] == "nhwc" and int8["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert int8["inputs"][0]["source_name"] == "input" and int8["inputs"][0]["dtype"] == "int8"
    assert int8["contents"]["weight_elements_by_dtype"].get("int8", 0) > 20000
    # The device feeds NHWC, by the source's input name, any batch size.
    x_eval = digits_splits[2][0]
    model = ekr.load(tmp_path / "b", artifact="tflite-int8")
    logits = model.predict({"input": x_eval[:6].transpose(0, 2, 3, 1)})
    fp32 = ekr.load(tmp_path / "b", artifact="tflite-fp32")
    assert logits.shape == (6, 10)
    assert (logits.argmax(1) == fp32.predict(x_eval[:6].transpose(0, 2, 3, 1)).argmax(1)).all()
    with pytest.raises(ekr.RuntimeInputError, match="layout nhwc"):
        model.predict(x_eval[:2])
    # Errors name the input as the user knows it (the source's name), not litert-torch's args_0.
    with pytest.raises(ekr.RuntimeInputError, match="input 'input': expected shape") as wrong:
        model.predict(x_eval[:2])
    assert "args_0" not in str(wrong.value)


def test_prelu_ceil_mode_rgb_model_to_tflite(tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 3, 9, 9)).astype(np.float32)
    report = edgekit.export(f"{MODELS_FILE}:prelu_ceil", calib=x[:48], eval=x[48:], targets=["tflite"], int8=True,
                            out=tmp_path / "b", measure_latency=False)
    arts = {a["id"]: a for a in report.artifacts}
    assert arts["tflite-fp32"]["parity"]["max_abs_error"] < 1e-4
    assert arts["tflite-int8"]["parity"]["cosine"] > 0.99
    model = ekr.load(tmp_path / "b", artifact="tflite-fp32")
    with torch.inference_mode():
        ref = prelu_ceil()(torch.from_numpy(x[:3])).numpy()
    np.testing.assert_allclose(model.predict(x[:3].transpose(0, 2, 3, 1)), ref, atol=1e-4)


def test_int64_tokens_and_attention_to_tflite(tmp_path):
    rng = np.random.default_rng(0)
    data = {"tokens": rng.integers(0, 50, (24, 6)).astype(np.int64),
            "features": rng.standard_normal((24, 4)).astype(np.float32)}
    report = edgekit.export(two_input_tokens(), eval=data, targets=["tflite"], out=tmp_path / "b",
                            measure_latency=False)
    assert report.passed
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    # litert-torch narrows int64 to int32; the runtime casts token ids (range-checked).
    assert [i["source_name"] for i in entry["inputs"]] == ["tokens", "features"]
    assert [o.get("source_name", o["name"]) for o in entry["outputs"]] == ["logits", "embedding"]
    out = ekr.load(tmp_path / "b").predict(data)
    assert set(out) == {"logits", "embedding"} and out["logits"].shape == (24, 3)

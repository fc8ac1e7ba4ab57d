"""The README's main job: train the digits sample, export --int8, verify, run through the runtime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_digits_sample_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "samples" / "digits.py"), "--work", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "onnx-int8" in result.stdout and "FAIL" not in result.stdout
    bundle = tmp_path / "digits_bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["id"] == "onnx-int8")
    fp32 = next(a for a in manifest["artifacts"] if a["id"] == "onnx-fp32")
    assert int8["parity"]["reference_accuracy"] > 97.0
    assert int8["parity"]["accuracy_drop"] <= 0.5
    assert int8["size_bytes"] < 0.4 * fp32["size_bytes"]
    ids = {a["id"] for a in manifest["artifacts"]}
    assert {"tflite-int8", "openvino-int8", "openvino-fp32"} <= ids  # --to onnx,tflite,openvino

    verify = subprocess.run([sys.executable, "-m", "edgekit", "verify", str(bundle), "--eval",
                             str(tmp_path / "eval.npz")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr

    import edgekit.runtime as ekr
    data = np.load(tmp_path / "eval.npz")
    model = ekr.load(bundle, precision="int8")
    accuracy = (model.predict(data["x"]).argmax(1) == data["y"]).mean() * 100
    assert abs(accuracy - model.artifact.parity.accuracy) < 1e-9


@pytest.mark.slow
def test_keras_digits_sample_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "samples" / "digits_keras.py"), "--work", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "digits_keras_bundle" / "manifest.json").read_text())
    arts = {a["id"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"}
    for art in ("tflite-int8", "onnx-int8"):
        assert arts[art]["parity"]["reference_accuracy"] > 97.0
        assert arts[art]["parity"]["accuracy_drop"] <= 0.5
    assert arts["openvino-int8"]["parity"]["accuracy_drop"] <= 1.0  # stock NNCF: see the README

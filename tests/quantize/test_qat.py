"""Quantization-aware training before export: the int8 artifacts come from the trained model."""


import numpy as np
import pytest

import edgekit
from edgekit.cli.main import main
from edgekit.config import PruneOptions, QATOptions
from edgekit.errors import ConfigError, ParityError


def _arts(report):
    return {a["id"]: a for a in report.artifacts}


def test_pytorch_qat_int8_artifacts_match_ptq_or_better(torch_qat, digits_files, digits_bundle):
    bundle, report = torch_qat
    arts = _arts(report)
    ptq = _arts(digits_bundle[1])["onnx-int8"]["parity"]["accuracy"]
    for art in ("onnx-int8", "openvino-int8"):
        assert arts[art]["scheme"] == "w8a8-qat" and arts[art]["reference"]["file"] == "reference.qat.npz"
        assert arts[art]["parity"]["accuracy"] >= ptq - 0.5
    # What training learned ships as int8: QDQ with int8 weights in ONNX, FakeQuantize in the IR.
    onnx_int8 = arts["onnx-int8"]["contents"]
    assert onnx_int8["weight_elements_by_dtype"].get("int8", 0) > 20000 and onnx_int8["op_counts"]["DequantizeLinear"]
    assert arts["onnx-int8"]["size_bytes"] < 0.4 * arts["onnx-fp32"]["size_bytes"]
    assert arts["openvino-int8"]["contents"]["op_counts"].get("FakeQuantize", 0) >= 4
    # TFLite comes from a PT2E QAT model of its own (litert-torch converts PT2E graphs, not NNCF's fake
    # quantizers), judged against that model's outputs. digits_bundle's post-training int8 is ONNX's;
    # post-training TFLite int8 of this model measured the same accuracy (97.2 %), as did the float model.
    tflite = arts["tflite-int8"]
    assert tflite["scheme"] == "w8a8-qat" and tflite["reference"]["file"] == "reference.qat-tflite.npz"
    assert tflite["parity"]["passed"] and tflite["inputs"][0]["dtype"] == "int8"
    assert tflite["parity"]["accuracy"] >= max(ptq, report.compression[0]["accuracy"]) - 0.5
    assert tflite["contents"]["weight_elements_by_dtype"].get("int8", 0) > 20000
    assert "float32" not in tflite["contents"]["weight_elements_by_dtype"]
    assert [row["stage"] for row in report.compression] == ["reference (torch)", "QAT (torch)", "QAT (torch, tflite)"]
    # Each QAT model itself is judged against the original model (it was recorded as passed unjudged).
    for qat_row, tool in zip(report.compression[1:], ("nncf", "PT2E")):
        assert qat_row["passed"] and qat_row["gate"]["max_accuracy_drop"] == 1.0 and qat_row["accuracy_drop"] <= 1.0
        assert tool in qat_row["recipe"]["tool"]
    # verify re-checks each artifact against its own reference (its QAT model's for int8).
    assert (bundle / "reference.qat.npz").is_file() and (bundle / "reference.qat-tflite.npz").is_file()
    assert main(["verify", str(bundle), "--eval", str(digits_files["eval"])]) == 0


def test_qat_after_pruning_keeps_the_zeros(tmp_path, digits_files):
    import digits
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=["onnx"], out=tmp_path / "pq", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, train=digits.fit, steps=40), qat=QATOptions(train=digits.fit, steps=40))
    assert [row["stage"] for row in report.compression] == ["reference (torch)", "pruned (torch)", "QAT (torch)"]
    assert report.compression[2]["gate"]["max_accuracy_drop"] == 2.0  # int8's 1 pt + the prune stage's 1 pt
    assert _arts(report)["onnx-int8"]["contents"]["sparsity"] >= 0.49


def test_tf_keras_qat_to_tflite_onnx_and_ir_int8(tf_keras_qat):
    _, report = tf_keras_qat
    arts = _arts(report)
    int8 = arts["tflite-int8"]
    assert int8["scheme"] == "w8a8-qat" and int8["contents"]["weight_elements_by_dtype"].get("int8", 0) > 100
    assert arts["onnx-int8"]["contents"]["op_counts"].get("DequantizeLinear", 0) >= 2
    # The QAT grid is stored exactly (uint8, zero point 128: safe on x86 without VNNI), so that
    # onnxruntime does not re-quantize float weights per tensor (cosine 0.990 before).
    assert arts["onnx-int8"]["contents"]["weight_elements_by_dtype"].get("uint8", 0) >= 16 * 9 + 16 * 10
    assert arts["onnx-int8"]["parity"]["cosine"] > 0.999
    assert arts["openvino-int8"]["contents"]["op_counts"].get("FakeQuantize", 0) >= 2
    assert report.passed
    assert "quantize_model" in report.compression[-1]["recipe"]["scheme"]


def test_qat_needs_a_training_hook(tmp_path, digits_files, capsys):
    """(Keras 3 models have QAT too: tests/quantize/test_qat_keras.py, which also covers what it refuses.)"""
    with pytest.raises(ConfigError, match="training hook"):
        QATOptions(train=None)
    assert main(["export", digits_files["factory"], "--eval", str(digits_files["eval"]), "--out",
                 str(tmp_path / "x"), "--qat"]) == 2
    assert "--qat needs --train" in capsys.readouterr().err


def test_a_qat_model_that_drifts_from_the_original_fails_its_stage(tmp_path, digits_files):
    """A training hook that wrecks the model (here: it trains on shuffled labels) must not ship:
    the QAT stage is judged against the original model, not only its artifacts against the QAT model."""
    import digits
    import torch

    def scramble(model, steps, callbacks):
        (x, y), _, _ = digits.load_splits()
        y = np.random.default_rng(0).permutation(y)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for step in range(steps):
            batch = slice((step * 32) % (len(x) - 32), (step * 32) % (len(x) - 32) + 32)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x[batch])), torch.from_numpy(y[batch])).backward()
            optimizer.step()
            for callback in callbacks:
                callback()
    with pytest.raises(ParityError, match=r"QAT \(torch\): accuracy drop") as failed:
        edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                       eval=digits_files["eval"], targets=["onnx"], out=tmp_path / "bad", measure_latency=False,
                       qat=QATOptions(train=scramble, steps=60))
    assert not failed.value.report.compression[-1]["passed"]

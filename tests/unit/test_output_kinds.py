"""Each output is judged by its kind: top-1 agreement only for class scores, never for a box or an embedding."""

import numpy as np
import pytest
import torch

import edgekit
from edgekit.config import DEFAULT_TOLERANCES, OUTPUT_KINDS, Precision
from edgekit.errors import ConfigError
from edgekit.parity import compare, judge, output_kinds

INT8 = DEFAULT_TOLERANCES[Precision.INT8]
rng = np.random.default_rng(0)


def test_a_box_output_is_not_judged_by_its_argmax():
    boxes = rng.uniform(0, 1, (200, 4)).astype(np.float32)
    nudged = boxes + rng.normal(0, 0.02, boxes.shape).astype(np.float32)  # cosine ~0.999, argmax often flips
    assert (boxes.argmax(1) != nudged.argmax(1)).mean() > 0.03
    result = judge(compare({"boxes": boxes}, {"boxes": nudged}), INT8)
    assert result.passed and "top1_agreement" not in result.per_output["boxes"]
    assert result.per_output["boxes"]["kind"] == "regression"
    assert 0 < result.per_output["boxes"]["cosine_min"] <= result.per_output["boxes"]["cosine"]
    assert result.per_output["boxes"]["relative_error"] > 0
    # Declared as class scores, the same numbers fail on top-1 agreement.
    declared = judge(compare({"boxes": boxes}, {"boxes": nudged}, kinds={"boxes": "classification"}), INT8)
    assert any("top-1 agreement" in f for f in declared.failures)


def test_kinds_are_inferred_conservatively():
    logits = rng.normal(size=(10, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    reference = {"output": logits, "embedding": rng.normal(size=(10, 384)), "probs_like": probs,
                 "class_logits": logits, "mask": rng.normal(size=(10, 8, 8))}
    assert output_kinds(reference) == {"output": "regression", "embedding": "regression",
                                       "probs_like": "classification", "class_logits": "classification",
                                       "mask": "regression"}
    # Labels make the primary output class scores; a declaration wins over everything.
    assert output_kinds(reference, labels=np.zeros(10))["output"] == "classification"
    assert output_kinds(reference, declared={"class_logits": "embedding"})["class_logits"] == "embedding"


def test_the_runtime_schema_knows_the_same_kinds():
    from edgekit.runtime._schema import OUTPUT_KINDS as RUNTIME_KINDS
    assert tuple(RUNTIME_KINDS) == tuple(OUTPUT_KINDS)


class TwoHeads(torch.nn.Module):
    """A detector-shaped model: a box head (4 coordinates) and a score head (2 classes)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU())
        self.boxes = torch.nn.Linear(32, 4)
        self.scores = torch.nn.Linear(32, 2)

    def forward(self, x):
        h = self.body(x)
        return {"boxes": self.boxes(h), "scores": self.scores(h)}


def test_several_heads_are_judged_and_shown_one_by_one(tmp_path):
    x = rng.standard_normal((64, 6)).astype(np.float32)
    report = edgekit.export(TwoHeads().eval(), calib=x, eval=x, targets=["onnx"], int8=True, out=tmp_path / "b",
                            measure_latency=False, output_kinds={"boxes": "detection"})
    int8 = next(a for a in report.artifacts if a["id"] == "onnx-int8")
    assert int8["parity"]["per_output"]["boxes"]["kind"] == "detection"
    assert "top1_agreement" not in int8["parity"]["per_output"]["boxes"]
    assert "top1_agreement" in int8["parity"]["per_output"]["scores"]  # named like class scores
    table = report.table()
    assert "  boxes (detection)" in table and "  scores (classification)" in table
    import json
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["output_kinds"] == {"boxes": "detection", "scores": "classification"}
    from edgekit.verification import verify
    again = verify(tmp_path / "b", x, isolate=False)
    assert "top1_agreement" not in again.artifacts[0]["parity"]["per_output"]["boxes"]
    with pytest.raises(ConfigError, match="model's outputs are"):
        edgekit.export(TwoHeads().eval(), eval=x, out=tmp_path / "c", output_kinds={"box": "regression"})
    with pytest.raises(ConfigError, match="output_kinds"):
        edgekit.export(TwoHeads().eval(), eval=x, out=tmp_path / "d", output_kinds={"boxes": "bbox"})


def test_junit_has_a_case_per_output(tmp_path):
    import xml.etree.ElementTree as ET

    from edgekit.cli.main import main
    x = rng.standard_normal((64, 6)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    edgekit.export(TwoHeads().eval(), eval=x, targets=["onnx"], out=tmp_path / "b", measure_latency=False)
    junit = tmp_path / "j.xml"
    assert main(["verify", str(tmp_path / "b"), "--eval", str(tmp_path / "x.npz"), "--junit", str(junit)]) == 0
    cases = {c.get("name"): c for c in ET.parse(junit).getroot()}
    assert {"onnx-fp32", "onnx-fp32::boxes", "onnx-fp32::scores"} <= set(cases)
    assert "cosine_min" in cases["onnx-fp32::boxes"].find("system-out").text
    assert "top1_agreement" in cases["onnx-fp32::scores"].find("system-out").text
    assert "x86" in cases["onnx-fp32"].find("system-out").text or "arm64" in cases["onnx-fp32"].find("system-out").text
    junit.unlink()
    assert main(["verify", str(tmp_path / "b"), "--eval", str(tmp_path / "x.npz"), "--junit", str(junit),
                 "--tol", "fp32.max_abs_error=0"]) == 1
    cases = {c.get("name"): c for c in ET.parse(junit).getroot()}
    failed = {name for name, case in cases.items() if case.find("failure") is not None}
    assert {"onnx-fp32", "onnx-fp32::boxes"} <= failed

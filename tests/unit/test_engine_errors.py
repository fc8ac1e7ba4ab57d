"""Only the engine's failures are an artifact's verdict: a bug around the engine is raised as one,
in-process and from the isolated child alike (both used to become a parity "runtime error")."""

import json

import numpy as np
import pytest

import edgekit.runtime as ekr
from edgekit.config import DEFAULT_TOLERANCES, Precision
from edgekit.data import load_data, validate
from edgekit.reference import ReferenceOutputs
from edgekit.runtime import _childmain, _model
from edgekit.runtime._child import EXIT_BUG, EXIT_RUN
from edgekit.verification import evaluate


def _judge(digits_bundle, digits_files):
    out, _ = digits_bundle
    manifest = ekr.read_manifest(out)
    entry = manifest.artifact("onnx-int8")
    dataset = validate(load_data(digits_files["eval"], role="eval"), list(manifest.inputs), role="eval")
    reference = ReferenceOutputs.load(out, dict(manifest.reference))
    record = entry.to_dict()
    return lambda: evaluate(record, out / entry.file, dataset, reference, DEFAULT_TOLERANCES[Precision.INT8],
                            list(manifest.inputs), latency=False, isolate=False)


def test_an_engine_failure_fails_the_artifact_and_a_bug_is_raised(digits_bundle, digits_files, monkeypatch):
    judge = _judge(digits_bundle, digits_files)

    def engine_fails(self, inputs, batch, on_batch=None):
        raise ekr.EngineError("onnxruntime: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
    monkeypatch.setattr(_model.Model, "run_batched", engine_fails)
    record = judge()
    assert record["parity"]["passed"] is False and "runtime error: EngineError" in record["parity"]["failures"][0]

    def bug(self, inputs, batch, on_batch=None):  # numpy's error for a shape bug: a ValueError, which was caught as a verdict
        return np.zeros((2, 3)) + np.zeros((4,))
    monkeypatch.setattr(_model.Model, "run_batched", bug)
    with pytest.raises(ValueError, match="broadcast"):
        judge()


@pytest.mark.parametrize("raised, code", [(ekr.EngineError("engine"), EXIT_RUN), (KeyError("a bug"), EXIT_BUG)])
def test_the_child_tells_an_engine_failure_from_a_bug(tmp_path, monkeypatch, raised, code):
    class Loaded:
        def run_batched(self, inputs, batch, on_batch=None):
            raise raised
    monkeypatch.setattr(_model, "load", lambda file, threads=None: Loaded())
    (tmp_path / "request.json").write_text(json.dumps({"entry": None, "inputs": ["x"], "batch": 4}))
    np.savez(tmp_path / "in.npz", a0=np.zeros((1, 4), np.float32))
    answer = tmp_path / "answer.json"
    assert _childmain.main([str(answer), "run", "m.onnx", str(tmp_path / "request.json"), str(tmp_path / "in.npz"),
                            str(tmp_path / "out.npz")]) == code
    said = json.loads(answer.read_text())
    assert ("error" in said) == (code == EXIT_RUN) and ("KeyError" in said.get("bug", "KeyError"))

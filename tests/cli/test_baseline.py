"""Accuracy regression against a committed baseline, and ``edgekit diff``."""

import json

import pytest

from edgekit import baseline
from edgekit.cli.main import main


def _figures(**int8):
    row = {"passed": True, "metrics": {"accuracy": 99.0, "cosine": 0.9995, "cosine_min": 0.998, "top1_agreement": 1.0},
           "per_output": {}, "size_bytes": 30000, "latency_ms": 0.10, "scheme": "w8a8-static", "recipe": "u8s8",
           "sha256": "a" * 64}
    changed = {**row, "metrics": {**row["metrics"], **{k: v for k, v in int8.items() if k in row["metrics"]}},
               **{k: v for k, v in int8.items() if k not in row["metrics"]}}
    return {"edgekit_baseline": 1, "cpu_profile": "x86-avx2", "artifacts": {"onnx-int8": changed}}


@pytest.mark.parametrize("change, regressed", [
    ({}, None),
    ({"accuracy": 98.6}, None),                           # -0.4 pt: within 0.5
    ({"accuracy": 98.4}, "accuracy 99 -> 98.4"),          # -0.6 pt
    ({"cosine": 0.9980}, "cosine 0.9995 -> 0.998"),
    ({"size_bytes": 33000}, "size_bytes 30000 -> 33000"),  # +10% (5% allowed)
    ({"latency_ms": 0.13}, "latency_ms 0.1 -> 0.13"),      # +30% on the same CPU profile
    ({"accuracy": 99.8, "size_bytes": 20000}, None),       # better is never a regression
])
def test_a_regression_is_a_metric_worse_than_the_baseline_by_more_than_its_tolerance(change, regressed):
    result = baseline.compare(_figures(), _figures(**change))
    assert result.passed == (regressed is None), result.regressions
    if regressed:
        assert any(regressed in line for line in result.regressions), result.regressions


def test_latency_is_compared_only_on_the_same_cpu_profile_and_a_lost_artifact_regresses():
    slower_elsewhere = {**_figures(latency_ms=0.5), "cpu_profile": "arm64"}
    result = baseline.compare(_figures(), slower_elsewhere)
    assert result.passed and any("latency not compared" in n for n in result.notes)
    gone = {**_figures(), "artifacts": {}}
    assert baseline.compare(_figures(), gone).regressions == ["onnx-int8: in the baseline, missing now"]
    changed = baseline.compare(_figures(), _figures(recipe="dynamic int8", sha256="b" * 64))
    assert {(r[1], r[4]) for r in changed.rows} >= {("recipe", "changed"), ("sha256", "changed")}


def test_verify_against_a_committed_baseline_both_ways(digits_bundle, digits_files, tmp_path, capsys):
    bundle, golden = digits_bundle[0], tmp_path / "golden.json"
    args = ["verify", str(bundle), "--eval", str(digits_files["eval"]), "--baseline", str(golden)]
    assert main(args + ["--update-baseline", "-q"]) == 0
    written = json.loads(golden.read_text())
    assert set(written["artifacts"]) == {"onnx-fp32", "onnx-int8"}
    assert main(args) == 0                                           # the same bundle: no regression
    assert "same" in capsys.readouterr().out
    # The last release was better (or this one got worse): exit 1 with old -> new.
    int8 = written["artifacts"]["onnx-int8"]["metrics"]
    int8["accuracy"], int8["cosine"] = 100.0, 1.0
    golden.write_text(json.dumps(written))
    assert main(args) == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["onnx-int8", "accuracy", "100"] == rows[[r[:2] for r in rows].index(["onnx-int8", "accuracy"])][:3]
    assert ["onnx-int8", "accuracy"] in [r[:2] for r in rows if r[-1:] == ["regression"]]
    assert main(args + ["--baseline-tol", "accuracy=5", "--baseline-tol", "cosine=0.01"]) == 0


def test_diff_compares_bundles_reports_and_baselines(digits_bundle, openvino_bundle, tmp_path, capsys):
    assert main(["diff", str(digits_bundle[0]), str(digits_bundle[0] / "report.json")]) == 0
    capsys.readouterr()
    # openvino_bundle lacks nothing of digits_bundle's ids but has its own files and latencies.
    assert main(["diff", str(openvino_bundle), str(digits_bundle[0]), "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert any(r.startswith("openvino-int8: in the baseline, missing now") for r in shown["regressions"])
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["diff", str(tmp_path / "junk.json"), str(digits_bundle[0])]) == 2


def test_assert_parity_fails_with_the_table_and_writes_baselines_on_request(digits_bundle, digits_files, tmp_path,
                                                                            monkeypatch):
    from edgekit import testing
    golden = tmp_path / "ci" / "golden.json"
    monkeypatch.setitem(testing._OPTIONS, "update", True)       # pytest --edgekit-update-baseline
    testing.assert_parity(digits_bundle[0], digits_files["eval"], baseline=golden, isolate=False)
    assert golden.is_file()
    monkeypatch.setitem(testing._OPTIONS, "update", False)
    testing.assert_parity(digits_bundle[0], digits_files["eval"], baseline=golden, isolate=False)
    written = json.loads(golden.read_text())
    written["artifacts"]["onnx-int8"]["metrics"]["accuracy"] = 100.0  # 99.44 now: worse by more than 0.5 pt
    golden.write_text(json.dumps(written))
    with pytest.raises(AssertionError, match=r"(?s)regressed against the baseline.*onnx-int8: accuracy 100 ->.*verdict"):
        testing.assert_parity(digits_bundle[0], digits_files["eval"], baseline=golden, isolate=False)
    with pytest.raises(AssertionError, match=r"(?s)edgekit parity failed.*artifact.*onnx-int8.*FAIL"):
        testing.assert_parity(digits_bundle[0], digits_files["eval"], tolerances=None, isolate=False,
                              overrides=["int8.min_cosine=1"])

"""On the device, with the runtime alone: the golden self-test and the benchmark, through
``python -m edgekit.runtime`` (slim installs emulated by making the other engines unimportable)
and ``edgekit selftest`` / ``edgekit bench``."""

import json
import subprocess
import sys

import numpy as np
import pytest

import edgekit.runtime as ekr
from edgekit.cli.main import main

FRAMEWORKS = ("torch", "tensorflow", "onnx", "openvino", "keras", "tf_keras")


def _runtime_only(args, blocked=()):
    """``python -m edgekit.runtime ARGS`` with the frameworks (and ``blocked`` engines) unimportable;
    returns (exit code, stdout, the edgekit modules the run imported)."""
    code = ("import sys, json, runpy\n"
            f"for name in {list(FRAMEWORKS + tuple(blocked))!r}: sys.modules[name] = None\n"
            f"sys.argv = ['edgekit.runtime', *{list(args)!r}]\n"
            "try:\n"
            "    runpy.run_module('edgekit.runtime', run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    code = exit.code\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('edgekit') and not m.startswith('edgekit.runtime'))\n"
            "print('@@' + json.dumps({'code': code, 'edgekit': loaded}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    out, _, tail = result.stdout.rpartition("@@")
    info = json.loads(tail)
    return info["code"], out, [m for m in info["edgekit"] if m not in ("edgekit", "edgekit._version")]


@pytest.fixture(scope="module")
def two_format_bundle(tmp_path_factory, digits_files):
    import edgekit
    out = tmp_path_factory.mktemp("device") / "b"
    edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                   eval=digits_files["eval"], targets=["onnx", "tflite"], int8=True, out=out, measure_latency=False)
    return out


def test_golden_samples_are_stored_small_and_each_artifact_passes_its_selftest(two_format_bundle):
    manifest = ekr.read_manifest(two_format_bundle)
    assert manifest.golden["samples"] == 16 and (two_format_bundle / "golden.npz").stat().st_size < 1 << 20
    for entry in manifest.artifacts:
        assert entry.golden["output"]["cosine"] > 0.99, entry.id  # what the export measured on them
        result = ekr.load(two_format_bundle, artifact=entry.id).selftest()
        assert result.passed and result.verified_here and result.samples == 16, result


def test_selftest_fails_when_this_cpu_computes_the_artifact_worse(two_format_bundle, monkeypatch):
    model = ekr.load(two_format_bundle, artifact="onnx-int8")
    run = model.run
    rng = np.random.default_rng(0)
    monkeypatch.setattr(model, "run", lambda x: {k: v + rng.normal(0, 2 * v.std(), v.shape)
                                                 for k, v in run(x).items()})
    result = model.selftest()
    assert not result.passed and any(f.startswith("output: cosine") for f in result.failures), result.failures


@pytest.mark.parametrize("engines_missing, runs, skipped", [
    (("ai_edge_litert", "tflite_runtime"), ["onnx-fp32", "onnx-int8"], ["tflite-fp32", "tflite-int8"]),
    (("onnxruntime",), ["tflite-fp32", "tflite-int8"], ["onnx-fp32", "onnx-int8"])])
def test_selftest_and_bench_on_a_slim_install(two_format_bundle, engines_missing, runs, skipped):
    code, out, imported = _runtime_only(["selftest", str(two_format_bundle), "--json"], blocked=engines_missing)
    report = json.loads(out)
    assert code == 0 and imported == [], (code, out, imported)
    assert [r["artifact"] for r in report["results"]] == runs and all(r["passed"] for r in report["results"])
    assert [s["artifact"] for s in report["skipped"]] == skipped
    code, out, imported = _runtime_only(["bench", str(two_format_bundle), "--json", "--runs", "20", "--batch", "4"],
                                        blocked=engines_missing)
    assert code == 0 and imported == [], (code, out)
    bench = json.loads(out)
    assert [r["artifact"] for r in bench["results"]] == runs
    for row in bench["results"]:
        b1 = row["batch1"]
        assert 0 < b1["p50_ms"] <= b1["p90_ms"] <= b1["p99_ms"] and row["load_ms"] > 0 and row["peak_rss_mb"] > 10
        assert row["batch4"]["samples_per_s"] > 0


def test_edgekit_selftest_and_bench_commands(two_format_bundle, capsys):
    assert main(["selftest", str(two_format_bundle)]) == 0
    assert capsys.readouterr().out.count("PASS") == 4
    assert main(["bench", str(two_format_bundle), "--artifact", "onnx-fp32", "--runs", "20", "--json"]) == 0
    assert [r["artifact"] for r in json.loads(capsys.readouterr().out)["results"]] == ["onnx-fp32"]
    assert main(["selftest", str(two_format_bundle), "--artifact", "onnx-int9"]) == 2


def test_bench_warns_when_int8_is_slower_than_fp32_here():
    from edgekit.runtime._tools import _slower_int8
    rows = [{"artifact": "onnx-fp32", "format": "onnx", "precision": "fp32", "batch1": {"p50_ms": 1.0}},
            {"artifact": "onnx-int8", "format": "onnx", "precision": "int8", "batch1": {"p50_ms": 1.3}},
            {"artifact": "tflite-int8", "format": "tflite", "precision": "int8", "batch1": {"p50_ms": 9.0}}]
    assert _slower_int8(rows) == ["onnx-int8 is slower than onnx-fp32 on this CPU (1.300 vs 1.000 ms per batch-1 call)"]


def test_the_cli_declares_the_device_options_without_importing_numpy():
    """``edgekit --help`` declares selftest/bench from the runtime's own options module, and the
    runtime package loads its parts (and numpy) only when one is used."""
    probe = ("import sys\nfrom edgekit.cli.main import build_parser\nbuild_parser()\nimport edgekit.runtime as ekr\n"
             "before = 'numpy' in sys.modules\nekr.load\nprint(before, 'numpy' in sys.modules, 'load' in dir(ekr))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "True"]

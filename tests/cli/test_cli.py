"""Commands end to end through the entry point: outputs, exit codes, no partial bundles."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgekit.cli.main import main


def _export_args(files, out, *extra):
    return ["export", files["factory"], "--weights", str(files["weights"]), "--calib", str(files["calib"]),
            "--eval", str(files["eval"]), "--out", str(out), "--no-latency", *extra]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_export_verify_info_round_trip(tmp_path, digits_files, capsys, monkeypatch):
    out = tmp_path / "bundle"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(_export_args(digits_files, out, "--int8", "--fp16")) == 0
    monkeypatch.undo()
    # On a terminal: a live line with how far the long stages have got, then a line per stage.
    live = terminal.getvalue()
    assert re.search(r"(\d+)/\1 calibration samples", live) and "360/360 eval samples on " in live, live[-3000:]
    assert "\r\033[K[" in live and "] export onnx fp32: " in live
    table = capsys.readouterr().out
    assert "onnx-int8" in table and "PASS" in table and "FAIL" not in table
    assert {p.name for p in out.iterdir()} >= {"manifest.json", "reference.npz", "report.json", "report.md",
                                               "model.onnx", "model.int8.onnx", "model.fp16.onnx"}
    junit = tmp_path / "junit.xml"
    assert main(["verify", str(out), "--eval", str(digits_files["eval"]), "--junit", str(junit)]) == 0
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    # Each case's time is how long its verification took (not a batch-1 latency); its output is JSON.
    for case in suite.iter("testcase"):
        assert float(case.get("time")) > 0.001
        assert "cosine" in json.loads(case.find("system-out").text)
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "Nx1x8x8" in info and "w8a8-static" in info
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["schema_version"] == 1 and info["seed"] == 0
    # The manifest pins what the gate was run on: data hashes, versions, device.
    assert len(info["data"]["calibration_sha256"]) == 64 and info["data"]["eval_samples"] == 360
    assert info["reference"]["device"] == "cpu" and "onnxruntime" in info["environment"]["versions"]


def test_verify_regression_exit_code_and_junit_failure(digits_bundle, digits_files, tmp_path, capsys):
    junit = tmp_path / "j.xml"
    code = main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["eval"]),
                 "--tol", "int8.min_cosine=0.9999999", "--junit", str(junit)])
    assert code == 1
    assert "FAIL onnx-int8" in capsys.readouterr().out
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1"


def test_broken_artifact_fails_the_gate(digits_bundle, digits_files, tmp_path):
    """Zero the int8 weights (as a converter bug that drops them would) and re-sign the manifest."""
    import onnx
    from onnx import numpy_helper
    from edgekit.runtime import sha256_file
    bundle = tmp_path / "b"
    shutil.copytree(digits_bundle[0], bundle)
    model = onnx.load(str(bundle / "model.int8.onnx"))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8:
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(bundle / "model.int8.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        if a["id"] == "onnx-int8":
            a["sha256"] = sha256_file(bundle / "model.int8.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(bundle), "--eval", str(digits_files["eval"]), "--artifact", "onnx-int8"]) == 1
    assert main(["verify", str(bundle), "--eval", str(digits_files["eval"]), "--artifact", "onnx-fp32"]) == 0


def test_verify_usage_errors(digits_bundle, digits_files, tmp_path, capsys):
    assert main(["verify", str(tmp_path), "--eval", str(digits_files["eval"])]) == 2
    assert main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["calib"])]) == 2
    assert "not the data the reference" in capsys.readouterr().err
    # An unknown artifact id is a usage error that lists the bundle's ids, before any work.
    assert main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["eval"]), "--artifact", "x"]) == 2
    assert "its artifacts: onnx-fp32, onnx-int8" in capsys.readouterr().err
    assert main(["verify", str(digits_bundle[0]), "--eval", str(digits_files["eval"]), "--artifact", "onnx-int9"]) == 2
    assert "did you mean 'onnx-int8'" in capsys.readouterr().err
    assert main(["verify"]) == 2


def test_an_unknown_option_shows_the_subcommands_usage_and_the_closest_option(capsys):
    assert main(["export", "m.onnx", "--out", "o", "--int9"]) == 2
    err = capsys.readouterr().err
    assert "usage: edgekit export" in err and "unrecognized arguments: --int9 (did you mean '--int8'?)" in err
    assert main(["verify", "b", "--eval", "e.npz", "--junti", "j.xml"]) == 2
    assert "usage: edgekit verify" in capsys.readouterr().err


def test_a_closed_output_pipe_is_not_an_internal_error(digits_bundle):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "info", str(digits_bundle[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before edgekit writes (as `| head` after its lines)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "internal error" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("mutate, message", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), "NaN/inf"),
    (lambda x: x.transpose(0, 2, 3, 1), "looks NHWC"),
    (lambda x: x[:, :, :6, :], "holds {'input': ('Nx1x6x8'"),
    (lambda x: np.full_like(x, 0.5), "constant"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.inf, x), "NaN/inf"),
    (lambda x: np.full_like(x, np.nan), "NaN/inf"),
    (lambda x: x[:0], "is empty"),
])
def test_bad_calibration_gives_clear_error_and_no_bundle(tmp_path, digits_files, capsys, mutate, message):
    x = np.load(digits_files["calib"])["x"]
    np.savez(tmp_path / "bad.npz", x=mutate(x).astype(np.float32))
    out = tmp_path / "bundle"
    args = _export_args(digits_files, out, "--int8")
    args[args.index("--calib") + 1] = str(tmp_path / "bad.npz")
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


@pytest.mark.parametrize("mutate, fault", [
    (lambda x: x.transpose(0, 2, 3, 1), "the model rejects it: the model rejected the data"),
    (lambda x: x[:, :, :6, :], "holds {'input': ('Nx1x6x8', 'float32')}"),
])
def test_a_bad_eval_file_is_the_one_named(tmp_path, digits_files, capsys, mutate, fault):
    """The model declares no input shapes: they were taken from --eval, and a wrong --eval made the
    error blame the right --calib with a self-contradicting shape. Each file is named with what it
    holds and whether the model runs on it."""
    x = np.load(digits_files["eval"])["x"]
    np.savez(tmp_path / "eval.npz", x=mutate(x).astype(np.float32))
    args = _export_args(digits_files, tmp_path / "bundle", "--int8")
    args[args.index("--eval") + 1] = str(tmp_path / "eval.npz")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"calibration ({digits_files['calib']}) holds {{'input': ('Nx1x8x8', 'float32')}} — the model runs on it" in err
    assert f"eval ({tmp_path / 'eval.npz'}) holds" in err and fault in err


def test_failed_export_keeps_previous_bundle(tmp_path, digits_files, capsys):
    out = tmp_path / "bundle"
    assert main(_export_args(digits_files, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # An impossible tolerance makes the new candidate fail parity: the old bundle must stay as it was.
    assert main(_export_args(digits_files, out, "--int8", "--tol", "int8.min_cosine=1.0")) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    rejected = tmp_path / "bundle.rejected"
    assert (rejected / "report.json").is_file()
    assert json.loads((rejected / "report.json").read_text())["passed"] is False
    assert not list(tmp_path.glob(".bundle.edgekit-*"))


def test_error_inside_export_leaves_nothing(tmp_path, digits_files, monkeypatch):
    import edgekit.quantize.onnx_int8 as q

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(q, "quantize_static", boom, raising=False)
    monkeypatch.setattr("onnxruntime.quantization.quantize_static", boom)
    out = tmp_path / "bundle"
    assert main(_export_args(digits_files, out, "--int8")) == 3
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_kill_during_export_keeps_previous_bundle(tmp_path, digits_files):
    """SIGKILL mid-export: the old bundle stays whole, and the next run clears the leftovers."""
    out = tmp_path / "bundle"
    assert main(_export_args(digits_files, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = [sys.executable, "-m", "edgekit", *_export_args(digits_files, out, "--int8")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Kill once the staging folder exists, i.e. in the middle of writing artifacts.
    seen = False
    for line in proc.stderr:
        if "export onnx fp32" in line:
            seen = any(tmp_path.glob(".bundle.edgekit-tmp-*"))
            break
    proc.kill()
    proc.wait()
    assert seen, "the export was not killed while its staging folder existed"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(_export_args(digits_files, out)) == 0
    assert not list(tmp_path.glob(".bundle.edgekit-*"))


@pytest.mark.parametrize("args, message", [
    (["export", "nope.py:f", "--out", "o"], "does not exist"),
    (["export", "model.unknown", "--out", "o"], "cannot tell which framework"),
    (["export", "x.onnx", "--out", "o", "--to", "coreml"], "coreml"),
    (["export", "x.onnx", "--out", "o", "--tol", "int8.bogus=1"], "--tol"),
])
def test_usage_errors_exit_2(tmp_path, capsys, args, message):
    os.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_cuda_reference_without_cuda_is_a_usage_error(tmp_path, digits_files, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(_export_args(digits_files, tmp_path / "b", "--reference-device", "cuda")) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_symlinked_or_foreign_output_is_refused(tmp_path, digits_files, capsys):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert main(_export_args(digits_files, tmp_path / "link")) == 2
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    assert main(_export_args(digits_files, tmp_path / "docs")) == 2
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_help_is_fast_and_imports_no_framework():
    code = "import sys; from edgekit.cli.main import build_parser; build_parser(); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"torch", "onnx", "onnxruntime", "numpy"} & set(eval(out))
    result = subprocess.run([sys.executable, "-m", "edgekit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "verify" in result.stdout


def test_image_folder_export_and_verify_reuse_the_preprocessing(tmp_path, digits_files, digits_splits, capsys):
    from PIL import Image
    _, _, (x_eval, y_eval) = digits_splits
    root = tmp_path / "images"
    for i, (image, label) in enumerate(zip(x_eval[:60], y_eval[:60])):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "b"
    args = ["export", digits_files["factory"], "--weights", str(digits_files["weights"]), "--eval", str(root),
            "--image-size", "8x8", "--grayscale", "--out", str(out), "--no-latency"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["grayscale"] is True and manifest["labels"][0] == "digit0"
    assert manifest["artifacts"][0]["parity"]["samples"] == 60
    assert manifest["artifacts"][0]["parity"]["accuracy"] > 80
    assert main(["verify", str(out), "--eval", str(root)]) == 0


def test_keras_export_to_tflite_and_onnx_with_int8_io_through_the_cli(tmp_path, keras_digits, capsys):
    out = tmp_path / "kb"
    args = ["export", str(keras_digits["model"]), "--to", "tflite,onnx", "--int8", "--int8-io", "--dynamic-int8",
            "--calib", str(keras_digits["calib"]), "--eval", str(keras_digits["eval"]), "--out", str(out),
            "--no-latency"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "tflite-int8" in captured.out and "onnx-dynamic" in captured.out and "FAIL" not in captured.out
    assert "ONNX QDQ models keep float32 inputs and outputs" in captured.err  # int8 I/O not silently dropped
    manifest = json.loads((out / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["id"] == "tflite-int8")
    assert int8["inputs"][0]["dtype"] == "int8"
    assert main(["verify", str(out), "--eval", str(keras_digits["eval"])]) == 0


def test_all_three_formats_with_accuracy_control_through_the_cli(tmp_path, digits_files, capsys):
    """edgekit export --int8 --to tflite,onnx,openvino --max-drop: every artifact verified, IR in the bundle."""
    out = tmp_path / "b3"
    assert main(_export_args(digits_files, out, "--to", "tflite,onnx,openvino", "--int8", "--max-drop", "0.5",
                             "--model-type", "cnn")) == 0
    captured = capsys.readouterr()
    for art in ("tflite-int8", "onnx-int8", "openvino-int8"):
        assert art in captured.out
    assert "FAIL" not in captured.out
    assert "onnx-int8: accuracy-controlled quantization (max_drop) is OpenVINO's" in captured.err
    assert {"model.xml", "model.bin", "model.int8.xml", "model.int8.bin"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    ov_int8 = next(a for a in manifest["artifacts"] if a["id"] == "openvino-int8")
    assert ov_int8["quantization"]["accuracy_control"]["max_drop"] == 0.5
    assert main(["verify", str(out), "--eval", str(digits_files["eval"])]) == 0
    # The .bin is part of the artifact: a modified weights file is caught like a modified graph.
    (out / "model.int8.bin").write_bytes(b"\0" * (out / "model.int8.bin").stat().st_size)
    assert main(["verify", str(out), "--eval", str(digits_files["eval"])]) != 0
    captured = capsys.readouterr()
    assert "model.int8.bin does not match the sha256" in captured.out + captured.err


def test_bad_model_type_and_metric_are_usage_errors(tmp_path, digits_files, capsys):
    assert main(_export_args(digits_files, tmp_path / "x", "--to", "openvino", "--int8", "--max-drop", "1",
                             "--metric", "nofile.py:fn")) == 2
    assert "nofile.py does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_object_arrays_are_refused_and_too_few_samples_are_a_recorded_warning(tmp_path, digits_files, capsys):
    np.savez(tmp_path / "obj.npz", x=np.array([object(), 1], dtype=object))
    assert main(["export", digits_files["factory"], "--weights", str(digits_files["weights"]), "--calib",
                 str(tmp_path / "obj.npz"), "--eval", str(digits_files["eval"]), "--out", str(tmp_path / "o"),
                 "--int8"]) == 2
    assert "without unpickling" in capsys.readouterr().err and not (tmp_path / "o").exists()
    x = np.load(digits_files["calib"])["x"][:12]
    np.savez(tmp_path / "few.npz", x=x)
    args = ["export", digits_files["factory"], "--weights", str(digits_files["weights"]), "--calib",
            str(tmp_path / "few.npz"), "--eval", str(digits_files["eval"]), "--out", str(tmp_path / "f"), "--int8",
            "--no-latency", "--min-calib-samples", "20"]
    assert main(args) == 0
    report = json.loads((tmp_path / "f" / "report.json").read_text())
    assert any("only 12 calibration samples (minimum 20)" in w for w in report["warnings"])


def test_json_output_reports_failures_too(tmp_path, digits_files, capsys):
    code = main(["export", digits_files["factory"], "--weights", str(tmp_path / "missing.pt"), "--eval",
                 str(digits_files["eval"]), "--out", str(tmp_path / "b"), "--json"])
    assert code == 2
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == {"command": "export", "passed": False, "exit_code": 2,
                      "error": {"type": "InputError", "message": report["error"]["message"]}}
    assert "missing.pt does not exist" in report["error"]["message"]


def test_a_runner_without_an_engine_skips_its_artifacts_unless_required(openvino_bundle, digits_files, tmp_path,
                                                                        monkeypatch, capsys):
    """A slim runner (say only edgekit[onnx]) cannot run IR artifacts: skipped and reported, not a
    regression; --require openvino makes the missing engine an error."""
    import edgekit.runtime as ekr
    real = ekr.backends.backend_for

    def slim(path, backend="auto"):
        if str(path).endswith(".xml"):
            raise ekr.BackendUnavailableError("backend 'openvino' needs the 'openvino' package")
        return real(path, backend)
    monkeypatch.setattr(ekr.backends, "backend_for", slim)
    junit = tmp_path / "j.xml"
    args = ["verify", str(openvino_bundle), "--eval", str(digits_files["eval"]), "--junit", str(junit)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "SKIP" in captured.out and "openvino-int8 not verified here" in captured.err
    suite = ET.parse(junit).getroot()
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert sorted(skipped) == ["openvino-fp32", "openvino-int8"] and suite.get("failures") == "0"
    assert main(args + ["--require", "openvino"]) == 2
    assert "--require openvino" in capsys.readouterr().err
    assert main(args + ["--artifact", "openvino-int8"]) == 4  # nothing could be checked here


def test_verify_judges_with_the_tolerances_the_bundle_recorded(digits_bundle, digits_files, tmp_path, capsys):
    """The export's tolerances are in the manifest; verify used the defaults instead. A bundle whose
    recorded int8 tolerance cannot be met fails verify; --tol overrides what was recorded."""
    bundle = tmp_path / "b"
    shutil.copytree(digits_bundle[0], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["id"] == "onnx-int8")
    assert int8["parity"]["tolerance"]["min_cosine"] == 0.99
    int8["parity"]["tolerance"]["min_cosine"] = 1.0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    args = ["verify", str(bundle), "--eval", str(digits_files["eval"])]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL onnx-int8" in out and "< 1" in out and "Tolerances: recorded in the bundle" in out
    assert main(args + ["--tol", "int8.min_cosine=0.99"]) == 0
    assert "recorded in the bundle, with --tol overrides (onnx-int8)" in capsys.readouterr().out
    assert main(args + ["--tol", "int8.bogus=1"]) == 2


def test_unsupported_cells_are_warnings_found_before_any_work(digits_bundle, digits_files, tmp_path, capsys):
    """An ONNX source with --to onnx,tflite ran seven stages and then exited 2 with a registry tuple.
    The plan is checked against the support table first: a warning and no artifact (--strict: exit 2
    before anything is converted)."""
    onnx_model = str(digits_bundle[0] / "model.onnx")
    args = ["export", onnx_model, "--eval", str(digits_files["eval"]), "--to", "onnx,tflite", "--no-latency"]
    assert main(args + ["--out", str(tmp_path / "b"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in report["artifacts"]] == ["onnx-fp32"]
    assert any("tflite from a onnx model: no converter (from onnx: onnx, openvino); no artifact made" in w
               for w in report["warnings"])
    assert main(args + ["--out", str(tmp_path / "s"), "--strict", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]["message"]
    assert "--strict" in error and "tflite from a onnx model" in error and "('onnx'" not in error
    assert not (tmp_path / "s").exists()

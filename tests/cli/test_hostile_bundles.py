"""Bundles from elsewhere: what they hold is printed and written safely, and hangs/crashes fail cleanly."""

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper

import edgekit
import edgekit.runtime as ekr
from edgekit.cli.main import main

HOSTILE_ID = "onnx\x1b[2J\x1b]0;owned\x07\x00\u202e-int8"


def _rename_artifact(bundle, old, new):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["artifacts"]:
        if entry["id"] == old:
            entry["id"] = new
    if manifest["default_artifact"] == old:
        manifest["default_artifact"] = new
    path.write_text(json.dumps(manifest))


def test_control_characters_from_a_manifest_are_never_echoed_raw(tmp_path, digits_bundle, digits_files, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(digits_bundle[0], bundle)
    _rename_artifact(bundle, "onnx-int8", HOSTILE_ID)
    assert main(["info", str(bundle)]) == 0
    junit = tmp_path / "junit.xml"
    assert main(["verify", str(bundle), "--eval", str(digits_files["eval"]), "--junit", str(junit)]) == 0
    printed = capsys.readouterr()
    for stream in (printed.out, printed.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\x00" not in stream and "\u202e" not in stream
    assert "\\x1b[2J" in printed.out  # shown, escaped
    names = [case.get("name") for case in ET.parse(junit).getroot().iter("testcase")]  # well-formed XML
    assert "onnx\\x1b[2J\\x1b]0;owned\\x07\\x00\u202e-int8" in names  # bidi marks are valid XML


def _loop_model(path, trips):
    """y = x + (a Loop that adds 1 ``trips`` times): with 2^62 trips, a hang in every engine."""
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    acc_in = helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])
    acc_out = helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])
    cond_out = helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body", [i, cond, acc_in], [cond_out, acc_out],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "zero"], ["count"], body=body),
         helper.make_node("Add", ["x", "count"], ["y"])],
        "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[helper.make_tensor("trips", TensorProto.INT64, [], [trips]),
                     helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_hanging_artifact_fails_within_the_time_limit(tmp_path, capsys):
    """An artifact swapped for a graph that never finishes: verify fails that artifact after --timeout,
    writes its JUnit file and exits 1; an export of such a model fails cleanly (no hang, no dead CI job)."""
    x = np.ones((4, 1), np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    bundle = tmp_path / "b"
    edgekit.export(str(_loop_model(tmp_path / "three.onnx", 3)), eval=x, out=bundle, measure_latency=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    _loop_model(bundle / "model.onnx", 2 ** 62)
    manifest["artifacts"][0]["sha256"] = ekr.sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    junit = tmp_path / "junit.xml"
    assert main(["verify", str(bundle), "--eval", str(tmp_path / "x.npz"), "--timeout", "3",
                 "--junit", str(junit)]) == 1
    assert "did not finish within 3 s" in capsys.readouterr().out
    assert ET.parse(junit).getroot().get("failures") == "1"
    with pytest.raises(edgekit.errors.InputError, match="did not finish within 3 s"):
        edgekit.export(str(bundle / "model.onnx"), eval=x, out=tmp_path / "e", timeout=3, measure_latency=False)
    assert not (tmp_path / "e").exists()


def _conv_any_size(path):
    """A 3x3 convolution over an image of any size: a trial run on 1x1 zeros cannot work."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H2", "W2"])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_isolated_loading_takes_relative_paths_and_models_zeros_do_not_fit(tmp_path, monkeypatch):
    _conv_any_size(tmp_path / "conv.onnx")
    monkeypatch.chdir(tmp_path)
    model = ekr.load("conv.onnx", isolate=True)
    assert model.predict(np.ones((1, 1, 5, 5), np.float32)).shape == (1, 1, 3, 3)


def test_tensor_names_that_are_numpy_keywords_survive_the_child(tmp_path):
    """Arrays cross the process boundary by position: names like `file` or `allow_pickle` are data."""
    graph = helper.make_graph([helper.make_node("Add", ["file", "one"], ["allow_pickle"])], "names",
                              [helper.make_tensor_value_info("file", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("allow_pickle", TensorProto.FLOAT, ["N", 2])],
                              initializer=[helper.make_tensor("one", TensorProto.FLOAT, [2], [1.0, 1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "names.onnx")
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    report = edgekit.export(str(tmp_path / "names.onnx"), eval=x, out=tmp_path / "b", measure_latency=False)
    assert report.passed
    np.testing.assert_allclose(ekr.load(tmp_path / "b").predict(x), x + 1)


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "soon"])
def test_the_time_limit_must_be_a_positive_finite_number(tmp_path, value, capsys):
    assert main(["verify", str(tmp_path), "--eval", "x.npz", "--timeout", value]) == 2
    assert "expected a number of seconds > 0" in capsys.readouterr().err

"""The route registry is the one table of what edgekit supports: the README shows it, every entry
resolves, and the stages it plugs together talk through the PreparedModel contract only."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from edgekit.choices import Format, Framework
from edgekit.converters import FORMATS
from edgekit.errors import UnsupportedError
from edgekit.prepared import PreparedModel
from edgekit.routes import FP32, MANIFEST_SCHEMES, QAT, ROUTES, support_matrix

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_support_matrix_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- support-matrix:[^\n]*-->\n(.*?)\n<!-- /support-matrix -->", readme, re.S)
    assert found, "README lost its support-matrix markers"
    assert found.group(1) == support_matrix(), "README support matrix differs from edgekit.routes.support_matrix()"


def test_every_route_resolves_and_declares_what_it_makes():
    entries = ROUTES.entries()
    assert set(Format) == set(FORMATS)
    for (framework, fmt, scheme), route in entries.items():
        assert framework in tuple(Framework) and fmt in FORMATS, route.key
        assert route.is_available(), f"{route.key}: {route.missing()} missing in the test environment"
        assert callable(route.load()), route.key
        assert route.capabilities.manifest_scheme == MANIFEST_SCHEMES[scheme]
        # Every format a framework reaches has its converter, and nothing else exists without one.
        assert (framework, fmt, FP32) in entries, route.key
    assert ROUTES.find("onnx", "tflite", FP32) is None and ROUTES.find("onnx", "onnx", QAT) is None
    with pytest.raises(UnsupportedError, match="onnx/onnx/qat"):
        ROUTES.get(("onnx", "onnx", "qat"))


def test_the_plan_warns_for_each_cell_without_a_route_before_any_work(tmp_path, digits_bundle, digits_files):
    import edgekit
    report = edgekit.export(str(digits_bundle[0] / "model.onnx"), calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=["onnx", "tflite"], fp16=True,
                            out=tmp_path / "b", measure_latency=False)
    assert [a["id"] for a in report.artifacts] == ["onnx-fp32", "onnx-fp16"]
    assert any(w.startswith("tflite from a onnx model: no converter") for w in report.warnings)
    assert not any(stage["stage"].startswith("export tflite") for stage in report.stages)


def _tiny_sources(tmp_path):
    import keras
    import onnx
    import torch
    from onnx import TensorProto, helper

    from edgekit.sources import load_source
    torch_source = load_source(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval())
    inp = keras.Input((4,), name="x")
    tf_source = load_source(keras.Model(inp, keras.layers.Dense(2)(inp)))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    return torch_source, tf_source, load_source(str(tmp_path / "relu.onnx"))


def test_sources_are_prepared_models_frozen_after_the_probe(tmp_path):
    from edgekit.data import Dataset, validate
    for source in _tiny_sources(tmp_path):
        assert isinstance(source, PreparedModel), type(source)
        if source.input_specs is None:
            source.input_specs = source.specs_from_data(Dataset({"x": np.zeros((2, 4), np.float32)}))
        source.probe(validate(Dataset({source.input_specs[0].name: np.zeros((2, 4), np.float32)}),
                              source.input_specs, role="eval"))
        prepared = source.freeze()
        with pytest.raises(AttributeError, match="frozen"):
            prepared.input_specs = ()
        assert isinstance(prepared.input_specs, tuple) and isinstance(prepared.output_names, tuple)
        # A capability of another framework is a clear refusal, not an AttributeError deep inside.
        for method in ("torch_module", "keras_model", "onnx_model"):
            if not method.startswith({"torch": "torch", "tf": "keras", "onnx": "onnx"}[source.framework]):
                with pytest.raises(UnsupportedError, match=f"is a {source.framework} model"):
                    getattr(prepared, method)()


PROTOCOL = {name for name in dir(PreparedModel) if not name.startswith("_")} | set(PreparedModel.__annotations__)


@pytest.mark.parametrize("path", sorted((ROOT / "export").glob("*.py")) + sorted((ROOT / "quantize").glob("*.py")),
                         ids=lambda p: p.name)
def test_converters_and_quantizers_use_only_the_prepared_model_contract(path):
    """No reach-ins (``source._module()``, ``source.native``): what a stage needs of the model, the
    PreparedModel protocol offers."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        prepared = (isinstance(owner, ast.Name) and owner.id in ("source", "qat_source", "qat_model")) or (
            isinstance(owner, ast.Attribute) and owner.attr == "model" and isinstance(owner.value, ast.Name)
            and owner.value.id == "conversion")
        if prepared:
            assert node.attr in PROTOCOL, f"{path.name}:{node.lineno} uses .{node.attr}, not in PreparedModel"

"""The ONNX int8 and fp16 quantizers, judged by what the written files contain."""

import onnx
import pytest

from edgekit.config import QuantizeOptions
from edgekit.data import Dataset
from edgekit.errors import CalibrationError, QuantizationError
from edgekit.converters import ConversionResult
from edgekit.converters.onnx_format import check, describe
from edgekit.routes import ROUTES


@pytest.fixture(scope="module")
def fp32_path(digits_bundle):
    return digits_bundle[0] / "model.onnx"


@pytest.fixture(scope="module")
def conversion(fp32_path):
    return ConversionResult(fp32_path, "test")


@pytest.fixture(scope="module")
def calibration(digits_splits):
    _, (x_cal, _), _ = digits_splits
    return Dataset({"input": x_cal})


def test_int8_file_holds_int8_weights_and_qdq_nodes(tmp_path, fp32_path, conversion, calibration):
    out = tmp_path / "m.int8.onnx"
    result = ROUTES.get(("onnx", "onnx", "int8"))(conversion, out, calibration, QuantizeOptions())
    check(out)
    contents = describe(out)
    weights = contents["weight_elements_by_dtype"]
    assert weights.get("int8", 0) > 20000 and weights.get("float32", 0) < 1000
    assert contents["op_counts"]["QuantizeLinear"] > 0 and contents["op_counts"]["DequantizeLinear"] > 0
    assert result.scheme == "w8a8-static" and result.details["calibration_samples"] == len(calibration)
    assert out.stat().st_size < 0.4 * fp32_path.stat().st_size


def test_keep_fp32_leaves_matching_nodes_in_float(tmp_path, fp32_path, conversion, calibration):
    model = onnx.load(str(fp32_path))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    out = tmp_path / "m.int8.onnx"
    result = ROUTES.get(("onnx", "onnx", "int8"))(conversion, out, calibration,
                                              QuantizeOptions(keep_fp32=(first_conv,)))
    assert result.details["nodes_kept_fp32"] == [first_conv]
    quantized = onnx.load(str(out))
    conv = next(n for n in quantized.graph.node if n.name == first_conv)
    initializers = {i.name: i for i in quantized.graph.initializer}
    assert initializers[conv.input[1]].data_type == onnx.TensorProto.FLOAT
    with pytest.raises(QuantizationError, match="match no ONNX node"):
        ROUTES.get(("onnx", "onnx", "int8"))(conversion, out, calibration, QuantizeOptions(keep_fp32=("nope*",)))


def test_int8_without_calibration_is_refused(tmp_path, conversion):
    with pytest.raises(CalibrationError, match="calib"):
        ROUTES.get(("onnx", "onnx", "int8"))(conversion, tmp_path / "m.onnx", None, QuantizeOptions())


def test_calibration_methods_change_the_ranges(tmp_path, conversion, calibration):
    scales = {}
    for method in ("minmax", "percentile"):
        out = tmp_path / f"{method}.onnx"
        ROUTES.get(("onnx", "onnx", "int8"))(conversion, out, calibration,
                                         QuantizeOptions(calibration_method=method))
        model = onnx.load(str(out))
        scales[method] = sorted(float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer
                                if i.name.endswith("_scale") and not i.dims)
    assert scales["minmax"] != scales["percentile"]


def test_fp16_file_holds_float16_weights_with_float32_io(tmp_path, conversion):
    out = tmp_path / "m.fp16.onnx"
    ROUTES.get(("onnx", "onnx", "fp16"))(conversion, out, None, QuantizeOptions())
    check(out)
    weights = describe(out)["weight_elements_by_dtype"]
    assert weights.get("float16", 0) > 20000 and weights.get("float32", 0) == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_dynamic_int8_quantizes_weights_without_calibration(tmp_path, conversion):
    out = tmp_path / "m.dynamic.onnx"
    result = ROUTES.get(("onnx", "onnx", "dynamic"))(conversion, out, None, QuantizeOptions())
    check(out)
    assert result.scheme == "w8a32-dynamic"
    assert describe(out)["weight_elements_by_dtype"].get("int8", 0) > 20000

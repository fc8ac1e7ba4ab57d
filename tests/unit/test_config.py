import pytest

from edgekit.config import (DEFAULT_TOLERANCES, ExportConfig, Precision, QuantizeOptions, Tolerance,
                            parse_tolerance_overrides)
from edgekit.errors import ConfigError


def test_fp32_is_always_exported_first():
    config = ExportConfig(precisions=("int8",))
    assert config.precisions == (Precision.FP32, Precision.INT8)


def test_targets_accept_comma_string():
    assert ExportConfig(targets="onnx").targets == ("onnx",)


@pytest.mark.parametrize("kwargs, field", [
    ({"precisions": ("int4",)}, "precision"),
    ({"reference_device": "tpu"}, "reference_device"),
    ({"opset": 7}, "opset"),
    ({"targets": ""}, "targets"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ExportConfig(**kwargs)


def test_bad_calibration_method_lists_choices():
    with pytest.raises(ConfigError, match="minmax"):
        QuantizeOptions(calibration_method="kl")


@pytest.mark.parametrize("kwargs", [
    {"min_cosine": 1.5, "max_accuracy_drop": 0, "min_top1_agreement": 1},
    {"min_cosine": 0.9, "max_accuracy_drop": -1, "min_top1_agreement": 1},
    {"min_cosine": 0.9, "max_accuracy_drop": 0, "min_top1_agreement": 2},
    {"min_cosine": float("nan"), "max_accuracy_drop": 0, "min_top1_agreement": 1},
])
def test_tolerance_validation(kwargs):
    with pytest.raises(ConfigError):
        Tolerance(**kwargs)


def test_tolerance_overrides():
    tol = parse_tolerance_overrides(["int8.max_accuracy_drop=0.5", "fp32.max_abs_error=1e-4"])
    assert tol[Precision.INT8].max_accuracy_drop == 0.5
    assert tol[Precision.FP32].max_abs_error == 1e-4
    assert tol[Precision.FP16] == DEFAULT_TOLERANCES[Precision.FP16]


@pytest.mark.parametrize("item", ["int8.bogus=1", "int8=1", "int9.min_cosine=1", "int8.min_cosine=abc"])
def test_bad_tolerance_override(item):
    with pytest.raises(ConfigError):
        parse_tolerance_overrides([item])


def test_export_options_are_given_one_way_and_typos_are_named(tmp_path):
    """config= holds every option: loose options beside it were silently dropped; an unknown keyword
    is an unknown option (with the closest field), and nothing else is relabelled as one."""
    import edgekit
    with pytest.raises(ConfigError, match="also given: int8"):
        edgekit.export("m.onnx", config=ExportConfig(), int8=True, out=tmp_path / "o")
    with pytest.raises(ConfigError, match="also given: seed"):
        edgekit.export("m.onnx", config=ExportConfig(), seed=3, out=tmp_path / "o")
    with pytest.raises(ConfigError, match=r"unknown export option\(s\): sead \(did you mean 'seed'\?\)"):
        edgekit.export("m.onnx", sead=3, out=tmp_path / "o")
    with pytest.raises(ConfigError, match=r"target: got 'onxx'.*did you mean 'onnx'"):
        edgekit.export("m.onnx", targets=["onxx"], out=tmp_path / "o")
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        ExportConfig(reference_device="cudaa")
    assert not (tmp_path / "o").exists()

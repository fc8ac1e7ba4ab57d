"""TensorFlow/Keras sources to TFLite and ONNX through the whole pipeline."""

import json

import numpy as np
import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit.errors import ConfigError, ParityError
from edgekit.sources.tf_source import resolve_tf_device

ALL_TFLITE = ["fp16", "dynamic", "int8", "int16x8"]


def _artifacts(report):
    return {a["id"]: a for a in report.artifacts}


def test_keras_file_to_every_tflite_precision_and_onnx(tmp_path, keras_digits):
    report = edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["tflite", "onnx"], precisions=ALL_TFLITE, out=tmp_path / "b",
                            measure_latency=False)
    arts = _artifacts(report)
    assert set(arts) == {"tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int16x8",
                         "onnx-fp32", "onnx-fp16", "onnx-dynamic", "onnx-int8"}
    assert report.passed
    assert any("onnx int16x8" in w and "not supported" in w for w in report.warnings)
    for art in ("tflite-int8", "onnx-int8"):
        assert arts[art]["parity"]["accuracy_drop"] <= 1.0
        assert arts[art]["parity"]["reference_accuracy"] > 95
    # What the files hold, not what was asked for:
    assert arts["tflite-int8"]["contents"]["weight_elements_by_dtype"].get("int8", 0) > 20000
    assert arts["tflite-fp16"]["contents"]["weight_elements_by_dtype"].get("float16", 0) > 20000
    assert arts["tflite-int16x8"]["contents"]["weight_elements_by_dtype"].get("int8", 0) > 20000
    assert arts["tflite-int8"]["size_bytes"] < 0.4 * arts["tflite-fp32"]["size_bytes"]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"][0] == {"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32", "layout": "nhwc"}
    assert manifest["reference"]["framework"] == "tensorflow"
    model = ekr.load(tmp_path / "b", artifact="tflite-fp32")
    assert model.backend == "tflite" and model.predict(keras_digits["splits"][2][0][:5]).shape == (5, 10)


class _Subclassed:
    """Built lazily so that keras is imported only by the tests that use it."""

    @staticmethod
    def build():
        import keras

        class DigitsNet(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras.layers.Conv2D(16, 3, activation="relu")
                self.flat = keras.layers.Flatten()
                self.hidden = keras.layers.Dense(32, activation="relu")
                self.out = keras.layers.Dense(10)

            def call(self, x):
                return self.out(self.hidden(self.flat(self.conv(x))))

        return DigitsNet()


def test_subclassed_keras_model_with_trained_weights_converts(tmp_path, keras_digits):
    import digits_keras
    import keras
    (x_train, y_train), (x_cal, _), (x_eval, y_eval) = keras_digits["splits"]
    keras.utils.set_random_seed(0)
    model = digits_keras.train(_Subclassed.build(), x_train, y_train, epochs=15)
    report = edgekit.export(model, calib=x_cal, eval=(x_eval, y_eval), targets=["tflite", "onnx"], int8=True,
                            out=tmp_path / "b", measure_latency=False)
    arts = _artifacts(report)
    assert report.passed and arts["tflite-fp32"]["parity"]["reference_accuracy"] > 95
    assert arts["tflite-fp32"]["parity"]["max_abs_error"] < 1e-4
    assert arts["tflite-int8"]["parity"]["accuracy_drop"] <= 1.0


def test_gate_catches_an_artifact_that_lost_its_weights(tmp_path, keras_digits, monkeypatch):
    """Simulate the known failure of concrete-function routes: the artifact holds fresh, untrained weights."""
    import digits_keras
    import tensorflow as tf
    from edgekit.converters import tf_tflite
    fresh = digits_keras.build_model()
    fresh.export(str(tmp_path / "fresh"), format="tf_saved_model", verbose=False)
    monkeypatch.setattr(tf_tflite, "converter",
                        lambda source: tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "fresh")))
    with pytest.raises(ParityError) as info:
        edgekit.export(str(keras_digits["model"]), eval=keras_digits["eval"], targets=["tflite"],
                       out=tmp_path / "b", measure_latency=False)
    assert any("tflite-fp32" in f for f in info.value.report.failures)
    assert not (tmp_path / "b").exists()


def test_int8_io_runs_from_float_data_with_reference_top1(tmp_path, keras_digits):
    report = edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["tflite"], int8=True, quantize=edgekit.config.QuantizeOptions(int8_io=True),
                            out=tmp_path / "b", measure_latency=False)
    int8 = _artifacts(report)["tflite-int8"]
    assert int8["inputs"][0]["dtype"] == "int8" and int8["inputs"][0]["quantization"]["scale"] > 0
    assert int8["outputs"][0]["dtype"] == "int8" and "quantization" in int8["outputs"][0]
    model = ekr.load(tmp_path / "b", precision="int8")
    x_eval, y_eval = keras_digits["splits"][2]
    logits = model.predict(x_eval)
    assert logits.dtype == np.float32
    import keras
    reference = keras.saving.load_model(keras_digits["model"]).predict(x_eval, verbose=0)
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.97


def test_tf_keras_h5_savedmodel_and_factory_sources(tmp_path, keras_digits):
    import tf_keras
    (x_train, y_train), (x_cal, _), (x_eval, y_eval) = keras_digits["splits"]
    tf_keras.utils.set_random_seed(0)
    legacy = tf_keras.Sequential([tf_keras.layers.Conv2D(8, 3, activation="relu", input_shape=(8, 8, 1)),
                                  tf_keras.layers.Flatten(), tf_keras.layers.Dense(10)])
    legacy.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    legacy.fit(x_train, y_train, epochs=3, verbose=0)
    legacy.save(tmp_path / "legacy.h5")
    report = edgekit.export(str(tmp_path / "legacy.h5"), calib=x_cal, eval=(x_eval, y_eval), targets=["tflite"],
                            int8=True, out=tmp_path / "h5", measure_latency=False)
    assert report.passed and report.reference["versions"]["tf_keras"]

    import tensorflow as tf
    legacy_model = tf_keras.models.load_model(tmp_path / "legacy.h5")
    tf.saved_model.save(legacy_model, str(tmp_path / "sm"))
    report = edgekit.export(str(tmp_path / "sm"), eval=(x_eval, y_eval), targets=["tflite", "onnx"],
                            out=tmp_path / "smb", measure_latency=False)
    assert report.passed and report.source["framework"] == "tf"

    report = edgekit.export(keras_digits["factory"], weights=keras_digits["weights"], eval=keras_digits["eval"],
                            targets=["tflite"], out=tmp_path / "factory", measure_latency=False)
    assert _artifacts(report)["tflite-fp32"]["parity"]["accuracy"] > 95


def test_nchw_data_for_a_keras_model_is_refused(tmp_path, keras_digits):
    x = keras_digits["splits"][2][0].transpose(0, 3, 1, 2)
    with pytest.raises(edgekit.errors.InputError, match="looks NCHW"):
        edgekit.export(str(keras_digits["model"]), eval=x, targets=["tflite"], out=tmp_path / "b")


def test_tf_reference_device_resolution():
    assert resolve_tf_device("auto", []) == "cpu"
    assert resolve_tf_device("auto", ["GPU:0"]) == "cuda"
    with pytest.raises(ConfigError, match="no GPU"):
        resolve_tf_device("cuda", [])


def test_keras_exact_gelu_converts_to_onnx(tmp_path):
    """Keras' exact GELU (transformer blocks' default) computes with Erfc, which tf2onnx has no
    handler for: the ONNX file failed its check ("No Op registered for Erfc")."""
    import keras
    inp = keras.Input((8,), name="x")
    model = keras.Model(inp, keras.layers.Dense(4, activation="gelu")(inp))
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    report = edgekit.export(model, eval=x, targets=["onnx"], out=tmp_path / "b", measure_latency=False)
    assert report.passed and report.artifacts[0]["contents"]["op_counts"].get("Erf", 0) == 1

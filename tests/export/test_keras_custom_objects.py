"""Saved Keras models with their own classes: ``--custom-objects FILE.py`` names the code that defines
them; loading stays in safe mode, and a missing class is named with the flag that fixes it."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import ConfigError, InputError, UserCodeError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

KERAS3_CLASSES = '''
import keras


class Scale(keras.layers.Layer):
    """A learned per-channel scale, not registered: found by its class name in this file."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return x * self.gamma


@keras.saving.register_keras_serializable(package="edgekit_tests")
class DigitsNet(keras.Model):
    """Subclassed, registered: importing this file is all loading needs."""

    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.conv = keras.layers.Conv2D(16, 3, padding="same", activation="relu")
        self.pool = keras.layers.MaxPooling2D()
        self.flat = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.hidden(self.flat(self.pool(self.conv(x)))))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def functional():
    inputs = keras.Input((8, 8, 1))
    hidden = Scale()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(hidden)))
'''

TF_KERAS_CLASSES = '''
import tf_keras


class Offset(tf_keras.layers.Layer):
    def build(self, shape):
        self.beta = self.add_weight(shape=(shape[-1],), initializer="zeros", name="beta")

    def call(self, x):
        return x + self.beta


custom_objects = {"Offset": Offset}
'''

# Run in a child: registering DigitsNet in the test process would let later loads find it without
# the flag.
MAKE = '''
import sys
sys.path.insert(0, {samples!r})
import digits_keras, keras, numpy as np, tf_keras
import keras_classes, legacy_classes
(xt, yt), (xc, yc), (xe, ye) = digits_keras.load_splits()
keras.utils.set_random_seed(0)
digits_keras.train(keras_classes.DigitsNet(), xt, yt, epochs=10).save("sub.keras")
digits_keras.train(keras_classes.functional(), xt, yt, epochs=5).save("func.keras")
inputs = tf_keras.Input((8, 8, 1))
hidden = legacy_classes.Offset()(tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs))
tf_keras.Model(inputs, tf_keras.layers.Dense(10)(tf_keras.layers.Flatten()(hidden))).save("legacy.h5")
np.savez("calib.npz", x=xc, y=yc)
np.savez("eval.npz", x=xe, y=ye)
'''


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    work = tmp_path_factory.mktemp("custom_objects")
    (work / "keras_classes.py").write_text(KERAS3_CLASSES)
    (work / "legacy_classes.py").write_text(TF_KERAS_CLASSES)
    (work / "make.py").write_text(textwrap.dedent(MAKE.format(samples=str(SAMPLES))))
    subprocess.run([sys.executable, "make.py"], cwd=work, check=True, capture_output=True, timeout=600)
    return work


def _cli(work, *args):
    return subprocess.run([sys.executable, "-m", "edgekit", "export", *args], cwd=work, capture_output=True,
                          text=True, timeout=900)


def test_a_saved_subclassed_model_exports_to_every_format_with_custom_objects(saved):
    missing = _cli(saved, "sub.keras", "--to", "tflite", "--eval", "eval.npz", "--out", "none")
    assert missing.returncode == 2
    assert "uses the class 'DigitsNet'" in missing.stderr and "--custom-objects FILE.py" in missing.stderr
    assert not (saved / "none").exists()

    done = _cli(saved, "sub.keras", "--custom-objects", "keras_classes.py", "--to", "tflite,onnx,openvino",
                "--int8", "--calib", "calib.npz", "--eval", "eval.npz", "--out", "sub", "--no-latency")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((saved / "sub" / "report.json").read_text())
    arts = {a["id"]: a for a in report["artifacts"]}
    assert set(arts) == {f"{fmt}-{p}" for fmt in ("tflite", "onnx", "openvino") for p in ("fp32", "int8")}
    assert all(a["parity"]["passed"] for a in arts.values())
    assert arts["onnx-fp32"]["parity"]["reference_accuracy"] > 90  # the trained weights, not fresh ones
    assert arts["tflite-fp32"]["parity"]["max_abs_error"] < 1e-4


def test_an_unregistered_layer_is_found_by_class_name_and_a_dict_is_used(saved, tmp_path):
    with pytest.raises(InputError, match=r"uses the class 'Scale'.*--custom-objects"):
        edgekit.export(str(saved / "func.keras"), eval=saved / "eval.npz", targets=["onnx"], out=tmp_path / "x")
    report = edgekit.export(str(saved / "func.keras"), eval=saved / "eval.npz", targets=["onnx"],
                            out=tmp_path / "func", measure_latency=False,
                            custom_objects=[str(saved / "keras_classes.py")])
    assert report.passed
    # tf_keras .h5: the file's `custom_objects` dict, or FILE.py:NAME for that dict.
    for given in (str(saved / "legacy_classes.py"), f"{saved / 'legacy_classes.py'}:custom_objects"):
        out = tmp_path / f"legacy{len(given)}"
        assert edgekit.export(str(saved / "legacy.h5"), eval=saved / "eval.npz", targets=["tflite"], out=out,
                              measure_latency=False, custom_objects=[given]).passed


def test_custom_objects_errors_say_what_was_expected(saved, tmp_path, digits_files):
    (tmp_path / "broken.py").write_text("raise ValueError('boom')\n")
    (tmp_path / "notdict.py").write_text("custom_objects = ['Scale']\n")
    cases = [(tmp_path / "missing.py", InputError, "expected a Python file .*no such file"),
             (saved / "eval.npz", InputError, "expected a Python file"),
             (tmp_path / "broken.py", UserCodeError, "broken.py .*raised ValueError: boom"),
             (tmp_path / "notdict.py", InputError, "custom_objects is a list; expected a dict")]
    for given, error, message in cases:
        with pytest.raises(error, match=message):
            edgekit.export(str(saved / "func.keras"), eval=saved / "eval.npz", targets=["onnx"],
                           out=tmp_path / "x", custom_objects=[str(given)])
    with pytest.raises(ConfigError, match="applies to Keras models .* is a torch model"):
        edgekit.export(digits_files["factory"], weights=digits_files["weights"], eval=digits_files["eval"],
                       targets=["onnx"], out=tmp_path / "x", custom_objects=[str(saved / "keras_classes.py")])
    assert not (tmp_path / "x").exists()

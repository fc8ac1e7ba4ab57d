"""Shared fixtures: tiny models built in code, real digits data, one exported bundle per session."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Exports in the suite verify on this machine's CPU class only (on a VNNI machine the default would
# add an emulated x86-avx2 run of every artifact); tests/e2e/test_emulated_parity.py covers the
# emulated profile, and the demo (make demo) runs with the real default.
os.environ.setdefault("EDGEKIT_TARGET_CPU", "host")

MODELS_PY = Path(__file__).with_name("models.py")


@pytest.fixture(scope="session")
def digits_splits():
    import digits
    return digits.load_splits()


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory, digits_splits):
    """weights.pt (a digits CNN trained for a few epochs), calib.npz, eval.npz."""
    import digits
    import torch
    work = tmp_path_factory.mktemp("digits")
    (x_train, y_train), (x_cal, y_cal), (x_eval, y_eval) = digits_splits
    torch.manual_seed(0)
    model = digits.train(digits.build_model(), x_train, y_train, epochs=8)
    torch.save(model.state_dict(), work / "weights.pt")
    np.savez(work / "calib.npz", x=x_cal, y=y_cal)
    np.savez(work / "eval.npz", x=x_eval, y=y_eval)
    return {"dir": work, "weights": work / "weights.pt", "calib": work / "calib.npz",
            "eval": work / "eval.npz", "factory": f"{ROOT / 'samples' / 'digits.py'}:build_model"}


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory, digits_files):
    """One fp32 + int8 ONNX bundle of the digits model, exported through the Python API."""
    import edgekit
    out = tmp_path_factory.mktemp("bundles") / "digits"
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"],
                            calib=digits_files["calib"], eval=digits_files["eval"], int8=True, out=out)
    return out, report


@pytest.fixture(scope="session")
def keras_digits(tmp_path_factory):
    """A Keras 3 digits CNN trained for a few epochs, saved as .keras, with NHWC calib/eval files."""
    import digits_keras
    import keras
    work = tmp_path_factory.mktemp("keras_digits")
    (x_train, y_train), (x_cal, y_cal), (x_eval, y_eval) = digits_keras.load_splits()
    keras.utils.set_random_seed(0)
    model = digits_keras.train(digits_keras.build_model(), x_train, y_train, epochs=12)
    model.save(work / "digits.keras")
    model.save_weights(work / "digits.weights.h5")
    np.savez(work / "calib.npz", x=x_cal, y=y_cal)
    np.savez(work / "eval.npz", x=x_eval, y=y_eval)
    return {"dir": work, "model": work / "digits.keras", "weights": work / "digits.weights.h5",
            "calib": work / "calib.npz", "eval": work / "eval.npz", "splits": digits_keras.load_splits(),
            "factory": f"{ROOT / 'samples' / 'digits_keras.py'}:build_model"}


@pytest.fixture(scope="session")
def keras_bundle(tmp_path_factory, keras_digits):
    """TFLite fp32 + int8 bundle of the Keras digits model, exported through the CLI code path."""
    import edgekit
    out = tmp_path_factory.mktemp("bundles") / "keras_digits"
    edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                   targets=["tflite"], int8=True, out=out)
    return out


@pytest.fixture(scope="session")
def openvino_bundle(tmp_path_factory, digits_files):
    """OpenVINO IR + ONNX, fp32 + int8, of the PyTorch digits model."""
    import edgekit
    out = tmp_path_factory.mktemp("bundles") / "digits_ov"
    edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                   eval=digits_files["eval"], targets=["openvino", "onnx"], int8=True, out=out)
    return out


@pytest.fixture(scope="session")
def torch_qat(tmp_path_factory, digits_files):
    """QAT of the PyTorch digits model, int8 for every format asked (NNCF's QAT model for ONNX and IR,
    a PT2E one for TFLite)."""
    import digits

    import edgekit
    from edgekit.config import QATOptions
    out = tmp_path_factory.mktemp("bundles") / "torch_qat"
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=["onnx", "openvino", "tflite"], out=out,
                            qat=QATOptions(train=digits.fit, steps=60), measure_latency=False)
    return out, report


@pytest.fixture(scope="session")
def tf_keras_qat(tmp_path_factory, keras_digits):
    """QAT (TF-MOT) of a tf_keras digits CNN, int8 for TFLite, ONNX and IR."""
    import digits_keras
    import tf_keras

    import edgekit
    from edgekit.config import QATOptions
    layers = tf_keras.layers
    inp = layers.Input((8, 8, 1), name="image")
    hidden = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    model = tf_keras.Model(inp, layers.Dense(10)(layers.GlobalAveragePooling2D()(hidden)))
    digits_keras.fit(model, 1500)  # trained on: QAT of an unconverged model moves it (-3.9 pt after 300 steps)
    out = tmp_path_factory.mktemp("bundles") / "tf_keras_qat"
    report = edgekit.export(model, calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["tflite", "onnx", "openvino"], out=out, measure_latency=False,
                            qat=QATOptions(train=digits_keras.fit, steps=40))
    return out, report


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray (2 CPUs) started once per test module and stopped after it; edgekit's sweep
    and parallel verification run on it as on any Ray this process started (the embedded start is
    exercised by the subprocess tests)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()

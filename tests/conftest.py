"""Shared fixtures: tiny models built in code, real digits data, one exported bundle per session."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "samples"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

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

"""Fixtures of the sweep tests: plans over the two digits models (the tests' trained CNN and the
self-training MLP of samples/sweep); the local Ray is tests/conftest.py's ``local_ray``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MLP = f"{ROOT / 'samples' / 'sweep' / 'mlp.py'}:build_model"


def models(digits_files, *names) -> list:
    """Plan entries for the CNN (the session's trained digits weights) and the MLP."""
    entries = {"cnn": {"name": "cnn", "model": digits_files["factory"], "weights": str(digits_files["weights"])},
               "mlp": {"name": "mlp", "model": MLP}}
    return [entries[name] for name in names]


def plan(digits_files, names=("cnn", "mlp"), **fields) -> dict:
    """A plan dict: int8 ONNX of the given models, verified natively, data from the session's files."""
    return {"targets": ["onnx"], "precisions": ["int8"], "profiles": ["host"],
            "options": {"calib": str(digits_files["calib"]), "eval": str(digits_files["eval"]), "isolate": False},
            "models": models(digits_files, *names), **fields}

"""A user's repository, as edgekit's pytest plugin sees it: the digits model's accuracy regression
test. pytest loads the plugin by itself once edgekit is installed (the ``pytest11`` entry point).

    pytest samples/ci                                       # compare with the committed golden.json
    pytest samples/ci --edgekit-update-baseline             # a release you trust: write golden.json

The test exports the model once per run (``edgekit_export``), re-runs the gate through
edgekit.runtime, and fails when an artifact fails its tolerance or any figure is worse than the
committed baseline by more than its tolerance (edgekit.baseline). github-workflow.yml runs it in CI.
"""

import sys
from pathlib import Path

import pytest

from edgekit.config import QuantizeOptions
from edgekit.testing import assert_parity

SAMPLES = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SAMPLES))
import digits  # noqa: E402  (the sample's model and data)

MODEL = f"{SAMPLES / 'digits.py'}:build_model"
WEIGHTS = None                      # None: the sample's trained weights (digits.prepare)
EXPORT = dict(targets=["onnx", "tflite"], int8=True, measure_latency=False,
              quantize=QuantizeOptions())
BASELINE = Path(__file__).with_name("golden.json")


@pytest.fixture(scope="session")
def data():
    return digits.prepare()


def test_digits_int8_keeps_its_accuracy(edgekit_export, data):
    bundle = edgekit_export(MODEL, weights=WEIGHTS or data["weights"], calib=data["calib"], eval=data["eval"],
                            **EXPORT)
    # 360 eval samples: one sample is 0.28 points, and training on another CPU can move one or two.
    assert_parity(bundle, data["eval"], baseline=BASELINE, baseline_tol=["accuracy=1.0"])

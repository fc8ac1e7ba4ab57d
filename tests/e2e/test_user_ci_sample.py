"""The user's-repository sample (samples/ci): its accuracy regression test, run by pytest with
edgekit's plugin and the committed baseline, passes as committed and fails when the model or the
recipe is made worse, both by a figure that still passes the gate (the point of a baseline)."""

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ci" / "test_digits_regression.py"


def _run_variant(tmp_path, name, **replace):
    """Run the sample test (a copy, with the given lines replaced) in a fresh pytest; (code, output)."""
    text = SAMPLE.read_text()
    text = text.replace("SAMPLES = Path(__file__).resolve().parents[1]", f"SAMPLES = Path({str(SAMPLE.parents[1])!r})")
    text = text.replace('BASELINE = Path(__file__).with_name("golden.json")', f"BASELINE = Path({str(SAMPLE.with_name('golden.json'))!r})")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "test_sample.py").write_text(text)
    result = subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(folder)], capture_output=True, text=True, cwd=folder)
    return result.returncode, result.stdout


@pytest.mark.slow
def test_the_sample_passes_as_committed_and_fails_when_made_worse(tmp_path, digits_splits):
    import digits
    import torch
    code, out = _run_variant(tmp_path, "as_committed")
    assert code == 0, out[-3000:]
    # A worse recipe: calibrated on one sample. Its int8 still passes the gate (cosine 0.9955 >= 0.99),
    # the baseline catches it (0.9996 then).
    code, out = _run_variant(tmp_path, "worse_recipe", **{
        "quantize=QuantizeOptions())": "quantize=QuantizeOptions(search=False, max_calibration_samples=1))"})
    assert code == 1 and "regressed against the baseline" in out and "onnx-int8: cosine 0.99" in out, out[-3000:]
    # A worse model: trained for one epoch instead of thirty.
    (x_train, y_train), _, _ = digits_splits
    torch.manual_seed(0)
    weak = digits.train(digits.build_model(), x_train, y_train, epochs=1)
    torch.save(weak.state_dict(), tmp_path / "weak.pt")
    code, out = _run_variant(tmp_path, "worse_model", **{"WEIGHTS = None": f"WEIGHTS = {str(tmp_path / 'weak.pt')!r}"})
    assert code == 1 and "onnx-fp32: accuracy 99.4" in out, out[-3000:]

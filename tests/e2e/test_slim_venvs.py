"""The device tools in a venv holding only ``edgekit[onnx]`` or only ``edgekit[tflite]``: what a
device installs. ``edgekit selftest``, ``edgekit bench`` and ``python -m edgekit.runtime`` run the
artifacts whose engine is there, skip the others, and import nothing of edgekit beyond the runtime
(and the CLI's own modules for the ``edgekit`` command)."""

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Everything but the engine and numpy (and what they pull in themselves) must be absent.
FRAMEWORKS = ("torch", "tensorflow", "tf-keras", "keras", "onnx", "openvino", "nncf", "tf2onnx", "litert-torch")
CASES = {"onnx": ("digits_bundle", "onnxruntime"), "tflite": ("keras_bundle", "ai-edge-litert")}


def _slim_venv(where: Path, extra: str) -> Path:
    """A fresh venv with ``edgekit[extra]`` installed from a copy of the source (a build in the
    checkout would leave an egg-info there that shadows the development install's metadata)."""
    source = where / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "samples", "tests", "benchmarks", "build", "*.egg-info", "__pycache__", ".hypothesis"))
    venv.create(where / "venv", with_pip=True)
    python = where / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                              f"{source}[{extra}]"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return python


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(CASES))
def test_device_tools_run_in_a_venv_with_one_engine(extra, tmp_path, request):
    bundle_fixture, engine = CASES[extra]
    bundle = request.getfixturevalue(bundle_fixture)
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    python = _slim_venv(tmp_path, extra)
    installed = {line.split("==")[0].lower() for line in subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout.split()}
    assert engine in installed and "numpy" in installed and not installed & set(FRAMEWORKS), installed
    bin_dir = python.parent

    selftest = subprocess.run([str(bin_dir / "edgekit"), "selftest", str(bundle)], capture_output=True, text=True)
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    assert f"{extra}-fp32" in selftest.stdout and "PASS" in selftest.stdout and "FAIL" not in selftest.stdout

    bench = subprocess.run([str(bin_dir / "edgekit"), "bench", str(bundle), "--json", "--batch", "4"],
                           capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    results = json.loads(bench.stdout)["results"]
    measured = [r for r in results if "batch1" in r]
    assert {r["format"] for r in measured} == {extra} and len(measured) >= 2
    assert all(r["batch1"]["p50_ms"] > 0 and r["peak_rss_mb"] > 0 for r in measured)

    # The runtime alone (``python -m edgekit.runtime``): no edgekit module beyond it is imported.
    probe = ("import runpy, sys\n"
             "sys.argv = ['edgekit.runtime', 'selftest', sys.argv[1]]\n"
             "try:\n    runpy.run_module('edgekit.runtime', run_name='__main__')\n"
             "except SystemExit as exc:\n    code = exc.code\n"
             "print(code, sorted(m for m in sys.modules if m.startswith('edgekit')"
             " and not m.startswith('edgekit.runtime') and m not in ('edgekit', 'edgekit._version')))\n")
    alone = subprocess.run([str(python), "-c", probe, str(bundle)], capture_output=True, text=True)
    assert alone.stdout.strip().splitlines()[-1] == "0 []", alone.stdout + alone.stderr

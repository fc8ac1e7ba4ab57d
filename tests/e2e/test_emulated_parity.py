"""Device-true parity: the digits sample verified on x86-avx2 in an emulated CPU (QEMU user mode).

The suite otherwise verifies on the host's CPU class only (tests/conftest.py); here the emulated
path runs whatever the host is, so a VNNI machine checks the AVX2 kernels it cannot run itself.
qemu-user is installed by .ci/run (EDGEKIT_REQUIRE_QEMU=1 there turns its absence into a failure).
"""

import json
import os
import shutil

import numpy as np
import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit.profiles import plan
from edgekit.verification import verify
from edgekit.runtime._child import run_isolated
from edgekit.runtime._cpu import host_profile


@pytest.fixture(scope="module")
def qemu():
    found = shutil.which("qemu-x86_64")
    if not found:
        message = "qemu-x86_64 not installed (apt-get install qemu-user)"
        if os.environ.get("EDGEKIT_REQUIRE_QEMU"):
            pytest.fail(message)
        pytest.skip(message)
    if host_profile() not in ("x86-avx2", "x86-vnni"):
        pytest.skip("x86 emulation runs this interpreter: needs an x86-64 host")
    return found


@pytest.fixture(scope="module")
def emulated_bundle(tmp_path_factory, digits_files, qemu):
    out = tmp_path_factory.mktemp("emulated") / "bundle"
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=("onnx", "tflite"), int8=True, out=out,
                            target_cpu="x86-avx2", emulation="always", measure_latency=False)
    return out, report


@pytest.mark.slow
def test_sample_passes_parity_in_an_emulated_avx2_cpu(emulated_bundle):
    out, report = emulated_bundle
    assert report.passed, report.failures
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target_cpu"]["verified"] == [
        {"profile": "x86-avx2", "how": "emulated (qemu-x86_64 -cpu Haswell-v4)"}]
    for entry in manifest["artifacts"]:
        assert entry["verified_on"] == [{"profile": "x86-avx2", "how": "emulated (qemu-x86_64 -cpu Haswell-v4)",
                                         "passed": True}], entry["id"]
        assert entry["parity"]["profile"] == "x86-avx2"
    int8 = next(a for a in manifest["artifacts"] if a["id"] == "onnx-int8")
    assert int8["parity"]["accuracy_drop"] <= 1.0 and int8["parity"]["cosine_min"] > 0.9
    assert "Verified on: x86-avx2 (emulated" in (out / "report.md").read_text()


@pytest.mark.slow
def test_verify_reruns_the_recorded_profiles_emulated(emulated_bundle, digits_files):
    out, _ = emulated_bundle
    report = verify(out, digits_files["eval"], emulation="always", artifacts=["onnx-int8"])
    assert report.passed
    assert report.artifacts[0]["verified_on"][0]["how"].startswith("emulated")


@pytest.mark.slow
def test_emulated_avx2_outputs_match_a_native_avx2_cpu(emulated_bundle, digits_files):
    """The emulator's fidelity: on an AVX2 host the emulated run is bit for bit the native one (on a
    VNNI host the two differ by design: that is the point of emulating)."""
    out, _ = emulated_bundle
    (runner,), _ = plan(("x86-avx2",), "always")
    entry = ekr.read_manifest(out).artifact("onnx-int8")
    x = np.load(digits_files["eval"])["x"][:64]
    inputs = {entry.inputs[0].name: x}
    emulated = run_isolated(out / entry.file, inputs, timeout=300, entry=entry.to_dict(), launcher=runner.launcher)
    native = run_isolated(out / entry.file, inputs, timeout=300, entry=entry.to_dict())
    name = next(iter(native))
    assert emulated[name].shape == native[name].shape == (64, 10)
    if host_profile() == "x86-avx2":
        np.testing.assert_array_equal(emulated[name], native[name])


@pytest.mark.slow
def test_sample_passes_parity_on_an_emulated_arm64(tmp_path, digits_files):
    """arm64 under qemu-aarch64 with the sysroot `make arm64-sysroot` builds: the TFLite and ONNX
    int8 artifacts run with their arm64 kernels (XNNPACK, MLAS NEON) and are judged there."""
    runners, missing = plan(("arm64",))
    if not runners:
        if os.environ.get("EDGEKIT_REQUIRE_QEMU"):
            pytest.fail(missing["arm64"])
        pytest.skip(missing["arm64"])
    out = tmp_path / "bundle"
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=("tflite", "onnx"), int8=True, out=out,
                            target_cpu="arm64", measure_latency=False)
    assert report.passed, report.failures
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        (record,) = entry["verified_on"]
        assert record["profile"] == "arm64" and record["how"].startswith("emulated (qemu-aarch64"), entry["id"]
        assert record["passed"]
    int8 = next(a for a in manifest["artifacts"] if a["id"] == "tflite-int8")
    assert int8["parity"]["accuracy_drop"] <= 1.0


@pytest.mark.slow
def test_saturating_8bit_weights_are_caught_on_emulated_avx2_and_the_ladder_moves_on(tmp_path, digits_files, qemu):
    """8-bit weights (no reduce_range) overflow the 16-bit pair sums of onnxruntime's u8*s8 AVX2
    kernels on the digits CNN (cosine 0.954 natively on an AVX2 EPYC): judged on the emulated AVX2
    CPU, whatever this machine is, the first recipe fails there and a later one ships."""
    from edgekit.config import QuantizeOptions
    report = edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                            eval=digits_files["eval"], targets=("onnx",), int8=True, out=tmp_path / "b",
                            target_cpu="x86-avx2", emulation="always", measure_latency=False,
                            quantize=QuantizeOptions(reduce_range=False))
    int8 = next(a for a in report.artifacts if a["id"] == "onnx-int8")
    tried = int8["quantization"]["search"]
    assert not tried[0]["passed"] and tried[0]["cosine"] < 0.99, tried[0]
    assert tried[-1]["passed"] and int8["parity"]["passed"] and report.passed
    assert int8["verified_on"][0]["how"].startswith("emulated (qemu-x86_64")

"""Target CPU profiles: classification of CPUs, the plan of native/emulated/unverified runs, the
manifest records, and what the runtime does with them on a device."""

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit import profiles
from edgekit.config import ExportConfig, parse_tolerance_overrides
from edgekit.errors import ConfigError, ParityError
from edgekit.runtime import _cpu, _model
from edgekit.runtime._child import Launcher
from edgekit.runtime._manifest import select_artifact
from edgekit.verification import evaluate


@pytest.mark.parametrize("machine, flags, profile", [
    ("x86_64", ("avx2", "avx512f", "avx512_vnni"), "x86-vnni"),
    ("x86_64", ("avx2", "avx_vnni"), "x86-vnni"),
    ("x86_64", ("avx2",), "x86-avx2"),
    ("AMD64", ("avx2", "avx512f"), "x86-avx2"),  # AVX-512 without VNNI: the u8*s8 path saturates too
    ("x86_64", (), None),
    ("aarch64", ("asimd", "asimddp"), "arm64"),
    ("armv7l", ("neon",), None),
])
def test_cpus_are_classified_by_their_int8_instructions(machine, flags, profile):
    assert _cpu.classify(machine, flags) == profile


def test_names_resolve_and_unknown_ones_are_config_errors(monkeypatch):
    monkeypatch.setattr(profiles, "host_profile", lambda: "x86-vnni")
    assert profiles.resolve("host,x86-avx2,host") == ("x86-vnni", "x86-avx2")
    assert profiles.resolve(["all"]) == ("x86-avx2", "x86-vnni", "arm64")
    with pytest.raises(ConfigError, match="'x86-avx512'.*expected host, all or one of"):
        profiles.resolve("x86-avx512")
    with pytest.raises(ConfigError, match="expected at least one"):
        profiles.resolve("")
    with pytest.raises(ConfigError, match="target_cpu 'riscv'"):
        ExportConfig(target_cpu="riscv")
    with pytest.raises(ConfigError, match="emulation"):
        ExportConfig(emulation="sometimes")
    monkeypatch.setattr(profiles, "host_profile", lambda: None)
    with pytest.raises(ConfigError, match="belongs to no profile"):
        profiles.resolve("host")


def test_the_default_includes_x86_without_vnni(monkeypatch):
    monkeypatch.delenv("EDGEKIT_TARGET_CPU", raising=False)
    assert "x86-avx2" in ExportConfig().target_cpu and "host" in ExportConfig().target_cpu
    monkeypatch.setenv("EDGEKIT_TARGET_CPU", "arm64, x86-vnni")
    assert ExportConfig().target_cpu == ("arm64", "x86-vnni")


def _host(monkeypatch, profile, machine="x86_64", qemu="/usr/bin/qemu-x86_64"):
    monkeypatch.setattr(profiles, "host_profile", lambda: profile)
    monkeypatch.setattr(profiles.platform, "machine", lambda: machine)
    monkeypatch.setattr(profiles.shutil, "which", lambda name: qemu if name == "qemu-x86_64" else None)
    monkeypatch.delenv("EDGEKIT_QEMU_X86_64", raising=False)
    monkeypatch.delenv(profiles.ARM64_ENV, raising=False)


def test_plan_on_a_vnni_workstation_emulates_avx2_and_reports_the_rest(monkeypatch):
    _host(monkeypatch, "x86-vnni")
    runners, missing = profiles.plan(("x86-vnni", "x86-avx2", "arm64"))
    assert [(r.profile, r.native) for r in runners] == [("x86-vnni", True), ("x86-avx2", False)]
    assert runners[1].launcher.prefix == ("/usr/bin/qemu-x86_64", "-cpu", "Haswell-v4")
    assert set(missing) == {"arm64"} and "qemu-aarch64" in missing["arm64"]
    runners, missing = profiles.plan(("x86-vnni", "x86-avx2"), "never")
    assert [r.profile for r in runners] == ["x86-vnni"] and "emulation is off" in missing["x86-avx2"]


def test_plan_without_qemu_or_for_vnni_says_why(monkeypatch):
    _host(monkeypatch, "x86-avx2", qemu=None)
    runners, missing = profiles.plan(("x86-avx2", "x86-vnni"), "always")
    assert [(r.profile, r.native) for r in runners] == [("x86-avx2", True)]  # no emulator: native
    assert "AVX-VNNI" in missing["x86-vnni"]
    runners, missing = profiles.plan(("x86-vnni",))
    assert runners == () and "x86-vnni" in missing
    _host(monkeypatch, "arm64", machine="aarch64")
    runners, missing = profiles.plan(("x86-avx2",))
    assert runners == () and "x86-64 Python" in missing["x86-avx2"]


def test_an_export_nothing_can_verify_is_refused_before_any_work(monkeypatch, tmp_path):
    _host(monkeypatch, "x86-avx2")
    with pytest.raises(ConfigError, match="none of the target CPU profiles can be verified.*x86-vnni"):
        edgekit.export("nonexistent.py:f", eval=np.zeros((4, 3), np.float32), out=tmp_path / "b",
                       target_cpu="x86-vnni")
    assert not (tmp_path / "b").exists()


def test_an_emulator_that_fails_fails_the_artifact_never_passes_it(digits_bundle, digits_files):
    """A profile whose run did not happen is a failure on that profile, with its reason."""
    out, _ = digits_bundle
    manifest = ekr.read_manifest(out)
    entry = manifest.artifact("onnx-int8").to_dict()
    broken = profiles.Runner("arm64", "emulated (broken)", Launcher(prefix=("false",)))
    from edgekit.data import load_data, validate
    from edgekit.reference import ReferenceOutputs
    specs = list(manifest.inputs)
    dataset = validate(load_data(digits_files["eval"], role="eval"), specs, role="eval")
    reference = ReferenceOutputs.load(out, dict(manifest.reference))
    tolerance = ExportConfig().tolerances[edgekit.config.Precision.INT8]
    evaluate(entry, out / entry["file"], dataset, reference, tolerance, specs, latency=False,
             runners=(profiles.HOST, broken), not_verified={"x86-vnni": "no emulator"})
    assert entry["parity"]["passed"] is False
    assert any("runtime error" in f and "(on arm64, emulated (broken))" in f for f in entry["parity"]["failures"]), entry["parity"]["failures"]
    assert [v["passed"] for v in entry["verified_on"]] == [True, False]
    assert entry["parity"]["profiles"][profiles.HOST.profile]["passed"] is True
    assert entry["not_verified"] == {"x86-vnni": "no emulator"}
    # The manifest's records accept them.
    assert ekr.Manifest.from_dict({**manifest.to_dict(), "artifacts": [entry]}).artifact("onnx-int8").verified_on


def _bundle_copy(digits_bundle, tmp_path, verified):
    out = tmp_path / "b"
    shutil.copytree(digits_bundle[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        entry["verified_on"] = [{"profile": p, "how": "native", "passed": True} for p in verified(entry)]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_the_runtime_warns_on_a_cpu_the_artifact_was_not_verified_on(digits_bundle, tmp_path, monkeypatch):
    out = _bundle_copy(digits_bundle, tmp_path, lambda e: ["arm64"])
    monkeypatch.setattr(_model, "host_profile", lambda: "x86-avx2")
    with pytest.warns(RuntimeWarning, match="verified on \\['arm64'\\].*not verified on"):
        ekr.load(out)
    monkeypatch.setattr(_model, "host_profile", lambda: "arm64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ekr.load(out)


def test_auto_prefers_artifacts_verified_for_this_cpu(digits_bundle, tmp_path, monkeypatch):
    out = _bundle_copy(digits_bundle, tmp_path,
                       lambda e: ["x86-avx2", "arm64"] if e["id"] == "onnx-fp32" else ["x86-avx2"])
    manifest = dataclasses.replace(ekr.read_manifest(out), default_artifact="onnx-int8")
    assert select_artifact(manifest, cpu="x86-avx2").id == "onnx-int8"
    assert select_artifact(manifest, cpu="arm64").id == "onnx-fp32"
    assert select_artifact(manifest, precision="int8", cpu="arm64").id == "onnx-int8"  # asked for: given


def test_allow_partial_ships_what_passed_and_still_fails(tmp_path, digits_files):
    kwargs = dict(weights=digits_files["weights"], calib=digits_files["calib"], eval=digits_files["eval"],
                  int8=True, measure_latency=False,
                  tolerances=parse_tolerance_overrides(["int8.max_abs_error=0.0001"]))
    with pytest.raises(ParityError, match="candidate kept"):
        edgekit.export(digits_files["factory"], out=tmp_path / "strict", **kwargs)
    assert not (tmp_path / "strict").exists()
    with pytest.raises(ParityError, match="bundle written to .* with the 1 artifacts that passed") as info:
        edgekit.export(digits_files["factory"], out=tmp_path / "partial", allow_partial=True, **kwargs)
    assert not info.value.report.passed
    manifest = json.loads((tmp_path / "partial" / "manifest.json").read_text())
    assert [a["id"] for a in manifest["artifacts"]] == ["onnx-fp32"]
    assert manifest["missing_artifacts"][0]["id"] == "onnx-int8"
    assert "max abs error" in " ".join(manifest["missing_artifacts"][0]["failures"])
    assert not list((tmp_path / "partial").glob("model.int8.*"))
    assert ekr.load(tmp_path / "partial").artifact.id == "onnx-fp32"


def test_info_shows_where_each_artifact_was_verified(digits_bundle, tmp_path, capsys):
    from edgekit.cli.main import main
    out = _bundle_copy(digits_bundle, tmp_path, lambda e: ["x86-avx2"])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"][0]["verified_on"].append({"profile": "arm64", "how": "emulated (qemu-aarch64)",
                                                    "passed": True})
    manifest["target_cpu"] = {"requested": ["host", "arm64", "x86-vnni"], "not_verified": {"x86-vnni": "no VNNI"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "verified on" in text and "x86-avx2, arm64*" in text and "emulated CPU" in text
    assert "NOT verified: x86-vnni" in text

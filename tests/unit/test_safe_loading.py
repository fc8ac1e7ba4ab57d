"""Untrusted model files: nothing in them runs, and each refusal says what to do instead."""

import os
import subprocess
import sys

import numpy as np
import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit.errors import InputError


def _evil_checkpoint(path, marker):
    code = f"""
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"0.weight": torch.zeros(2), "evil": Evil()}}, {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("force_env", [False, True])
def test_pickle_payload_in_weights_never_runs(tmp_path, digits_files, force_env, monkeypatch):
    marker = tmp_path / "PWNED"
    _evil_checkpoint(tmp_path / "evil.pt", marker)
    if force_env:  # a user's environment that asks torch for the unsafe default
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(InputError, match="weights_only=True"):
        edgekit.export(digits_files["factory"], weights=tmp_path / "evil.pt", eval=digits_files["eval"],
                       out=tmp_path / "b")
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_pt2_and_torchscript_need_trust(tmp_path, digits_files):
    import torch

    import digits
    scripted = torch.jit.script(digits.build_model().eval())
    scripted.save(str(tmp_path / "m.ts"))
    with pytest.raises(InputError, match="--trust-model"):
        edgekit.export(str(tmp_path / "m.ts"), eval=digits_files["eval"], out=tmp_path / "b")
    report = edgekit.export(str(tmp_path / "m.ts"), eval=digits_files["eval"], out=tmp_path / "b",
                            trust_model=True, measure_latency=False)
    assert report.passed


def test_h5_with_a_lambda_layer_is_refused_before_loading(tmp_path):
    import tf_keras
    inp = tf_keras.Input((4,))
    out = tf_keras.layers.Lambda(lambda x: x * 2)(tf_keras.layers.Dense(3)(inp))
    tf_keras.Model(inp, out).save(tmp_path / "lambda.h5")
    with pytest.raises(InputError, match="Lambda layers"):
        edgekit.export(str(tmp_path / "lambda.h5"), eval=np.zeros((4, 4), np.float32), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_ir_with_truncated_weights_or_a_bad_graph_is_a_clean_error(tmp_path, openvino_bundle):
    import shutil
    for name in ("model.xml", "model.bin"):
        shutil.copy(openvino_bundle / name, tmp_path / name)
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ekr.ModelLoadError, match="truncated or mismatched"):
        ekr.load(tmp_path / "model.xml")
    (tmp_path / "model.bin").write_bytes(data)
    (tmp_path / "model.xml").write_text("<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><x>&b;</x>")
    with pytest.raises(ekr.ModelLoadError, match="not an OpenVINO IR"):
        ekr.load(tmp_path / "model.xml")
    (tmp_path / "model.xml").write_bytes(b"\x00\xff garbage")
    with pytest.raises(ekr.ModelLoadError, match="not a valid OpenVINO IR"):
        ekr.load(tmp_path / "model.xml")
    os.remove(tmp_path / "model.bin")
    with pytest.raises(ekr.ModelLoadError, match="weights file model.bin is missing"):
        ekr.load(tmp_path / "model.xml")

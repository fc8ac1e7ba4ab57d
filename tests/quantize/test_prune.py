"""Pruning before export: masks and schedules, both frameworks, sparsity counted in the artifacts."""

import json

import numpy as np
import pytest

import edgekit
from edgekit.cli.main import main
from edgekit.config import PruneOptions
from edgekit.errors import ConfigError, ParityError
from edgekit.quantize import prune as P


def test_global_masks_prune_exactly_the_requested_count_even_with_ties():
    weights = {"a": np.array([[0.0, 0.0], [1.0, 2.0]]), "b": np.array([[0.0, 3.0], [0.0, 0.0]])}
    masks = P.magnitude_masks(weights, 0.5, "global")
    assert sum(int((~m).sum()) for m in masks.values()) == 4
    assert masks["a"][1].all() and masks["b"][0, 1]  # the largest survive
    layer = P.magnitude_masks({"a": np.arange(8.0).reshape(2, 4), "b": np.arange(4.0).reshape(2, 2)}, 0.5, "layer")
    assert [int((~m).sum()) for m in layer.values()] == [4, 2]


def test_two_of_four_keeps_the_two_largest_of_each_group():
    w = np.random.default_rng(0).standard_normal((6, 8))
    mask = P.n_of_m_mask(w, input_axis=1)
    groups = mask.reshape(6, 2, 4)
    assert (groups.sum(-1) == 2).all()
    kept = np.abs(w).reshape(6, 2, 4)
    assert (np.where(groups, kept, np.inf).min(-1) >= np.where(groups, -np.inf, kept).max(-1)).all()
    assert P.n_of_m_mask(np.ones((3, 9)), input_axis=1) is None


def test_polynomial_schedule_rises_to_the_target_and_budgets_add_up():
    options = PruneOptions(sparsity=0.6, schedule="polynomial", steps=103)
    rounds = P.schedule(options)
    assert rounds == sorted(rounds) and rounds[-1] == pytest.approx(0.6) and len(rounds) == P.PHASES
    assert sum(P.step_budgets(options, len(rounds))) == 103
    assert P.schedule(PruneOptions(sparsity=0.6)) == [0.6]


@pytest.mark.parametrize("bad", [dict(sparsity=1.0), dict(sparsity=0.5, structure="blocks"),
                                 dict(sparsity=0.5, steps=-1), dict(sparsity=0.5, train=3)])
def test_bad_prune_options_are_clear_errors(bad):
    with pytest.raises(ConfigError, match="prune|train"):
        PruneOptions(**bad)


def _onnx_weights(path):
    import onnx
    from onnx import numpy_helper
    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if len(i.dims) >= 2]


def _prune_digits(tmp_path, digits_files, name, **prune):
    import digits
    return edgekit.export(digits_files["factory"], weights=digits_files["weights"], calib=digits_files["calib"],
                          eval=digits_files["eval"], targets=["onnx"], int8=True, out=tmp_path / name,
                          prune=PruneOptions(**{"train": digits.fit, "steps": 60, **prune}), measure_latency=False)


def test_pytorch_unstructured_pruning_reaches_the_sparsity_in_the_artifact(tmp_path, digits_files):
    import torch
    report = _prune_digits(tmp_path, digits_files, "a", sparsity=0.5, schedule="polynomial")
    stages = {row["stage"]: row for row in report.compression}
    pruned = stages["pruned (torch)"]
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01) and pruned["accuracy_drop"] <= 1.0
    assert set(pruned["per_layer"]) == {"0", "3", "7", "11"}
    arts = {a["id"]: a for a in report.artifacts}
    weights = _onnx_weights(tmp_path / "a" / "model.onnx")
    measured = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert measured == pytest.approx(0.5, abs=0.01)  # counted in the file, not the framework model
    assert arts["onnx-fp32"]["contents"]["sparsity"] == pytest.approx(measured)
    assert arts["onnx-int8"]["contents"]["sparsity"] >= 0.49
    assert arts["onnx-fp32"]["gzip_bytes"] < 0.7 * arts["onnx-fp32"]["size_bytes"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [row["stage"] for row in manifest["compression"]] == ["reference (torch)", "pruned (torch)"]
    assert "sparsity" in report.table() and "pruned (torch)" in report.table()
    # The user's weights file and module are untouched; a second run is identical (fixed seed).
    assert not (torch.load(digits_files["weights"], weights_only=True)["0.weight"] == 0).any()
    again = _prune_digits(tmp_path, digits_files, "b", sparsity=0.5, schedule="polynomial")
    assert {a["id"]: a["sha256"] for a in again.artifacts}["onnx-fp32"] == arts["onnx-fp32"]["sha256"]


def test_pytorch_two_of_four_in_the_artifact(tmp_path, digits_files):
    report = _prune_digits(tmp_path, digits_files, "c", sparsity=0.5, structure="2:4")
    assert any("left dense" in w for w in report.warnings)  # the first conv has 9 inputs per output
    checked = 0
    for w in _onnx_weights(tmp_path / "c" / "model.onnx"):
        flat = w.reshape(w.shape[0], -1)
        if w.size > 100 and flat.shape[1] % 4 == 0:
            assert ((flat.reshape(flat.shape[0], -1, 4) == 0).sum(-1) >= 2).all()
            checked += 1
    assert checked >= 2  # the layers 2:4 applies to were found and checked


def test_keras3_pruning_holds_the_masks_through_fine_tuning(tmp_path, keras_digits):
    import digits_keras
    import keras
    model = keras.models.load_model(keras_digits["model"])
    report = edgekit.export(model, calib=keras_digits["calib"], eval=keras_digits["eval"], targets=["tflite"],
                            int8=True, out=tmp_path / "k", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, schedule="polynomial", train=digits_keras.fit, steps=60))
    pruned = report.compression[1]
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01) and pruned["accuracy_drop"] <= 1.0
    assert "constraints" in pruned["recipe"]["method"]
    arts = {a["id"]: a for a in report.artifacts}
    assert arts["tflite-fp32"]["contents"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # The functional model was cloned: the caller's model keeps its weights and has no constraint left.
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    assert all(float((np.asarray(k) == 0).mean()) < 0.01 and k.constraint is None for k in kernels)


def test_tf_keras_pruning_uses_model_optimization(tmp_path, keras_digits):
    import digits_keras
    import tf_keras
    layers = tf_keras.layers
    inp = layers.Input((8, 8, 1), name="image")
    hidden = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    hidden = layers.Conv2D(32, 3, padding="same", activation="relu", name="second_conv")(hidden)
    model = tf_keras.Model(inp, layers.Dense(10)(layers.GlobalAveragePooling2D()(hidden)))
    digits_keras.fit(model, 200)
    report = edgekit.export(model, calib=keras_digits["calib"], eval=keras_digits["eval"], targets=["tflite"],
                            out=tmp_path / "t", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, train=digits_keras.fit, steps=40, max_accuracy_drop=100))
    assert "tensorflow_model_optimization" in report.compression[1]["recipe"]["method"]
    assert report.artifacts[0]["contents"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    # 2:4 through TF-MOT's sparsity_m_by_n: every group of 4 input weights keeps 2.
    report = edgekit.export(model, eval=keras_digits["eval"], targets=["tflite"], out=tmp_path / "t24",
                            measure_latency=False, prune=PruneOptions(sparsity=0.5, structure="2:4",
                                                                      train=digits_keras.fit, steps=40,
                                                                      max_accuracy_drop=100))
    per_layer = report.compression[1]["per_layer"]  # (16 x 9 inputs per output: groups of 4 fit)
    assert report.passed and per_layer["second_conv"]["sparsity"] == 0.5, per_layer


def test_pruning_that_costs_too_much_fails_the_gate(tmp_path, digits_files, capsys):
    out = tmp_path / "g"
    code = main(["export", digits_files["factory"], "--weights", str(digits_files["weights"]),
                 "--eval", str(digits_files["eval"]), "--out", str(out), "--no-latency", "--prune", "0.97"])
    assert code == 1
    captured = capsys.readouterr()
    assert "pruned (torch): accuracy drop" in captured.out + captured.err
    assert not out.exists() and (tmp_path / "g.rejected" / "report.json").exists()


def test_cli_prune_with_training_hook_and_usage_errors(tmp_path, digits_files, digits_bundle, capsys):
    from pathlib import Path
    hook = f"{Path(digits_files['factory'].split(':')[0])}:fit"
    out = tmp_path / "p"
    assert main(["export", digits_files["factory"], "--weights", str(digits_files["weights"]),
                 "--calib", str(digits_files["calib"]), "--eval", str(digits_files["eval"]), "--out", str(out),
                 "--no-latency", "--int8", "--prune", "0.5", "--train", hook, "--train-steps", "40"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["compression"][1]["recipe"]["steps"] == 40
    capsys.readouterr()
    assert main(["export", digits_files["factory"], "--eval", str(digits_files["eval"]), "--out",
                 str(tmp_path / "x"), "--train", hook]) == 2
    assert "need --prune" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="PyTorch or Keras"):
        edgekit.export(str(digits_bundle[0] / "model.onnx"), eval=digits_files["eval"], out=tmp_path / "o",
                       prune=0.5)


def _onnx_parameter_count(path):
    return sum(w.size for w in _onnx_weights(path))


def test_channel_pruning_shrinks_the_exported_graph(tmp_path, digits_files):
    unpruned = edgekit.export(digits_files["factory"], weights=digits_files["weights"], eval=digits_files["eval"],
                              targets=["onnx", "openvino"], out=tmp_path / "full", measure_latency=False)
    report = _prune_digits(tmp_path, digits_files, "ch", sparsity=0.3, structure="channels")
    pruned = report.compression[1]
    assert pruned["per_layer"]["0"]["channels"] == "11/16" and pruned["per_layer"]["7"]["channels"] == "48/64"  # multiple of 8
    assert pruned["accuracy_drop"] <= 1.0
    before = _onnx_parameter_count(tmp_path / "full" / "model.onnx")
    after = _onnx_parameter_count(tmp_path / "ch" / "model.onnx")
    assert after < 0.6 * before  # 30% of filters off two adjacent convs: ~half the weights
    assert pruned["recipe"]["parameters_after"] < 0.6 * pruned["recipe"]["parameters_before"]
    sizes = {a["id"]: a["size_bytes"] for a in unpruned.artifacts}
    assert {a["id"]: a["size_bytes"] for a in report.artifacts}["onnx-fp32"] < 0.6 * sizes["onnx-fp32"]


def test_channel_pruning_through_prelu_flatten_and_past_residuals(tmp_path):
    import torch
    import torch.nn as nn

    from edgekit.quantize.prune_channels import _plan
    from ..models import prelu_ceil

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Conv2d(8, 8, 3, padding=1)
            self.expand = nn.Conv2d(8, 24, 1)
            self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24)
            self.project = nn.Conv2d(24, 8, 1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = x + self.body(x)
            x = x + self.project(torch.relu(self.depthwise(torch.relu(self.expand(x)))))
            return self.head(x.mean((2, 3)))

    plans, skipped = _plan(prelu_ceil())
    assert plans == [("conv", ["act"], "fc", "linear")]
    plans, skipped = _plan(Residual())
    assert [p[0] for p in plans] == ["expand"] and plans[0][1] == ["depthwise"]
    assert set(skipped) == {"stem", "body", "project"}
    rng = np.random.default_rng(0)
    data = rng.standard_normal((24, 3, 9, 9)).astype(np.float32)
    torch.manual_seed(0)
    # Random weights, one-shot, no labels: the unlabelled prune gate (agreement, cosine) would fail it.
    loose = {"max_accuracy_drop": 100, "min_cosine": None}
    report = edgekit.export(prelu_ceil(), eval=data, targets=["onnx"], out=tmp_path / "p", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, structure="channels", **loose))
    assert report.compression[1]["per_layer"]["conv"]["channels"] == "4/8"
    assert report.passed and any("one-shot" in w for w in report.warnings)
    torch.manual_seed(0)
    residual = Residual().eval()
    report = edgekit.export(residual, eval=data, targets=["onnx"], out=tmp_path / "r", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, structure="channels", **loose))
    assert report.compression[1]["per_layer"]["expand"]["channels"] == "12/24"
    assert any("stem: left whole (its output" in w for w in report.warnings)


def test_keras3_two_of_four_and_stage_sizes(tmp_path, keras_digits):
    import keras
    model = keras.models.load_model(keras_digits["model"])
    report = edgekit.export(model, eval=keras_digits["eval"], targets=["tflite"], out=tmp_path / "k24",
                            measure_latency=False, prune=PruneOptions(sparsity=0.5, structure="2:4", max_accuracy_drop=100))
    reference, pruned = report.compression
    assert reference["size_bytes"] == pruned["size_bytes"] > 90_000  # same weights, half of them zero
    assert pruned["per_layer"]["conv2d"]["sparsity"] == 0.0  # 9 inputs per output: left dense
    assert all(v["sparsity"] == 0.5 for k, v in pruned["per_layer"].items() if k != "conv2d")
    assert "gzip" in report.table()


SUBCLASSED = '''
import keras


class Tiny(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(4)

    def call(self, x):
        return self.out(self.hidden(x))


def build():
    model = Tiny()
    model(keras.ops.zeros((1, 8)))
    return model
'''


def test_a_live_subclassed_keras_model_is_never_pruned_in_place(tmp_path):
    """Keras cannot clone a subclassed model without a rebuilding get_config: pruning the caller's own
    object would change it, so that is refused; built by FILE.py:factory, edgekit prunes its own copy."""
    import importlib.util
    (tmp_path / "tiny.py").write_text(SUBCLASSED)
    spec = importlib.util.spec_from_file_location("tiny_subclassed", tmp_path / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    live = module.build()
    before = [w.copy() for w in live.get_weights()]
    data = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="would change the model you passed"):
        edgekit.export(live, eval=data, targets=["tflite"], out=tmp_path / "live", measure_latency=False,
                       prune=PruneOptions(sparsity=0.5, max_accuracy_drop=100, min_cosine=None))
    assert all((a == b).all() for a, b in zip(before, live.get_weights()))
    report = edgekit.export(f"{tmp_path / 'tiny.py'}:build", eval=data, targets=["tflite"], out=tmp_path / "own",
                            measure_latency=False, prune=PruneOptions(sparsity=0.5, max_accuracy_drop=100, min_cosine=None))
    assert report.compression[1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert any("own copy was pruned in place" in n for n in report.compression[1].get("notes", []) + report.warnings)


def test_an_error_in_the_users_own_code_is_named_as_theirs(tmp_path, digits_files, capsys):
    """A training hook or a model factory that raises is the user's error (exit 2, their traceback
    chained), not 'unsupported' nor an edgekit internal error."""
    from edgekit.errors import UserCodeError

    def fit(model, steps, callbacks):
        raise ZeroDivisionError("lr / 0")
    with pytest.raises(UserCodeError, match=r"your train function \(fit\) raised ZeroDivisionError: lr / 0") as err:
        edgekit.export(digits_files["factory"], weights=digits_files["weights"], eval=digits_files["eval"],
                       out=tmp_path / "p", measure_latency=False, prune=PruneOptions(sparsity=0.5, train=fit, steps=5))
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    (tmp_path / "bad.py").write_text("def build():\n    raise KeyError('no such layer')\n")
    assert main(["export", f"{tmp_path / 'bad.py'}:build", "--eval", str(digits_files["eval"]),
                 "--out", str(tmp_path / "b")]) == 2
    assert "the model factory" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_without_labels_the_prune_stage_is_gated_on_agreement_and_cosine(tmp_path):
    """The prune gate checked accuracy only, so without labels it never gated: a one-shot 50% cut of
    an untrained network passed silently. Now the pruned model must agree with the original."""
    from ..models import prelu_ceil
    data = np.random.default_rng(0).standard_normal((24, 3, 9, 9)).astype(np.float32)
    with pytest.raises(ParityError, match=r"pruned \(torch\): output: cosine") as failed:
        edgekit.export(prelu_ceil(), eval=data, targets=["onnx"], out=tmp_path / "p", measure_latency=False,
                       prune=PruneOptions(sparsity=0.5, structure="channels"))
    row = failed.value.report.compression[1]
    assert not row["passed"] and row["gated_by"] == "top-1 agreement and cosine with the original model (no labels)"


def test_one_shot_channel_pruning_leaves_batchnorm_in_eval_mode(tmp_path):
    """The layers channel pruning rebuilds are new modules (training mode by default): without a
    fine-tuning hook nothing switched them back, BatchNorm used batch statistics, and the pruned
    reference disagreed with its own fp32 export (MobileNetV2: cosine 0.53)."""
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():  # running statistics far from a batch's, as after real training
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(4.0)
    model.eval()
    data = np.random.default_rng(0).standard_normal((32, 3, 9, 9)).astype(np.float32)
    report = edgekit.export(model, eval=data, targets=["onnx"], out=tmp_path / "bn", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, structure="channels", max_accuracy_drop=100, min_cosine=None))
    fp32 = next(a for a in report.artifacts if a["id"] == "onnx-fp32")
    assert report.compression[1]["per_layer"]["0"]["channels"] == "8/16"
    assert fp32["parity"]["passed"] and fp32["parity"]["cosine"] > 0.99999

"""Channel pruning of Keras models: the plan read from the layer graph, a rebuilt model that computes
exactly what the original did when the removed filters were already zero, and a pruned, fine-tuned
digits model whose artifacts shrink in every format and pass."""

import numpy as np
import pytest

import edgekit
from edgekit.config import PruneOptions
from edgekit.errors import UnsupportedError
from edgekit.quantize.prune_keras_channels import _plans, _shrink

from .test_prune import _onnx_parameter_count


def _functional(keras):
    """Residual add, BatchNorm, PReLU and depthwise followers, a Flatten before the Dense head."""
    layers = keras.layers
    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.Add()([x, layers.Conv2D(8, 3, padding="same", name="body")(x)])
    e = layers.BatchNormalization(name="bn")(layers.Conv2D(32, 1, name="expand")(x))
    e = layers.DepthwiseConv2D(3, padding="same", name="dw")(layers.PReLU(shared_axes=[1, 2], name="act")(e))
    p = layers.Conv2D(16, 1, name="project")(layers.ReLU()(e))
    return keras.Model(inputs, layers.Dense(4, name="head")(layers.Flatten()(layers.MaxPooling2D()(p))))


def _zero_filters(model, drop_expand, drop_project):
    """Filters whose every effect downstream is zero: removing them must not change the outputs."""
    rng = np.random.default_rng(0)
    kernel, bias = model.get_layer("expand").get_weights()
    kernel[..., drop_expand], bias[drop_expand] = 0, 0
    model.get_layer("expand").set_weights([kernel, bias])
    gamma, beta, mean, var = (rng.uniform(0.5, 2, 32).astype("f4") for _ in range(4))
    beta[drop_expand], mean[drop_expand] = 0, 0  # BatchNorm(0) = 0 on those channels
    model.get_layer("bn").set_weights([gamma, beta, mean, var])
    kernel, bias = model.get_layer("dw").get_weights()
    bias[drop_expand] = 0
    model.get_layer("dw").set_weights([kernel, bias])
    kernel, bias = model.get_layer("project").get_weights()
    kernel[..., drop_project], bias[drop_project] = 0, 0
    model.get_layer("project").set_weights([kernel, bias])


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_the_plan_follows_the_graph_and_the_rebuilt_model_computes_the_same(flavour):
    import importlib
    keras = importlib.import_module(flavour)
    model = _functional(keras)
    plans, skipped = _plans(model)
    assert [(p.producer, p.per_channel, p.consumer, p.flattened) for p in plans] == [
        ("expand", ["bn", "act", "dw"], "project", False), ("project", [], "head", True)]
    assert skipped == {"stem": "its output is used by several layers", "body": "its output joins a residual add"}
    drop_expand, drop_project = np.arange(0, 32, 4), np.array([1, 2, 4, 7, 9, 12, 15])
    _zero_filters(model, drop_expand, drop_project)
    x = np.random.default_rng(1).standard_normal((5, 9, 9, 3)).astype(np.float32)
    before = np.asarray(model(x))
    keeps = {"expand": np.setdiff1d(np.arange(32), drop_expand), "project": np.setdiff1d(np.arange(16), drop_project)}
    smaller = _shrink(model, plans, keeps)
    assert smaller.get_layer("dw").get_weights()[0].shape[2] == 24 and smaller.get_layer("head").input.shape[-1] == 144
    # NHWC flatten: the Dense rows of a removed channel are every 16th, not a block of 16.
    np.testing.assert_allclose(np.asarray(smaller(x)), before, atol=1e-5)
    assert np.asarray(model(x)).tobytes() == before.tobytes()  # the caller's model is untouched


def test_keras3_channel_pruning_shrinks_every_format_and_passes(tmp_path, keras_digits):
    import digits_keras
    report = edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["tflite", "onnx", "openvino"], int8=True, out=tmp_path / "ch",
                            measure_latency=False,
                            prune=PruneOptions(sparsity=0.3, structure="channels", train=digits_keras.fit, steps=150))
    pruned = report.compression[1]
    assert report.passed and pruned["passed"] and pruned["accuracy_drop"] <= 1.0
    assert {k: v["channels"] for k, v in pruned["per_layer"].items()} == {
        "conv2d": "11/16", "conv2d_1": "24/32", "conv2d_2": "48/64"}  # multiples of 8 from 32 channels up
    assert pruned["recipe"]["parameters_after"] < 0.6 * pruned["recipe"]["parameters_before"]
    assert _onnx_parameter_count(tmp_path / "ch" / "model.onnx") < 0.6 * pruned["recipe"]["parameters_before"]
    arts = {a["id"]: a for a in report.artifacts}
    assert len(arts) == 6 and all(a["parity"]["passed"] for a in arts.values())


def test_a_subclassed_keras_model_is_traced_into_its_layers_or_refused(tmp_path, keras_digits):
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.flat, self.head = keras.layers.Conv2D(8, 3), keras.layers.Flatten(), keras.layers.Dense(10)

        def call(self, x):
            return self.head(self.flat(keras.ops.relu(self.conv(x))))

    class Branchy(Net):
        def call(self, x):  # Python control flow on a value: no graph to read
            return self.head(self.flat(self.conv(x if float(keras.ops.max(x)) > 0 else -x)))

    loose = {"max_accuracy_drop": 100, "min_cosine": None}  # random weights, one-shot
    net = Net()
    report = edgekit.export(net, eval=keras_digits["eval"], targets=["onnx"], out=tmp_path / "s", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, structure="channels", **loose))
    assert report.passed and [v["channels"] for v in report.compression[1]["per_layer"].values()] == ["4/8"]
    assert any("subclassed Net was traced" in w for w in report.warnings)
    assert net.conv.kernel.shape[-1] == 8  # the caller's model keeps its layers
    with pytest.raises(UnsupportedError, match="Branchy is subclassed and its call\\(\\) could not be traced"):
        edgekit.export(Branchy(), eval=keras_digits["eval"], targets=["onnx"], out=tmp_path / "b",
                       measure_latency=False, prune=PruneOptions(sparsity=0.5, structure="channels", **loose))
    assert not (tmp_path / "b").exists()

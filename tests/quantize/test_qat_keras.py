"""Quantization-aware training of Keras models: Keras 3 through edgekit's fake quantizers
(edgekit.quantize.qat_keras3), and tf_keras (TF-MOT) whose ONNX int8 holds int8-sized weights."""

import functools

import numpy as np
import pytest

import edgekit
from edgekit.config import PruneOptions, QATOptions
from edgekit.errors import UnsupportedError

FORMATS = ("tflite", "onnx", "openvino")


def _arts(report):
    return {a["id"]: a for a in report.artifacts}


@pytest.fixture(scope="module")
def keras3_ptq(tmp_path_factory, keras_digits):
    """Post-training int8 of the Keras 3 digits CNN in every format: what QAT must match or beat."""
    report = edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=list(FORMATS), int8=True, out=tmp_path_factory.mktemp("bundles") / "k3_ptq",
                            measure_latency=False)
    return _arts(report)


@pytest.fixture(scope="module")
def keras3_qat(tmp_path_factory, keras_digits):
    """QAT of the same model (Conv2D+BatchNormalization+ReLU, Conv2D relu, Dense head), int8 in every format."""
    import digits_keras
    return edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                          targets=list(FORMATS), out=tmp_path_factory.mktemp("bundles") / "k3_qat",
                          measure_latency=False, qat=QATOptions(train=digits_keras.fit, steps=40))


def test_keras3_qat_int8_artifacts_match_ptq_or_better(keras3_qat, keras3_ptq):
    report = keras3_qat
    arts = _arts(report)
    assert report.passed
    for fmt in FORMATS:
        art = arts[f"{fmt}-int8"]
        assert art["scheme"] == "w8a8-qat" and art["reference"]["file"] == "reference.qat.npz"
        assert art["parity"]["cosine"] > 0.999, fmt  # against the QAT model: converted, not re-calibrated
        assert art["parity"]["accuracy"] >= keras3_ptq[f"{fmt}-int8"]["parity"]["accuracy"] - 0.5, fmt
    # Fully integer TFLite: the only float <-> int8 conversions are at the model's input and output.
    tflite = arts["tflite-int8"]["contents"]
    assert tflite["op_counts"].get("QUANTIZE") == 1 and tflite["op_counts"].get("DEQUANTIZE") == 1
    weights = tflite["weight_elements_by_dtype"]
    assert weights.get("int8", 0) > 23000 and "float32" not in weights
    # ONNX: every kernel stored on its trained grid (uint8, zero point 128: the x86-without-VNNI default);
    # what stays float is the biases.
    onnx_int8 = arts["onnx-int8"]["contents"]
    assert onnx_int8["weight_elements_by_dtype"].get("uint8", 0) > 23000
    assert onnx_int8["weight_elements_by_dtype"].get("float32", 0) < 300
    assert onnx_int8["op_counts"].get("QuantizeLinear", 0) >= 5
    assert arts["onnx-int8"]["size_bytes"] < 0.4 * arts["onnx-fp32"]["size_bytes"]
    ir = arts["openvino-int8"]["contents"]
    assert ir["op_counts"].get("FakeQuantize", 0) >= 5 and ir["weight_elements_by_dtype"].get("i8", 0) > 23000
    stages = [row["stage"] for row in report.compression]
    assert stages == ["reference (tf)", "QAT (tf)"] and report.compression[1]["passed"]
    recipe = report.compression[1]["recipe"]
    # The BatchNormalization is folded into the first convolution; the three convolutions and the Dense are quantized.
    assert recipe["folded_batch_norms"] == 1 and recipe["quantized_layers"] == 4 and "keras" in recipe["tool"]


def test_keras3_qat_after_pruning_keeps_the_zeros(tmp_path, keras_digits):
    import digits_keras
    report = edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["tflite", "onnx"], out=tmp_path / "pq", measure_latency=False,
                            prune=PruneOptions(sparsity=0.5, train=digits_keras.fit, steps=40),
                            qat=QATOptions(train=digits_keras.fit, steps=40))
    assert [row["stage"] for row in report.compression] == ["reference (tf)", "pruned (tf)", "QAT (tf)"]
    assert _arts(report)["tflite-int8"]["contents"]["sparsity"] >= 0.49
    # ONNX stores the QAT weights as uint8 with zero point 128: a pruned weight is 128 in the file.
    onnx_int8 = _arts(report)["onnx-int8"]["contents"]
    assert onnx_int8["weight_elements_by_dtype"].get("uint8", 0) > 20000 and onnx_int8["sparsity"] >= 0.49


def _conv_bn_model(keras):
    """Conv2D+BN+ReLU6, DepthwiseConv2D+BN+ReLU, a residual Add, a swish Conv2D and a Dense head,
    its BatchNormalization statistics far from the identity (as after training)."""
    layers = keras.layers
    image = keras.Input((8, 8, 1), name="image")
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same", use_bias=False)(image)))
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
    x = layers.Add()([x, y])
    x = layers.Conv2D(8, 3, padding="same", activation="swish")(x)
    model = keras.Model(image, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 2, gamma), rng.normal(0, 0.5, beta), rng.normal(0, 0.5, mean),
                               rng.uniform(0.2, 3, variance)])
    return model


def test_keras3_clone_folds_batchnorm_fuses_relu_and_computes_the_model():
    """Before training, the QAT clone is the original model up to 8-bit rounding; its batch norms
    are folded away, its ReLUs fused into the quantized convolutions, the swish kept after one."""
    import keras

    from edgekit.quantize import qat_keras3
    model = _conv_bn_model(keras)
    plan = qat_keras3._fusion_plan(qat_keras3._functional(model))
    clone, quantized = qat_keras3._clone(model, plan, keep_zeros=False)
    x = np.random.default_rng(1).normal(size=(64, 8, 8, 1)).astype(np.float32)
    qat_keras3._calibrate(clone, [x])
    assert sorted(op.activation_name for op in quantized) == ["linear", "linear", "relu", "relu6"]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in clone.layers)
    assert any(isinstance(layer, keras.layers.Activation) for layer in clone.layers)  # the swish, after its conv
    expected, got = np.asarray(model(x)), np.asarray(clone(x))
    cosine = (expected * got).sum() / np.linalg.norm(expected) / np.linalg.norm(got)
    assert cosine > 0.999 and not np.allclose(expected, got, atol=1e-6)  # quantized, and still the model


def test_keras3_qat_refuses_a_subclassed_model(tmp_path, keras_digits):
    import digits_keras
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.head = keras.layers.Conv2D(4, 3), keras.layers.Dense(10)

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    model = Net()
    model(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(UnsupportedError, match="Functional and Sequential models .* subclassed model Net"):
        edgekit.export(model, calib=keras_digits["calib"], eval=keras_digits["eval"], targets=["tflite"],
                       out=tmp_path / "k", qat=QATOptions(train=digits_keras.fit, steps=5))
    assert not (tmp_path / "k").exists()


def _tf_keras_separable_cnn():
    """A MobileNet-like tf_keras CNN (Conv2D/DepthwiseConv2D + BatchNormalization + ReLU blocks,
    224k weights) trained on digits: TF-MOT folds each BN into the quantized kernel before tf2onnx."""
    import digits_keras
    import tf_keras
    layers = tf_keras.layers

    def block(x, filters=None):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x) if filters else \
            layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))  # (statistics settle in few steps)

    def pointwise(x, filters):
        return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layers.Conv2D(filters, 1, use_bias=False)(x)))

    image = layers.Input((8, 8, 1), name="image")
    x = pointwise(block(block(image, 32)), 64)
    x = pointwise(block(block(layers.MaxPooling2D(2)(x), 256)), 256)
    model = tf_keras.Model(image, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    (x_train, y_train), _, _ = digits_keras.load_splits()
    return digits_keras.train(model, x_train, y_train, epochs=6)


def test_tf_keras_qat_onnx_is_int8_sized_with_batchnorm_and_depthwise(tmp_path, keras_digits):
    """The depthwise kernels (TF-MOT: one scale per depth multiplier, then a folded BN factor per
    channel) and a convolution after a MaxPool used to stay float: 0.77x the fp32 file (0.275x now)."""
    import digits_keras
    fine_tune = functools.partial(digits_keras.fit, lr=3e-4)  # (fine-tuning a trained model)
    report = edgekit.export(_tf_keras_separable_cnn(), calib=keras_digits["calib"], eval=keras_digits["eval"],
                            targets=["onnx"], out=tmp_path / "b", measure_latency=False,
                            qat=QATOptions(train=fine_tune, steps=40))
    arts = _arts(report)
    int8 = arts["onnx-int8"]
    assert report.passed and int8["scheme"] == "w8a8-qat" and int8["parity"]["cosine"] > 0.999
    assert int8["size_bytes"] <= 0.3 * arts["onnx-fp32"]["size_bytes"]
    weights = int8["contents"]["weight_elements_by_dtype"]
    assert weights.get("uint8", 0) > 220000 and weights.get("float32", 0) < 2000  # (the biases BN folding made)

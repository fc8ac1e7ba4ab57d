"""The template every route of ``edgekit.routes`` must satisfy, run on small models: a route added
to the registry is tested here without a line of test code. Each route's artifact is made through
the public export (the route itself, not a later recipe: ``search=False``, or a one-rung ladder for
the recipe schemes) on a model of the kind the route is for (the digits CNN, or a tiny transformer
encoder), goes through the bundle and ``edgekit.runtime``, passes parity against its source
framework, and the manifest records what the route declares."""

import sys
from pathlib import Path

import pytest

import edgekit
import edgekit.runtime as ekr
from edgekit.config import QuantizeOptions
from edgekit.quantize import recipes
from edgekit.routes import QAT, RECIPE_SCHEMES, ROUTES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "samples"))

ROUTE_KEYS = sorted(ROUTES.entries(), key=lambda key: tuple(map(str, key)))


def _keras_encoder():
    """A tiny Keras attention encoder (random weights): token ids in, a pooled embedding out."""
    import keras
    keras.utils.set_random_seed(0)
    ids = keras.Input((16,), dtype="int64", name="input_ids")
    x = keras.layers.Embedding(100, 32)(ids)
    x = keras.layers.LayerNormalization()(x + keras.layers.MultiHeadAttention(4, 8)(x, x))
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(keras.layers.Dense(64, activation="gelu")(x)))
    return keras.Model(ids, keras.layers.GlobalAveragePooling1D()(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits_files, keras_digits, digits_bundle):
    """(framework, model type) -> (model, export kwargs, calibration, eval) of a model of that kind."""
    import encoder
    tokens = encoder.token_batches(48, seq=16, vocab=100)
    onnx_encoder = tmp_path_factory.mktemp("routes") / "encoder"
    edgekit.export(encoder.tiny(), eval=tokens, targets=["onnx"], out=onnx_encoder, measure_latency=False)
    return {
        ("torch", "cnn"): (digits_files["factory"], {"weights": digits_files["weights"]}, digits_files["calib"],
                           digits_files["eval"]),
        ("tf", "cnn"): (str(keras_digits["model"]), {}, keras_digits["calib"], keras_digits["eval"]),
        ("onnx", "cnn"): (str(digits_bundle[0] / "model.onnx"), {}, digits_files["calib"], digits_files["eval"]),
        ("torch", "transformer"): (encoder.tiny(), {}, tokens, tokens),
        ("tf", "transformer"): (_keras_encoder(), {}, {"input_ids": tokens["input_ids"]},
                                {"input_ids": tokens["input_ids"]}),
        ("onnx", "transformer"): (str(onnx_encoder / "model.onnx"), {}, tokens, tokens),
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory, models, torch_qat, tf_keras_qat):
    """route key -> (bundle folder, manifest entry of the route's artifact), made on first use: the
    precisions of one (framework, format) share one export."""
    cache = {}

    def make(key):
        framework, fmt, scheme = key
        if key in cache:
            return cache[key]
        if scheme == QAT:
            bundle, report = {"torch": torch_qat, "tf": tf_keras_qat}[framework]
            cache[key] = bundle, {a["id"]: a for a in report.artifacts}.get(f"{fmt}-int8")
            return cache[key]
        model_type = ROUTES.entries()[key].capabilities.model_type or "cnn"
        assert (framework, model_type) in models, f"no {model_type} model for {framework}: add one to this template"
        model, kwargs, calib, evaluation = models[(framework, model_type)]
        out = tmp_path_factory.mktemp("routes") / "-".join(map(str, key))
        if scheme in RECIPE_SCHEMES:
            # One rung: exactly this recipe, with the option changes its ladder gives it.
            rung = next(r for ladder in recipes.LADDERS.values() for r in ladder if r.precision == scheme)
            saved = dict(recipes.LADDERS)
            recipes.LADDERS.clear()
            recipes.LADDERS.update({(str(fmt), "int8"): (rung,), (str(fmt), "int8", model_type): (rung,)})
            try:
                report = edgekit.export(model, calib=calib, eval=evaluation, targets=[fmt], int8=True, out=out,
                                        measure_latency=False, **kwargs)
            finally:
                recipes.LADDERS.clear()
                recipes.LADDERS.update(saved)
            cache[key] = out, report.artifacts[-1]
            return cache[key]
        schemes = [s for (fw, f, s) in ROUTES.entries() if (fw, f) == (framework, fmt)
                   and s not in ("fp32", QAT, *RECIPE_SCHEMES)]
        report = edgekit.export(model, calib=calib, eval=evaluation, targets=[fmt], precisions=schemes, out=out,
                                quantize=QuantizeOptions(search=False), measure_latency=False, **kwargs)
        for artifact in report.artifacts:
            cache[(framework, fmt, artifact["precision"])] = out, artifact
        return cache[key]
    return make


@pytest.mark.slow
@pytest.mark.parametrize("key", ROUTE_KEYS, ids=lambda key: "/".join(map(str, key)))
def test_route_makes_a_verified_artifact_that_is_what_it_declares(key, made):
    route = ROUTES.entries()[key]
    bundle, entry = made(key)
    assert entry is not None, f"{route.key}: no artifact made"
    assert entry["parity"]["passed"], (entry["id"], entry["parity"]["failures"])
    assert entry["scheme"] == route.capabilities.manifest_scheme, entry["scheme"]
    if route.capabilities.int8_io == "always":
        assert {t["dtype"] for t in entry["inputs"]} == {"int8"}, entry["inputs"]
    # The device's view: the shipped bundle loads this artifact (its hash checked) as parity saw it.
    model = ekr.load(bundle, artifact=entry["id"])
    assert model.artifact.sha256 == entry["sha256"] and len(model.outputs) == len(entry["outputs"]) >= 1

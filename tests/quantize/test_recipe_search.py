"""The int8 recipe search: the first recipe that passes ships; every recipe tried is recorded."""

from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit
from edgekit.config import QuantizeOptions, parse_tolerance_overrides
from edgekit.errors import ParityError, QuantizationError


def _mlp():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(12, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48), torch.nn.ReLU(),
                               torch.nn.Linear(48, 6)).eval()


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((96, 12)).astype(np.float32)


def _export(tmp_path, data, name, min_cosine, workers=1, **quantize):
    return edgekit.export(_mlp(), calib=data, eval=data, targets=["onnx"], int8=True, out=tmp_path / name,
                          measure_latency=False, quantize=QuantizeOptions(**quantize), workers=workers,
                          tolerances=parse_tolerance_overrides([f"int8.min_cosine={min_cosine}",
                                                                "int8.min_top1_agreement=0"]))


def _int8(report):
    return next(a for a in report.artifacts if a["id"] == "onnx-int8")


def test_the_ladder_ships_the_first_recipe_that_passes(tmp_path, data):
    # An impossible tolerance: every recipe fails, and each is listed with its figures and failure.
    with pytest.raises(ParityError, match="every recipe tried failed") as failed:
        _export(tmp_path, data, "all-fail", 1)
    tried = _int8(failed.value.report)["quantization"]["search"]
    assert [t["recipe"].split(" (")[0] for t in tried] == ["as configured", "mixed precision", "u8u8", "dynamic int8"]
    assert [t["scheme"] for t in tried] == ["w8a8-static", "w8a8-static", "w8a8-static", "w8a32-dynamic"]
    assert tried[1]["blame"] and any(row["kept_fp32"] for row in tried[1]["blame"])
    assert all(not t["passed"] and "cosine" in t["failures"][0] for t in tried)
    cosines = [t["cosine"] for t in tried]
    # Dynamic int8 leaves this MLP's outputs in float, so it is the most accurate recipe here; a
    # tolerance only it meets makes the search go down to it (measured on this CPU, not assumed).
    best = int(np.argmax(cosines))
    assert best > 0, f"the first recipe was already the most accurate: {cosines}"
    report = _export(tmp_path, data, "search", cosines[best] - 1e-9)
    shipped = _int8(report)
    assert report.passed and shipped["parity"]["passed"]
    assert [t["passed"] for t in shipped["quantization"]["search"]] == [False] * best + [True]
    assert shipped["scheme"] == tried[best]["scheme"]
    assert any("shipped after" in w for w in report.warnings)
    # The bundle holds the shipped recipe's file, not a leftover of an earlier one.
    import edgekit.runtime as ekr
    out = ekr.load(tmp_path / "search", artifact="onnx-int8").predict(data)
    assert out.shape == (96, 6)


def test_a_pinned_recipe_is_not_searched(tmp_path, data):
    with pytest.raises(ParityError) as failed:
        _export(tmp_path, data, "pinned", 1, search=False)
    assert "search" not in _int8(failed.value.report)["quantization"]
    with pytest.raises(ParityError) as budget:
        _export(tmp_path, data, "budget", 1, search_budget=2)
    assert len(_int8(budget.value.report)["quantization"]["search"]) == 2
    # A time budget already spent after the first recipe: no second one is started, and the report says why.
    with pytest.raises(ParityError, match="search time budget spent") as timed:
        _export(tmp_path, data, "timed", 1, search_time=1e-6)
    int8 = _int8(timed.value.report)
    assert len(int8["quantization"]["search"]) == 1
    assert "before 'mixed precision" in int8["quantization"]["search_stopped"]


def test_recipe_flags_pin_the_recipe_on_the_cli(monkeypatch, tmp_path):
    from edgekit.cli.main import main
    seen = []
    monkeypatch.setattr("edgekit.pipeline.export", lambda *a, config, **k: seen.append(config.quantize) or _Passed())
    base = ["export", "m.onnx", "--out", str(tmp_path / "o"), "--int8", "--calib", "c.npz", "-q"]
    assert main(base) == 0 and seen[-1].search
    assert main(base + ["--reduce-range"]) == 0 and not seen[-1].search
    assert main(base + ["--weight-type", "u8"]) == 0 and not seen[-1].search and seen[-1].weight_type == "u8"
    assert main(base + ["--keep-fp32", "x*", "--search"]) == 0 and seen[-1].search
    assert main(base + ["--search-budget", "2,90s"]) == 0
    assert (seen[-1].search_budget, seen[-1].search_time) == (2, 90)
    assert main(base + ["--search-budget", "10m"]) == 0
    assert (seen[-1].search_budget, seen[-1].search_time) == (4, 600)
    for bad in ("0", "5x", "1,2", "-3m", ""):
        assert main(base + ["--search-budget", bad]) == 2, bad


class _Passed:
    passed = True
    failures = warnings = []

    def table(self):
        return ""

    def verified_on(self):
        return ""

    def tolerances_used(self):
        return ""


def test_an_int8_artifact_slower_than_fp32_is_reported():
    from edgekit.pipeline import _slower_than_fp32
    artifacts = [{"id": "onnx-fp32", "format": "onnx", "precision": "fp32", "latency_ms": 0.020},
                 {"id": "onnx-int8", "format": "onnx", "precision": "int8", "latency_ms": 0.031},
                 {"id": "tflite-fp32", "format": "tflite", "precision": "fp32", "latency_ms": 0.040},
                 {"id": "tflite-int8", "format": "tflite", "precision": "int8", "latency_ms": 0.010}]
    warnings = _slower_than_fp32(artifacts)
    assert len(warnings) == 1 and warnings[0].startswith("onnx-int8 is slower than onnx-fp32 on this CPU (0.031 vs")


def _outlier_mlp():
    """An MLP whose middle layer carries one channel 1000x larger than the others (scaled back by the
    last layer): at one shared activation scale the other channels are crushed."""
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0] *= 1000
        model[2].bias[0] *= 1000
        model[4].weight[:, 0] /= 1000
    return model


def test_mixed_precision_keeps_the_blamed_nodes_in_float(tmp_path, data):
    report = edgekit.export(_outlier_mlp(), calib=data, eval=data, targets=["onnx"], int8=True, out=tmp_path / "o",
                            measure_latency=False)
    shipped = _int8(report)
    tried = shipped["quantization"]["search"]
    assert [t["passed"] for t in tried] == [False, True], tried  # full int8 fails, mixed precision passes
    assert tried[0]["cosine"] < 0.9 and shipped["parity"]["cosine"] > 0.999
    blame = shipped["quantization"]["blame"]
    # A node at the outlier tensor is blamed first; the tensor's producer and consumers stay float.
    assert blame[0]["node"] in ("node_relu_1", "node_linear_2") and blame[0]["noise_added"] > 0.1
    assert {"node_linear_1", "node_relu_1", "node_linear_2"} <= set(shipped["quantization"]["nodes_kept_fp32"])
    assert "node_linear" not in shipped["quantization"]["nodes_kept_fp32"]  # the first layer stays int8
    assert "## Per-layer blame" in (tmp_path / "o" / "report.md").read_text()


def test_tflite_ladder_goes_to_selective_16x8_then_dynamic_for_keras(tmp_path, keras_digits):
    with pytest.raises(ParityError, match="every recipe tried failed") as failed:
        edgekit.export(str(keras_digits["model"]), calib=keras_digits["calib"], eval=keras_digits["eval"],
                       targets=["tflite"], int8=True, out=tmp_path / "t", measure_latency=False,
                       tolerances=parse_tolerance_overrides(["int8.min_cosine=1"]))
    tried = next(a for a in failed.value.report.artifacts if a["id"] == "tflite-int8")["quantization"]["search"]
    assert [t["recipe"].split(" (")[0] for t in tried] == ["as configured", "selective int8",
                                                          "int8 weights, int16 activations", "dynamic int8"]
    assert [t["scheme"] for t in tried] == ["w8a8-static", "w8a8-static", "w8a16-static", "w8a32-dynamic"]
    assert tried[1]["blame"] and any(row["kept_fp32"] for row in tried[1]["blame"])
    assert tried[2]["cosine"] > tried[0]["cosine"]  # 16-bit activations: closer to float


def _outlier_keras_mlp():
    """The outlier MLP in Keras: one channel of the middle layer 1000x, read back at 1/1000."""
    import keras
    keras.utils.set_random_seed(3)
    x = keras.Input((12,), name="x")
    h = keras.layers.Dense(48, activation="relu", name="d1")(x)
    h = keras.layers.Dense(48, activation="relu", name="d2")(h)
    model = keras.Model(x, keras.layers.Dense(6, name="d3")(h))
    w, b = model.get_layer("d2").get_weights()
    w[:, 0] *= 1000
    b[0] *= 1000
    model.get_layer("d2").set_weights([w, b])
    w, b = model.get_layer("d3").get_weights()
    w[0] /= 1000
    model.get_layer("d3").set_weights([w, b])
    return model


def test_tflite_selective_quantization_keeps_the_blamed_ops_in_float(tmp_path, data):
    # Full int8 quantizes the middle layer's output with the outlier's range, which zeroes every other
    # channel (cosine < 0.5); the whole-model blame points at the last layer (the first to see it),
    # and keeping it with the layer that computes its input in float passes.
    report = edgekit.export(_outlier_keras_mlp(), calib=data, eval=data, targets=["tflite"], int8=True,
                            out=tmp_path / "k", measure_latency=False)
    shipped = next(a for a in report.artifacts if a["id"] == "tflite-int8")
    tried = shipped["quantization"]["search"]
    assert [t["passed"] for t in tried] == [False, True], tried
    assert tried[0]["cosine"] < 0.5 and shipped["parity"]["cosine_min"] > 0.99
    blame = shipped["quantization"]["blame"]
    assert blame[0]["op"] == "FULLY_CONNECTED" and blame[0]["noise_added"] > 0.5 and blame[0]["kept_fp32"]
    kept = shipped["quantization"]["nodes_kept_fp32"]
    assert len(kept) == 2 and any("d2" in name for name in kept) and not any("d1" in name for name in kept)
    # The first layer still runs in int8: the file holds int8 weights.
    from ai_edge_litert.interpreter import Interpreter
    tensors = Interpreter(model_path=str(tmp_path / "k" / "model.int8.tflite")).get_tensor_details()
    assert any(t["dtype"] == np.int8 for t in tensors)
    assert "## Per-layer blame: tflite-int8" in (tmp_path / "k" / "report.md").read_text()


def test_transformer_graphs_get_the_transformer_ladder(tmp_path):
    """Attention graphs start from dynamic int8 (static int8 of every op collapsed a real MiniLM to
    cosine 0.36), then keep the MatMuls the blame pass ranks worst in float, then try static."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "samples"))
    import encoder
    tokens = encoder.token_batches(32, seq=16, vocab=100)
    report = edgekit.export(encoder.tiny(), calib=tokens, eval=tokens, targets=["onnx"], int8=True,
                            out=tmp_path / "ok", measure_latency=False)
    shipped = _int8(report)
    assert shipped["scheme"] == "w8a32-dynamic" and shipped["quantization"]["search"][0]["passed"]
    with pytest.raises(ParityError) as failed:
        edgekit.export(encoder.tiny(), calib=tokens, eval=tokens, targets=["onnx"], int8=True, out=tmp_path / "no",
                       measure_latency=False, tolerances=parse_tolerance_overrides(["int8.min_cosine=1"]))
    int8 = _int8(failed.value.report)
    tried = int8["quantization"]["search"]
    assert [t["scheme"] for t in tried] == ["w8a32-dynamic", "w8a32-dynamic", "w8a32-dynamic", "w8a8-static"]
    # The static rung is NNCF's transformer scheme: attention's activation x activation MatMuls and the
    # embedding Gather float, its int8 activations moved to uint8 for onnxruntime's x86 kernels.
    assert tried[3]["recipe"].startswith("static int8, NNCF transformer scheme")
    assert int8["quantization"]["activation_pairs_to_uint8"] > 0 and tried[3]["cosine"] > 0.99
    kept = int8["quantization"]["nodes_kept_fp32"]
    assert any("matmul" in n.lower() for n in kept) and any("embedding" in n.lower() or "gather" in n.lower()
                                                              for n in kept), kept
    import onnx
    graph = onnx.load(str(Path(failed.value.report.output) / "model.int8.onnx")).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    assert all(zero_points[n.input[2]] == onnx.TensorProto.UINT8 for n in graph.node
               if n.op_type == "QuantizeLinear" and len(n.input) > 2)
    kept = [row for row in tried[1]["blame"] if row["kept_fp32"]]
    assert kept and all(row["op"] in ("MatMul", "Gemm") for row in kept)


def _fake_search(tmp_path, monkeypatch, figures, fp32_ms, parallel=False, last=QuantizeOptions()):
    """Run the pipeline's search over a 3-recipe ladder whose quantizers write their recipe's name and
    whose verdicts and latencies are ``figures`` (passed, ms) per recipe ("raise": its quantizer fails).
    ``parallel``: as with parallel workers, every recipe made and judged (in threads) before the walk."""
    from types import SimpleNamespace

    from edgekit import pipeline
    from edgekit.config import Precision
    from edgekit.quantize.recipes import Recipe
    ladder = [(Recipe("a", "int8"), QuantizeOptions()), (Recipe("b", "int8"), QuantizeOptions()),
              (Recipe("c", "int8"), last)]
    monkeypatch.setattr(pipeline, "candidates", lambda *a: ladder)
    names, made = iter("abc"), []

    def quantizer(conversion, path, *_, **__):
        name = next(names)
        made.append(name)
        if figures[ord(name) - ord("a")] == "raise":
            Path(path).write_text("partial")
            raise QuantizationError(f"{name} cannot quantize this graph")
        Path(path).write_text(name)
        return SimpleNamespace(details={}, notes=(), scheme="w8a8-static")
    monkeypatch.setattr(pipeline.ROUTES, "find", lambda *a: SimpleNamespace(load=lambda: quantizer))
    monkeypatch.setattr(pipeline, "_entry", lambda fmt, precision, path, *a, **k: {
        "id": "onnx-int8", "quantization": {}, "notes": [], "scheme": "w8a8-static", "made": Path(path).read_text()})

    def figures_of(entry):
        return figures[ord(entry["made"]) - ord("a")]

    def judge(entry, file=None, latency=True):
        assert Path(file or path).read_text() == entry["made"]  # it judges that recipe's file
        passed, ms = figures_of(entry)
        entry.update(parity={"passed": passed, "failures": [] if passed else ["cosine too low"]},
                     **({"latency_ms": ms} if latency else {}))
        return entry
    monkeypatch.setattr(pipeline, "measure_latency", lambda entry, *a: entry.update(latency_ms=figures_of(entry)[1]))
    workers = SimpleNamespace(parallel=parallel, connect=lambda: None)
    config = SimpleNamespace(quantize=QuantizeOptions(model_type="cnn"), measure_latency=True,
                             parallelism=lambda: workers)
    report = SimpleNamespace(warnings=[], stages=[], made=made)
    path = tmp_path / "model.int8.onnx"
    entry = pipeline._search("onnx", Precision.INT8, path, SimpleNamespace(framework="torch", input_specs=()),
                             SimpleNamespace(check=lambda p: None), SimpleNamespace(path=tmp_path / "model.onnx"),
                             None, None, config, report, None, judge, fp32_ms)
    return entry, path, report


@pytest.fixture(params=[False, True], ids=["in-turn", "made-ahead"])
def parallel(request):
    """The search's two ways: each recipe made and judged in turn, or all made and judged up front
    (parallel workers). The same recipe must ship, with the same record."""
    return request.param


def test_a_recipe_that_passes_slower_than_fp32_does_not_end_the_search(tmp_path, monkeypatch, parallel):
    # a passes at 3 ms, b at 2 ms, c fails; fp32 runs at 1 ms (both more than 1.5x slower): the
    # fastest that passed (b) ships.
    entry, path, report = _fake_search(tmp_path, monkeypatch, [(True, 3.0), (True, 2.0), (False, 0.5)], 1.0, parallel)
    assert entry["made"] == "b" and path.read_text() == "b"
    assert entry["quantization"]["recipe"] == "b"
    assert [t.get("slower_than_fp32", False) for t in entry["quantization"]["search"]] == [True, True, False]
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["model.int8.onnx"]  # no stashed recipe left
    assert any("'a' passed but ran much slower than fp32 (3.000 vs 1.000 ms)" in w for w in report.warnings)
    # A recipe that passes at about fp32 speed (within MUCH_SLOWER) ends the search at once.
    entry, path, _ = _fake_search(tmp_path, monkeypatch, [(False, 0.5), (True, 1.4), (True, 0.1)], 1.0, parallel)
    assert entry["made"] == "b" and len(entry["quantization"]["search"]) == 2
    # Without latency figures, or for a model whose fp32 call is too short to time (per-call cost and
    # timer noise), the first recipe that passes ships.
    entry, path, _ = _fake_search(tmp_path, monkeypatch, [(True, 3.0), (True, 2.0), (True, 0.5)], None, parallel)
    assert entry["made"] == "a" and path.read_text() == "a"
    entry, path, _ = _fake_search(tmp_path, monkeypatch, [(True, 0.3), (True, 0.2), (True, 0.05)], 0.1, parallel)
    assert entry["made"] == "a" and path.read_text() == "a"


def test_a_recipe_whose_quantizer_fails_is_a_failed_recipe(tmp_path, monkeypatch, parallel):
    entry, path, _ = _fake_search(tmp_path, monkeypatch, [(False, 0.5), "raise", (True, 0.5)], 1.0, parallel)
    tried = entry["quantization"]["search"]
    assert entry["made"] == "c" and [t["passed"] for t in tried] == [False, False, True]
    assert tried[1]["failures"] == ["quantization failed: b cannot quantize this graph"]
    # Nothing passes and the last quantizer fails: the last artifact made (b's) is what stays, named as such.
    entry, path, _ = _fake_search(tmp_path, monkeypatch, [(False, 0.5), (False, 0.4), "raise"], 1.0, parallel)
    assert entry["made"] == "b" and path.read_text() == "b" and not entry["parity"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]
    with pytest.raises(QuantizationError, match="a cannot"):
        _fake_search(tmp_path, monkeypatch, ["raise", "raise", "raise"], 1.0, parallel)


def test_made_ahead_every_recipe_but_an_accuracy_controlled_one_which_waits_for_its_turn(tmp_path, monkeypatch):
    _, _, report = _fake_search(tmp_path, monkeypatch, [(False, 0.5), (True, 0.5), (True, 0.5)], 1.0, True)
    assert report.made == ["a", "b", "c"]  # made (and judged) before the walk took b
    accuracy_control = QuantizeOptions(max_drop=1.0)
    _, _, report = _fake_search(tmp_path, monkeypatch, [(False, 0.5), (True, 0.5), (True, 0.5)], 1.0, True,
                                accuracy_control)
    assert report.made == ["a", "b"]  # b shipped: the slow accuracy-controlled recipe was never run
    entry, _, report = _fake_search(tmp_path, monkeypatch, [(False, 0.5), (False, 0.5), (True, 0.5)], 1.0, True,
                                    accuracy_control)
    assert report.made == ["a", "b", "c"] and entry["made"] == "c"  # ... and runs when the walk reaches it


def test_calibration_is_capped_once_for_every_quantizer(tmp_path, data):
    with pytest.raises(ParityError) as capped:  # 16 samples of random data calibrate poorly: figures only
        _export(tmp_path, data, "cap", 1, max_calibration_samples=16, min_calibration_samples=8, search=False)
    assert _int8(capped.value.report)["quantization"]["calibration_samples"] == 16

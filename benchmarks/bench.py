"""Benchmarks (not tests): size, latency, accuracy and export cost of edgekit's artifacts.

    python benchmarks/bench.py [--json FILE] [--skip-mobilenet] [--only NAME]
    python benchmarks/bench.py --recipes      # compare onnxruntime int8 recipes on MobileNetV2
    python benchmarks/bench.py --profiles     # int8 per target CPU profile: recipe, cosine, latency
    python benchmarks/memory.py               # peak RSS per route (MobileNetV2, Keras and PyTorch)

For the PyTorch and Keras digits samples, MobileNetV2-class networks from both frameworks and a
MiniLM-class transformer encoder (random weights), per format (ONNX, TFLite, OpenVINO IR):
int8/fp32 size ratio, int8/fp32 median latency
through edgekit.runtime (batch 1, 2 threads), accuracy drop, the runtime wrapper's overhead per
call against the bare engine (onnxruntime's session.run, the TFLite interpreter's invoke) for
``predict`` and the bound fast path, and the export's wall time and peak memory (from its report:
the largest stage figure of the export's process plus its child; per route: ``memory.py``).
``--only compression``: pruning (50% unstructured, 30% channels) + int8 against the unpruned fp32
artifacts: gzip and raw size ratios, sparsity in the file, latency ratio, accuracy drop.
The README's performance section quotes its output.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "samples"), str(ROOT / "benchmarks")]
THREADS = 2
TARGETS = {"size_ratio": 0.27, "digits_int8_drop_points": 0.5, "wrapper_predict_overhead_us": 20.0, "wrapper_bind_overhead_us": 3.0, "digits_export_s": 60.0,
           "openvino_cnn_latency_ratio": 0.7, "openvino_encoder_latency_ratio": 0.9, "encoder_int8_cosine": 0.99,
           "pruned50_int8_gzip_ratio": 1 / 6, "pruned_int8_drop_points": 1.0, "channels30_int8_latency_ratio": 0.6}


def median_ms(fn, runs, warmup=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def latency_pair(bundle, x1, runs, fmt="onnx"):
    """Median batch-1 latency of the fp32 and int8 artifacts of one format, interleaved in rounds
    so that drift on this shared machine hits both alike."""
    import edgekit.runtime as ekr
    manifest = ekr.read_manifest(bundle)
    models = {e.precision: ekr.load(bundle, artifact=e.id, threads=THREADS)
              for e in manifest.artifacts if e.format == fmt and e.precision in ("fp32", "int8")}
    return interleaved_ms(models, x1, runs)


def interleaved_ms(models: dict, x1: dict, runs: int) -> dict:
    """Median batch-1 latency of each model, measured in 5 interleaved rounds."""
    feeds = {key: _in_layout(model, x1) for key, model in models.items()}
    rounds = {key: [] for key in models}
    for _ in range(5):
        for key, model in models.items():
            rounds[key].append(median_ms(lambda: model.run(feeds[key]), max(runs // 5, 5), warmup=5))
    return {key: statistics.median(v) for key, v in rounds.items()}


def _in_layout(model, x1):
    """Feed NHWC artifacts of NCHW models (PyTorch -> TFLite) in their declared layout."""
    out = {}
    for t in model.inputs:
        value = x1[t.key]
        if t.layout == "nhwc" and value.ndim == 4 and value.shape[-1] != t.shape[-1]:
            value = np.ascontiguousarray(value.transpose(0, 2, 3, 1))
        out[t.key] = value
    return out


def format_rows(name, bundle, report, x1, runs, export_s, peak_mb):
    """One row per format in the bundle: int8/fp32 size and latency ratios and accuracy."""
    arts = {(a["format"], a["precision"]): a for a in report.artifacts}
    rows = []
    for fmt in sorted({f for f, _ in arts}):
        fp32, int8 = arts.get((fmt, "fp32")), arts.get((fmt, "int8"))
        if not (fp32 and int8):
            continue
        lat = latency_pair(bundle, x1, runs, fmt)
        p = int8["parity"]
        rows.append({
            "model": name, "format": fmt, "fp32_kib": fp32["size_bytes"] / 1024, "int8_kib": int8["size_bytes"] / 1024,
            "size_ratio": int8["size_bytes"] / fp32["size_bytes"], "fp32_ms": lat["fp32"], "int8_ms": lat["int8"],
            "latency_ratio": lat["int8"] / lat["fp32"], "int8_cosine": p.get("cosine"),
            "int8_top1_agreement": p.get("top1_agreement"), "reference_accuracy": p.get("reference_accuracy"),
            "int8_drop_points": p.get("accuracy_drop"), "export_s": export_s, "export_peak_rss_mb": peak_mb,
            "int8_recipe": _recipe(int8)})
    return rows


def _recipe_name(entry) -> str:
    """The int8 recipe that shipped (the scheme when the recipe was pinned)."""
    quantization = entry.get("quantization", {})
    return quantization.get("recipe") or next(
        (t["recipe"] for t in reversed(quantization.get("search") or []) if t["passed"]), entry["scheme"])


def _recipe(entry) -> str:
    """The recipe that shipped and how many were tried."""
    tried = entry.get("quantization", {}).get("search") or []
    return f"{_recipe_name(entry)} ({len(tried)} tried)" if tried else _recipe_name(entry)


def _bare_call(model, fmt, array):
    """The engine the wrapper loaded, called as a hand-written loop would (same session or
    interpreter, so that only the wrapper's own cost differs): onnxruntime's ``session.run``, or
    the TFLite interpreter's set_tensor / invoke / get_tensor."""
    engine = model._engine
    if fmt == "onnx":
        session = engine._session
        feeds = {session.get_inputs()[0].name: array}
        return lambda: session.run(None, feeds)
    interpreter = engine._interpreter
    index = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(index, array)
        interpreter.invoke()
        return interpreter.get_tensor(out)
    return call


def wrapper_overhead(bundle, x1, runs=20000) -> dict:
    """Per-call cost of edgekit.runtime over the bare engine, for the fp32 ONNX and TFLite artifacts,
    measured side by side in one run: ``predict`` (every check, cached per shape/dtype signature)
    and ``bind`` (the pre-bound fast path). Paired: each round calls the bare engine, predict and
    the bound model back to back, and the figure is the median of the per-round differences (a
    tens-of-microseconds engine call drifts by more than the wrapper costs)."""
    import edgekit.runtime as ekr
    figures = {}
    clock = time.perf_counter_ns
    for fmt in ("onnx", "tflite"):
        model = ekr.load(bundle, artifact=f"{fmt}-fp32", threads=THREADS)
        array = _in_layout(model, x1)[model.inputs[0].key]
        bound = model.bind(array)
        bare, predict = _bare_call(model, fmt, array), model.predict
        for _ in range(200):
            bare(), predict(array), bound(array)
        calls = (bare, lambda: predict(array), lambda: bound(array))
        orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]  # rotated: no call always runs first or after another
        base, checked, fast = [], [], []
        for i in range(runs):
            took = [0, 0, 0]
            for which in orders[i % 3]:
                start = clock()
                calls[which]()
                took[which] = clock() - start
            base.append(took[0])
            checked.append(took[1] - took[0])
            fast.append(took[2] - took[0])
        figures[fmt] = {"bare_us": statistics.median(base) / 1000,
                        "predict_overhead_us": statistics.median(checked) / 1000,
                        "bind_overhead_us": statistics.median(fast) / 1000}
    return figures


def export_peak_mb(stages) -> float:
    """An export's peak memory from its report's stages: the largest stage figure of the export's
    process plus the largest child it ran then (not this process's ``ru_maxrss``, which holds every
    earlier benchmark's peak too, nor ``RUSAGE_CHILDREN``, which on Linux counts this process's
    resident set into every child's)."""
    from edgekit.memory import stage_peak_mb
    return max(stage_peak_mb(s) for s in stages)


def _cli_export(args, out):
    """Run ``edgekit export`` in a child process: wall time and peak RSS of a real CLI run."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-m", "edgekit", "export", *args, "--out", str(out), "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    from edgekit.report import Report
    manifest = json.loads((out / "manifest.json").read_text())
    stages = json.loads((out / "report.json").read_text())["stages"]
    return Report("export", artifacts=manifest["artifacts"]), seconds, export_peak_mb(stages)


def bench_digits(work: Path):
    import digits
    paths = digits.prepare(work)
    out = work / "bundle"
    report, seconds, peak_mb = _cli_export(
        [f"{ROOT / 'samples' / 'digits.py'}:build_model", "--weights", str(paths["weights"]), "--int8",
         "--to", "onnx,tflite,openvino", "--calib", str(paths["calib"]), "--eval", str(paths["eval"])], out)
    x1 = {"input": np.load(paths["eval"])["x"][:1]}
    rows = format_rows("digits CNN (PyTorch sample)", out, report, x1, 2000, seconds, peak_mb)
    for fmt, figures in wrapper_overhead(out, x1).items():
        row = next(r for r in rows if r["format"] == fmt)
        row.update({f"wrapper_{k}": v for k, v in figures.items()})
    return rows


def bench_keras_digits(work: Path):
    import digits_keras
    paths = digits_keras.prepare(work)
    out = work / "keras_bundle"
    report, seconds, peak_mb = _cli_export(
        [str(paths["model"]), "--int8", "--to", "tflite,onnx,openvino", "--calib", str(paths["calib"]),
         "--eval", str(paths["eval"])], out)
    x1 = {"image": np.load(paths["eval"])["x"][:1]}
    return format_rows("digits CNN (Keras sample)", out, report, x1, 2000, seconds, peak_mb)


def _export_rows(name, model, calib, evaluation, targets, out, runs):
    import edgekit
    from edgekit.errors import ParityError
    start = time.perf_counter()
    try:
        # Latency measured, as a default export does: the recipe search passes over a recipe slower than fp32.
        report = edgekit.export(model, calib=calib, eval=evaluation, targets=targets, int8=True, out=out)
        bundle = out
    except ParityError as exc:  # random weights: report the figures even if a tolerance is missed
        report, bundle = exc.report, Path(exc.report.output)
    seconds = time.perf_counter() - start
    key = report.artifacts[0]["inputs"][0].get("source_name") or report.artifacts[0]["inputs"][0]["name"]
    return format_rows(name, bundle, report, {key: calib[:1]}, runs, seconds, export_peak_mb(report.stages))


def bench_mobilenet(work: Path):
    from mobilenet import mobilenet_v2
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    evaluation = rng.standard_normal((32, 3, 224, 224)).astype(np.float32)
    return _export_rows("MobileNetV2 (PyTorch, random weights, 224x224)", mobilenet_v2(), calib, evaluation,
                        ["onnx", "tflite", "openvino"], work / "mnv2", 150)


def keras_mobilenet(rng):
    """keras.applications.MobileNetV2 (weights=None, 224x224, logits) with BatchNorm statistics set from
    data drawn from ``rng``."""
    import keras
    keras.utils.set_random_seed(0)
    # Logits, not softmax: 1000 near-uniform probabilities of a random net all quantize to 0.
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    # As for the PyTorch net: set BatchNorm statistics from data, or the random net's activations
    # vanish (logits ~1e-11, which no int8 scale represents; the parity gate rejects that model).
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(rng.standard_normal((16, 224, 224, 3)).astype(np.float32), training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model


def bench_keras_mobilenet(work: Path):
    rng = np.random.default_rng(0)
    model = keras_mobilenet(rng)
    calib = rng.standard_normal((64, 224, 224, 3)).astype(np.float32)
    evaluation = rng.standard_normal((32, 224, 224, 3)).astype(np.float32)
    return _export_rows("MobileNetV2 (keras.applications, weights=None, 224x224)", model, calib, evaluation,
                        ["tflite", "onnx", "openvino"], work / "keras_mnv2", 150)


def bench_encoder(work: Path):
    """A MiniLM-sized BERT-class encoder (6 layers, hidden 384; random weights), sequence 128."""
    import encoder
    calib = encoder.token_batches(64, seq=128)
    evaluation = encoder.token_batches(32, seq=128, seed=1)
    x1 = {name: array[:1] for name, array in evaluation.items()}
    import edgekit
    from edgekit.errors import ParityError
    start = time.perf_counter()
    try:
        report = edgekit.export(encoder.minilm(), calib=calib, eval=evaluation, targets=["onnx", "openvino"],
                                int8=True, out=work / "encoder")
        bundle = work / "encoder"
    except ParityError as exc:
        report, bundle = exc.report, Path(exc.report.output)
    seconds = time.perf_counter() - start
    return format_rows("MiniLM-class encoder (PyTorch, random weights, seq 128)", bundle, report, x1, 100, seconds,
                       export_peak_mb(report.stages))


def bench_compression(work: Path, mobilenet=True):
    """Pruning before export: on the digits samples 50% unstructured + int8 (compressed size) and,
    for PyTorch, 30% channels + int8 (latency); 30% channels one-shot on MobileNetV2 (latency on a
    model not bound by per-call overhead). Each against the unpruned model's fp32 artifacts."""
    import digits
    import digits_keras

    from edgekit.config import PruneOptions
    rows = []
    torch_paths, keras_paths = digits.prepare(work / "torch"), digits_keras.prepare(work / "keras")
    torch_model = f"{ROOT / 'samples' / 'digits.py'}:build_model"
    for name, model, weights, paths, fit, targets, structure, sparsity in (
            ("PyTorch", torch_model, torch_paths["weights"], torch_paths, digits.fit, ["onnx", "tflite", "openvino"],
             "unstructured", 0.5),
            ("PyTorch", torch_model, torch_paths["weights"], torch_paths, digits.fit, ["onnx", "tflite", "openvino"],
             "channels", 0.3),
            ("Keras", str(keras_paths["model"]), None, keras_paths, digits_keras.fit, ["tflite", "onnx", "openvino"],
             "unstructured", 0.5)):
        data = {"calib": paths["calib"], "eval": paths["eval"]}
        options = PruneOptions(sparsity=sparsity, structure=structure, schedule="polynomial", train=fit, steps=600)
        rows += _compression_rows(f"digits CNN ({name}), {int(sparsity * 100)}% {structure} + int8", model, weights,
                                  data, targets, options, np.load(paths["eval"])["x"][:1], work, 2000)
    if mobilenet:
        from mobilenet import mobilenet_v2
        rng = np.random.default_rng(0)
        data = {"calib": rng.standard_normal((32, 3, 224, 224)).astype(np.float32),
                "eval": rng.standard_normal((16, 3, 224, 224)).astype(np.float32)}
        for structure, sparsity in (("channels", 0.3), ("unstructured", 0.5)):
            rows += _compression_rows(f"MobileNetV2 (PyTorch, random weights), {int(sparsity * 100)}% {structure} "
                                      "one-shot + int8", mobilenet_v2(), None, data, ["onnx", "openvino", "tflite"],
                                      PruneOptions(sparsity=sparsity, structure=structure, max_accuracy_drop=100.0, min_cosine=None),
                                      data["eval"][:1], work, 150)
    return rows


def _compression_rows(name, model, weights, data, targets, options, x1, work, runs):
    import edgekit
    from edgekit.errors import ParityError
    slug = "".join(c if c.isalnum() else "-" for c in name)
    base = edgekit.export(model, weights=weights, eval=data["eval"], targets=targets, out=work / f"{slug}-base",
                          measure_latency=False)
    try:
        report = edgekit.export(model, weights=weights, calib=data["calib"], eval=data["eval"], targets=targets,
                                int8=True, out=work / slug, prune=options)
        bundle = work / slug
    except ParityError as exc:  # random weights: report the figures even if a tolerance is missed
        report, bundle = exc.report, Path(exc.report.output)
    base_arts = {a["format"]: a for a in base.artifacts}
    original = report.compression[0].get("accuracy")
    rows = []
    for fmt in targets:
        int8 = next((a for a in report.artifacts if a["id"] == f"{fmt}-int8"), None)
        if int8 is None:
            continue
        models = {"fp32": _load_for_bench(work / f"{slug}-base", f"{fmt}-fp32"), "int8": _load_for_bench(bundle, int8["id"])}
        lat = interleaved_ms(models, {models["fp32"].inputs[0].key: x1}, runs)
        accuracy = int8["parity"].get("accuracy")
        rows.append({"model": name, "format": fmt,
                     "gzip_ratio_vs_fp32": int8["gzip_bytes"] / base_arts[fmt]["gzip_bytes"],
                     "size_ratio_vs_fp32": int8["size_bytes"] / base_arts[fmt]["size_bytes"],
                     "artifact_sparsity": int8["contents"].get("sparsity"),
                     "parameters_kept": report.compression[1]["recipe"].get("parameters_after"),
                     "latency_ratio_vs_fp32": lat["int8"] / lat["fp32"], "fp32_ms": lat["fp32"], "int8_ms": lat["int8"],
                     "int8_drop_points_vs_original": None if accuracy is None or original is None
                     else original - accuracy})
    return rows


def _load_for_bench(bundle, artifact):
    import edgekit.runtime as ekr
    return ekr.load(bundle, artifact=artifact, threads=THREADS)


RECIPES = {  # name -> onnxruntime quantize_static arguments (edgekit's default is "qdq-u8s8-pc")
    "qdq-u8s8-pc (default)": dict(fmt="QDQ", act="QUInt8", wt="QInt8", per_channel=True, reduce_range=False),
    "qdq-u8s8-pc-int32bias": dict(fmt="QDQ", act="QUInt8", wt="QInt8", per_channel=True, reduce_range=False,
                                  quantize_bias=True),
    "qdq-u8s8-pc-reduce_range": dict(fmt="QDQ", act="QUInt8", wt="QInt8", per_channel=True, reduce_range=True),
    "qdq-u8s8-per-tensor": dict(fmt="QDQ", act="QUInt8", wt="QInt8", per_channel=False, reduce_range=False),
    "qdq-u8u8-pc": dict(fmt="QDQ", act="QUInt8", wt="QUInt8", per_channel=True, reduce_range=False),
    "qdq-s8s8-pc": dict(fmt="QDQ", act="QInt8", wt="QInt8", per_channel=True, reduce_range=False),
    "qoperator-u8s8-pc": dict(fmt="QOperator", act="QUInt8", wt="QInt8", per_channel=True, reduce_range=False),
}


def bench_recipes(work: Path):
    """int8 recipes on MobileNetV2: latency ratio (interleaved rounds), size ratio, cosine."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import edgekit
    from mobilenet import mobilenet_v2
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    evaluation = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
    edgekit.export(mobilenet_v2(), eval=evaluation, out=work / "fp32", measure_latency=False)
    fp32 = work / "fp32" / "model.onnx"
    quant_pre_process(str(fp32), str(work / "pre.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(calib):
                return None
            self.i += 8
            return {"x": calib[self.i - 8:self.i]}

    def session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    paths = {"fp32": fp32}
    for name, r in RECIPES.items():
        paths[name] = work / f"{len(paths)}.onnx"
        quantize_static(str(work / "pre.onnx"), str(paths[name]), Reader(), quant_format=getattr(QuantFormat, r["fmt"]),
                        activation_type=getattr(QuantType, r["act"]), weight_type=getattr(QuantType, r["wt"]),
                        per_channel=r["per_channel"], reduce_range=r["reduce_range"],
                        extra_options={"QuantizeBias": r.get("quantize_bias", False)})
    sessions = {k: session(p) for k, p in paths.items()}
    reference = sessions["fp32"].run(None, {"x": evaluation})[0]
    x1 = {"x": evaluation[:1]}
    rounds = {k: [] for k in sessions}
    for _ in range(5):
        for name, sess in sessions.items():
            rounds[name].append(median_ms(lambda: sess.run(None, x1), 30, warmup=5))
    fp32_ms = statistics.median(rounds["fp32"])
    rows = []
    for name, sess in sessions.items():
        out = sess.run(None, {"x": evaluation})[0]
        cos = float(np.mean(np.sum(out * reference, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)))
        ms = statistics.median(rounds[name])
        rows.append({"recipe": name, "ms": ms, "latency_ratio": ms / fp32_ms,
                     "size_ratio": paths[name].stat().st_size / fp32.stat().st_size, "cosine": cos})
    return rows


def _outlier_mlp():
    """tests/quantize/test_recipe_search.py's model: one hidden channel 1000x the others."""
    import torch
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(12, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48), torch.nn.ReLU(),
                                torch.nn.Linear(48, 6)).eval()
    with torch.no_grad():
        model[2].weight[0] *= 1000
        model[2].bias[0] *= 1000
        model[4].weight[:, 0] /= 1000
    return model


def bench_profiles(work: Path) -> list:
    """Default int8 exports verified on every profile this machine can check (natively or emulated):
    per model, artifact and profile the shipped recipe, accuracy/cosine, the int8/fp32 size ratio,
    the int8/fp32 latency (on this machine's own profile only: emulation gives no speed figure) and
    the search's wall time (quantize + verify of every recipe tried)."""
    import digits
    import encoder

    import edgekit
    from edgekit.errors import ParityError
    from edgekit.runtime._cpu import host_profile
    paths = digits.prepare(work)
    models = [
        ("digits CNN (PyTorch sample)", f"{ROOT / 'samples' / 'digits.py'}:build_model",
         {"weights": paths["weights"], "calib": paths["calib"], "eval": paths["eval"]}, ("onnx", "tflite", "openvino")),
        ("MLP with a 1000x activation channel", _outlier_mlp(),
         {"calib": np.random.default_rng(0).standard_normal((96, 12)).astype(np.float32),
          "eval": np.random.default_rng(1).standard_normal((96, 12)).astype(np.float32)}, ("onnx",)),
        ("tiny encoder (int64 tokens, attention)", encoder.tiny(),
         {"calib": encoder.token_batches(64, seq=32, vocab=100), "eval": encoder.token_batches(32, seq=32, vocab=100, seed=1)},
         ("onnx", "openvino")),
    ]
    rows = []
    for name, model, kwargs, targets in models:
        out = work / name.split()[0]
        start = time.perf_counter()
        try:
            report = edgekit.export(model, targets=targets, int8=True, out=out, target_cpu="all", **kwargs)
        except ParityError as exc:
            report = exc.report
        seconds = time.perf_counter() - start
        arts = {a["id"]: a for a in report.artifacts}
        for fmt in targets:
            fp32, int8 = arts.get(f"{fmt}-fp32"), arts.get(f"{fmt}-int8")
            if not (fp32 and int8):
                continue
            search = int8["quantization"].get("search") or []
            search_s = sum(st["seconds"] for st in report.stages
                           if st["stage"].startswith(f"quantize {fmt} int8") or st["stage"] == f"verify {fmt}-int8")
            profiles = int8["parity"].get("profiles") or {int8["parity"].get("profile"): int8["parity"]}
            how = {v["profile"]: v["how"] for v in int8.get("verified_on", [])}
            for profile, figures in profiles.items():
                native = how.get(profile) == "native" and profile == host_profile()
                rows.append({"model": name, "format": fmt, "profile": profile, "how": how.get(profile),
                             "recipe": _recipe_name(int8), "recipes_tried": max(1, len(search)),
                             "passed": figures.get("passed"), "cosine": figures.get("cosine"),
                             "cosine_min": figures.get("cosine_min"), "drop_points": figures.get("accuracy_drop"),
                             "size_ratio": int8["size_bytes"] / fp32["size_bytes"],
                             "latency_ratio": (int8["latency_ms"] / fp32["latency_ms"]
                                               if native and int8.get("latency_ms") and fp32.get("latency_ms") else None),
                             "search_s": search_s, "export_s": seconds})
        for profile, why in (report.artifacts[0].get("not_verified") or {}).items():
            rows.append({"model": name, "profile": profile, "how": f"NOT verified: {why}"})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--only", choices=["digits", "keras_digits", "mobilenet", "keras_mobilenet", "encoder",
                                           "compression"])
    parser.add_argument("--overhead", metavar="BUNDLE", type=Path,
                        help="only the wrapper overhead, on an exported digits bundle (onnx + tflite fp32)")
    parser.add_argument("--recipes", action="store_true", help="compare int8 recipes on MobileNetV2 instead")
    parser.add_argument("--profiles", action="store_true",
                        help="int8 per target CPU profile (native and emulated) instead")
    args = parser.parse_args(argv)
    if args.overhead:
        import digits
        x1 = {"input": digits.load_splits()[2][0][:1]}
        figures = wrapper_overhead(args.overhead, x1)
        for fmt, row in figures.items():
            print(f"{fmt:7s} bare {row['bare_us']:7.1f} us   predict +{row['predict_overhead_us']:5.2f} us   "
                  f"bind +{row['bind_overhead_us']:5.2f} us")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    if args.profiles:
        with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
            rows = bench_profiles(Path(tmp))
        for r in rows:
            if "format" not in r:
                print(f"{r['model']:40s} {r['profile']:9s} {r['how']}")
                continue
            lat = f"{r['latency_ratio']:.2f}" if r["latency_ratio"] is not None else "- (emulated)"
            drop = f"{r['drop_points']:+.2f}" if r["drop_points"] is not None else "-"
            print(f"{r['model']:40s} {r['format']:8s} {r['profile']:9s} {r['how'][:30]:30s} {r['recipe'][:28]:28s} "
                  f"({r['recipes_tried']} tried) "
                  f"pass={r['passed']} cos={r['cosine']:.5f} min={r['cosine_min']:.4f} drop={drop} "
                  f"size={r['size_ratio']:.3f} lat={lat} search={r['search_s']:.1f}s export={r['export_s']:.0f}s")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    if args.recipes:
        with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
            rows = bench_recipes(Path(tmp))
        print(f"{'recipe':28s} {'median ms':>10s} {'int8/fp32':>10s} {'size':>7s} {'cosine':>9s}")
        for r in rows:
            print(f"{r['recipe']:28s} {r['ms']:10.3f} {r['latency_ratio']:10.3f} {r['size_ratio']:7.3f} {r['cosine']:9.5f}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        benches = {"digits": bench_digits, "keras_digits": bench_keras_digits,
                   "compression": lambda w: bench_compression(w, mobilenet=not args.skip_mobilenet)}
        if not args.skip_mobilenet:
            benches.update(mobilenet=bench_mobilenet, keras_mobilenet=bench_keras_mobilenet, encoder=bench_encoder)
        for name, bench in benches.items():
            if args.only in (None, name):
                (Path(tmp) / name).mkdir()
                rows += bench(Path(tmp) / name)
    for row in rows:
        print(f"\n== {row['model']} -> {row['format']}")
        for key, value in row.items():
            if key not in ("model", "format"):
                print(f"  {key:24s} {value:.4g}" if isinstance(value, float) else f"  {key:24s} {value}")
    print("\ntargets:", TARGETS)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

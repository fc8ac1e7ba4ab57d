"""The int8 recipe search: per (format, precision), an ordered ladder of recipes to try.

A single int8 recipe is a guess that fails on some models and CPUs (issue 12's survey, on an
AVX2-only x86 CPU: a subclassed Keras CNN lost 18.2 points with 8-bit u8*s8, 2.7 with 7-bit weights,
0.67 with u8*u8; a sentence-embedding transformer kept cosine 0.35 with any static int8 and 0.991
with dynamic int8; NNCF's fast bias correction gave 0.995 where its full one gave 0.965). The
pipeline quantizes with the first rung, verifies it through the runtime, and goes down the ladder
while the gate fails: the first recipe that passes ships, and the manifest lists every recipe
tried, with its figures and why it failed.

Rungs are ordered by expected speed on x86: u8 activations with s8 weights are onnxruntime's fast
kernels (7-bit weights so that they cannot saturate without VNNI); mixed precision keeps them and
leaves the nodes that lose the most SQNR (``onnx_blame``) in float; u8*u8 is exact on every CPU but
measured at 0.97 of fp32 latency on MobileNetV2 (VNNI) against 0.52, dynamic int8 quantizes only
weights ahead of time. Each rung is a set of QuantizeOptions changes; a rung may use another
quantizer (``dynamic``), whose scheme the manifest records.

An explicit recipe option (a pinned recipe: ``QuantizeOptions(search=False)``, which the CLI sets
when a recipe flag such as ``--reduce-range`` is given) skips the search.
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Recipe:
    name: str
    precision: str          # which quantizer of the format runs it: "int8" or "dynamic"
    changes: tuple = ()     # (QuantizeOptions field, value) pairs applied to the user's options


LADDERS = {
    ("onnx", "int8"): (
        Recipe("as configured (u8s8, 7-bit weights by default)", "int8"),
        Recipe("mixed precision (10% most sensitive nodes in float)", "int8", (("keep_sensitive", 0.1),)),
        Recipe("u8u8", "int8", (("weight_type", "u8"), ("reduce_range", False))),
        Recipe("dynamic int8 (weights only)", "dynamic"),
    ),
    # Transformer graphs (MatMul + Softmax, no convolution). Measured on the real all-MiniLM-L6-v2
    # (AVX2 EPYC, seq 64, per-sentence cosine of the mean-pooled embedding, mean / worst): static int8
    # of every op 0.36 / 0.15 (the attention mask's finfo.min bias and the residual Adds), u8u8 and
    # 10% static mixed precision no better; dynamic int8 0.991 / 0.965 at 0.69x fp32 latency; dynamic
    # int8 with the feed-forward MatMuls left float 0.9976 / 0.9915 at 0.83x. The MatMuls to keep are
    # found by the blame pass under dynamic quantization. A static rung follows.
    ("onnx", "int8", "transformer"): (
        Recipe("dynamic int8 (weights only)", "dynamic"),
        Recipe("dynamic int8, the third of the MatMuls that add the most noise in float", "dynamic",
               (("keep_sensitive", 0.34),)),
        # On that MiniLM, judged per token at the real tokens: dynamic 0.9887 / 0.970, a third kept
        # 0.9906 / 0.979, two thirds (25 of 48 MatMuls: those adding any noise) 0.9926 / 0.9835.
        Recipe("dynamic int8, two thirds of the MatMuls in float", "dynamic", (("keep_sensitive", 0.67),)),
        # Static int8 of every op collapses the real MiniLM (above); NNCF's transformer scheme with
        # attention's activation x activation MatMuls and the embeddings float, its activations moved
        # to uint8, keeps 0.9963 / 0.9839 (pooled) at 0.78-0.84x fp32 (onnx_nncf).
        Recipe("static int8, NNCF transformer scheme", "static-transformer"),
    ),
    # TFLite, TensorFlow sources (litert-torch has neither mode; a rung whose quantizer does not exist
    # for the source is skipped): selective int8 leaves the ops that add the most noise (ranked by the
    # converter's QuantizationDebugger) in float and keeps XNNPACK's int8 kernels for the rest; 16-bit
    # activations (w8a16) run on the reference kernels, so they come after it; then dynamic int8.
    ("tflite", "int8"): (
        Recipe("as configured (full int8)", "int8"),
        Recipe("selective int8 (10% most sensitive ops in float)", "selective", (("keep_sensitive", 0.1),)),
        Recipe("int8 weights, int16 activations (16x8)", "int16x8"),
        Recipe("dynamic int8 (weights only)", "dynamic"),
    ),
    ("openvino", "int8"): (
        Recipe("as configured (full bias correction by default)", "int8"),
        Recipe("fast bias correction", "int8", (("fast_bias_correction", True),)),
        # NNCF reverts the layers that cost the most cosine to the float model until the mean cosine
        # is >= 0.99 and every sample's >= 0.98 (the gate's defaults): works without labels.
        Recipe("accuracy control on cosine (layers reverted to float)", "int8",
               (("fast_bias_correction", True), ("max_drop", 1.0), ("metric", "cosine"))),
    ),
}


def candidates(fmt: str, precision, options, model_type="cnn") -> list:
    """(recipe, options) pairs to try for ``fmt``/``precision``, at most ``options.search_budget``;
    one pair (the user's options) when the recipe is pinned or the format has no ladder.
    ``model_type`` ("cnn" or "transformer", the graph's) picks a format's transformer ladder where
    it has one."""
    ladder = LADDERS.get((fmt, str(precision), model_type)) or LADDERS.get((fmt, str(precision)))
    if not options.search or ladder is None:
        return [(Recipe("as configured", str(precision)), options)]
    chosen = []
    for recipe in ladder:
        tuned = replace(options, **dict(recipe.changes))
        # The user's own options may already be a later rung (fast bias correction asked for): once.
        if (recipe.precision, tuned) not in [(r.precision, o) for r, o in chosen]:
            chosen.append((recipe, tuned))
    return chosen[:options.search_budget]


def summary(recipe: Recipe, entry: dict) -> dict:
    """What the manifest keeps of one tried recipe: its name, scheme, figures and failures."""
    parity = entry.get("parity", {})
    kept = ("cosine", "cosine_min", "accuracy_drop", "top1_agreement")
    quantization = entry.get("quantization", {})
    return {"recipe": recipe.name, "scheme": entry.get("scheme"), "passed": bool(parity.get("passed")),
            **{k: parity[k] for k in kept if k in parity}, "failures": list(parity.get("failures", [])),
            **({"profiles": parity["profiles"]} if "profiles" in parity else {}),
            **({"blame": quantization["blame"]} if "blame" in quantization else {})}

"""Parity of one artifact's outputs against the reference outputs.

Metrics per output: max/mean absolute error, relative error, cosine similarity (flattened per
sample; mean and minimum over samples), SQNR in dB. Outputs that are class scores (declared,
labelled, or inferred conservatively: ``output_kinds``) also get top-1 agreement with the
reference, and with labels the task accuracy of both and the drop in points; a box, landmark or
embedding output is never judged by its argmax. ``judge`` collects every failure
against the precision's Tolerance; a NaN/inf/all-zero output, a NaN/inf reference and a
NaN metric always fail.
"""

import math
from dataclasses import dataclass, field

import numpy as np

# The metrics a device's self-test computes too live in the runtime; the gate uses the same copy.
from edgekit.runtime._metrics import TOKEN_MASK_INPUT, masked, sample_cosines, token_mask

__all__ = ["ERROR_EDGES", "ParityResult", "TOKEN_MASK_INPUT", "compare", "error_histogram", "is_classification", "judge",
           "masked", "output_kinds", "output_metrics", "sample_cosines", "sqnr_db", "token_mask"]

# Decades of per-sample error (1 - cosine): where the samples of an output lie, from "bit-exact
# enough" (< 1e-6) to "a different answer" (>= 0.1; 1 - cosine reaches 2 for an inverted output).
ERROR_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 2.0)


@dataclass
class ParityResult:
    metrics: dict                         # primary-output metrics, flat
    per_output: dict                      # output name -> metrics
    failures: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": list(self.failures), **self.metrics,
                "per_output": self.per_output}


def energies(ref, out) -> tuple:
    """(signal, noise): the energy of ``ref`` and of ``out - ref``, in float64 — sums, so that a
    pass over samples in batches adds them up (``onnx_blame``)."""
    noise = float(np.sum((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return float(np.sum(ref.astype(np.float64) ** 2)), noise


def sqnr_from_energies(signal, noise) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def sqnr_db(ref, out) -> float:
    return sqnr_from_energies(*energies(ref, out))


# Output names that say "class scores" (a box, landmark or embedding head says none of these).
_CLASS_WORDS = ("logit", "prob", "score", "class", "cls", "softmax")


def is_classification(array) -> bool:
    """Shaped like class scores: one row of several columns per sample."""
    return array.ndim == 2 and array.shape[1] > 1


def output_kinds(reference: dict, labels=None, declared=None) -> dict:
    """Each output's kind, which decides how it is judged. Declared kinds win; else the primary
    output is class scores when labels come with the data; else an output counts as class scores
    only when it is shaped like them and its name says so (logits, probs, scores, class) or its
    rows are probability distributions. Everything else — a box, a landmark or an embedding head —
    is "regression": judged by cosine (mean and per-sample minimum), relative error and SQNR, never
    by the argmax of its coordinates."""
    declared = dict(declared or {})
    kinds = {}
    for index, (name, ref) in enumerate(reference.items()):
        ref = np.asarray(ref)
        if name in declared:
            kinds[name] = declared[name]
        elif not is_classification(ref):
            kinds[name] = "regression"
        elif (index == 0 and labels is not None) or any(w in name.lower() for w in _CLASS_WORDS) \
                or _probability_rows(ref):
            kinds[name] = "classification"
        else:
            kinds[name] = "regression"
    return kinds


def _probability_rows(ref) -> bool:
    if not np.isfinite(ref).all() or ref.min() < 0 or ref.max() > 1:
        return False
    return bool(np.allclose(ref.sum(axis=1), 1.0, atol=1e-3))


def error_histogram(per_sample_cosine) -> dict:
    """How many samples fall in each decade of ``ERROR_EDGES`` (report.html draws it per output)."""
    errors = np.clip(1.0 - np.asarray(per_sample_cosine, dtype=np.float64), 0.0, ERROR_EDGES[-1])
    counts, _ = np.histogram(errors, bins=ERROR_EDGES)
    return {"edges": list(ERROR_EDGES), "counts": [int(c) for c in counts]}


def output_metrics(ref, out, kind="regression") -> dict:
    if out.shape != ref.shape:
        return {"shape_mismatch": f"reference {ref.shape}, artifact {out.shape}"}
    finite = bool(np.isfinite(out).all())
    metrics = {"kind": kind, "finite": finite, "reference_finite": bool(np.isfinite(ref).all()),
               "all_zero": bool(out.size and not np.any(out))}
    if not (finite and metrics["reference_finite"]):
        return metrics
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    per_sample = sample_cosines(ref, out)
    reference_norm = float(np.linalg.norm(ref.astype(np.float64)))
    metrics.update(max_abs_error=float(diff.max()) if diff.size else 0.0,
                   mean_abs_error=float(diff.mean()) if diff.size else 0.0,
                   cosine=float(per_sample.mean()), cosine_min=float(per_sample.min()),
                   relative_error=float(np.linalg.norm(diff) / reference_norm) if reference_norm else 0.0,
                   sqnr_db=sqnr_db(ref, out), error_histogram=error_histogram(per_sample))
    if kind == "classification" and is_classification(ref):
        metrics["top1_agreement"] = float((ref.argmax(1) == out.argmax(1)).mean())
    return metrics


def compare(reference: dict, outputs: dict, labels=None, kinds=None, mask=None) -> ParityResult:
    """Metrics of every output (judged by its kind: ``output_kinds``), plus task accuracy of the
    primary output when it is class scores and labels are given. ``mask`` (``token_mask``):
    per-token outputs are compared at the real tokens only."""
    kinds = output_kinds(reference, labels, kinds)
    per_output = {}
    for name, ref in reference.items():
        if name not in outputs:
            per_output[name] = {"missing": True}
            continue
        ref_masked, was_masked = masked(np.asarray(ref), mask)
        per_output[name] = output_metrics(ref_masked, masked(np.asarray(outputs[name]), mask)[0], kinds[name])
        if was_masked:
            per_output[name]["masked_by"] = TOKEN_MASK_INPUT
    primary_name = next(iter(reference))
    metrics = {"primary_output": primary_name, "samples": int(len(reference[primary_name])),
               **{k: v for k, v in per_output[primary_name].items() if k != "error_histogram"}}
    ref = np.asarray(reference[primary_name])
    if labels is not None and kinds[primary_name] == "classification" and is_classification(ref) \
            and primary_name in outputs and per_output[primary_name].get("finite"):
        labels = np.asarray(labels)
        metrics["reference_accuracy"] = float((ref.argmax(1) == labels).mean() * 100)
        metrics["accuracy"] = float((np.asarray(outputs[primary_name]).argmax(1) == labels).mean() * 100)
        metrics["accuracy_drop"] = metrics["reference_accuracy"] - metrics["accuracy"]
    return ParityResult(metrics, per_output)


def judge(result: ParityResult, tolerance) -> ParityResult:
    """Fill ``result.failures`` with every violated limit (all of them, not the first).

    Each limit is written as "fails unless the metric is within it", so a NaN metric fails.
    """
    failures = []
    for name, m in result.per_output.items():
        if m.get("missing"):
            failures.append(f"{name}: output missing from the artifact")
        elif "shape_mismatch" in m:
            failures.append(f"{name}: shape mismatch ({m['shape_mismatch']})")
        elif not m["reference_finite"]:
            failures.append(f"{name}: the reference outputs hold NaN or inf (a corrupt reference: re-export)")
        elif not m["finite"]:
            failures.append(f"{name}: output holds NaN or inf")
        elif m["all_zero"]:
            failures.append(f"{name}: output is all zeros")
        else:
            failures += _limit_failures(name, m, tolerance)
    drop = result.metrics.get("accuracy_drop")
    if drop is not None and not drop <= tolerance.max_accuracy_drop:
        failures.append(f"accuracy drop {drop:.2f} points > {tolerance.max_accuracy_drop}")
    result.failures = failures
    return result


def _limit_failures(name, m, tolerance) -> list:
    tolerance = tolerance.for_output(name)
    failures = []
    if (tolerance.min_sample_cosine is not None and m.get("kind") != "classification" and "cosine_min" in m
            and not m["cosine_min"] >= tolerance.min_sample_cosine):
        failures.append(f"{name}: worst-sample cosine {m['cosine_min']:.6f} < {tolerance.min_sample_cosine} "
                        f"({m.get('kind', 'regression')} output: each sample must hold)")
    if not m["cosine"] >= tolerance.min_cosine:
        failures.append(f"{name}: cosine {m['cosine']:.6f} < {tolerance.min_cosine}")
    if tolerance.max_abs_error is not None and not m["max_abs_error"] <= tolerance.max_abs_error:
        failures.append(f"{name}: max abs error {m['max_abs_error']:.3g} > {tolerance.max_abs_error}")
    if "top1_agreement" in m and not m["top1_agreement"] >= tolerance.min_top1_agreement:
        failures.append(f"{name}: top-1 agreement {m['top1_agreement']:.4f} < {tolerance.min_top1_agreement}")
    return failures

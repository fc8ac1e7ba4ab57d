"""Compression before export: pruning and quantization-aware training as pipeline stages.

Each stage runs the framework-side step from ``edgekit.quantize``, runs the compressed model
in its framework on the eval data, and adds a row to ``report.compression`` (reference →
pruned → QAT) with its accuracy against the original model. The compressed model's outputs
become the reference its artifacts are verified against.
"""

from .choices import PruneStructure
from .errors import ConfigError
from .timing import timed_step


def _reference_row(source, parity) -> dict:
    return {"stage": f"reference ({source.framework})", "passed": True, "size_bytes": source.weight_bytes(),
            **({"accuracy": parity["reference_accuracy"]} if "reference_accuracy" in parity else {})}


def prune_stage(source, reference, evaluation, config, report, progress):
    """Prune the source model; the pruned model becomes the reference its artifacts must match,
    and its own drop against the original is a stage row, gated by ``prune.max_accuracy_drop``."""
    from .routes import PRUNERS

    from .config import Tolerance
    if source.framework not in PRUNERS.entries():
        raise ConfigError(f"pruning needs a PyTorch or Keras model; {source.description} is {source.framework}")
    with timed_step("prune", report.stages, progress):
        result = PRUNERS.get(source.framework)(source, config.prune)
    pruned = source.with_model(result.model, " (pruned)")
    with timed_step(f"reference ({source.framework}, pruned)", report.stages, progress):
        pruned_reference = pruned.reference(evaluation, config.reference_device)
    drop = config.prune.max_accuracy_drop
    if evaluation.labels is not None:
        gate = Tolerance(min_cosine=-1.0, max_accuracy_drop=drop, min_top1_agreement=0.0)
    else:
        # No labels, no accuracy: a pruned model whose predictions differ from the original's on at
        # most max_accuracy_drop % of the samples cannot have lost more than that; every output
        # must keep the cosine floor (PruneOptions.min_cosine).
        floor = config.prune.min_cosine
        gate = Tolerance(min_cosine=-1.0 if floor is None else floor, max_accuracy_drop=drop,
                         min_top1_agreement=max(0.0, 1 - drop / 100))
    parity = _stage_verdict(reference, pruned_reference, evaluation, gate)
    options = config.prune
    report.compression = [
        _reference_row(source, parity),
        {"stage": f"pruned ({source.framework})", **parity, "sparsity": result.sparsity,
         "size_bytes": pruned.weight_bytes(),
         "per_layer": result.per_layer, "recipe": {"sparsity": options.sparsity, "schedule": options.schedule,
                                                   "structure": options.structure, "scope": options.scope,
                                                   "steps": options.steps if options.train else 0,
                                                   **result.details}}]
    report.warnings += [f"prune: {note}" for note in result.notes]
    if options.train is None:
        report.warnings.append("prune: no training hook (--train FILE.py:fit): pruned one-shot, without fine-tuning")
    if options.structure == PruneStructure.TWO_FOUR and options.sparsity != 0.5:
        report.warnings.append(f"prune: 2:4 is 50% sparsity by construction; the requested {options.sparsity} "
                               "does not apply")
    return pruned, pruned_reference


def qat_gate(config, labelled: bool):
    """How the QAT model is judged against the *original* model. With labels: its accuracy drop,
    within the int8 tolerance's (plus the prune stage's when it was pruned first) — the model was
    retrained, so its outputs may move where its accuracy does not (measured on the digits sample:
    cosine 0.969 and top-1 agreement 0.975 to the original at +0.8 pt accuracy). Without labels:
    top-1 agreement with the original for class scores (not after pruning, which changes predictions
    by design) and the DIVERGED_COSINE floor for every output."""
    from .config import DIVERGED_COSINE, Precision, Tolerance
    int8 = config.tolerances[Precision.INT8]
    pruned = config.prune is not None
    drop = int8.max_accuracy_drop + (config.prune.max_accuracy_drop if pruned else 0.0)
    if labelled:
        return Tolerance(min_cosine=-1.0, min_top1_agreement=0.0, max_accuracy_drop=drop)
    return Tolerance(min_cosine=DIVERGED_COSINE, min_top1_agreement=0.0 if pruned else int8.min_top1_agreement,
                     max_accuracy_drop=drop)


def _stage_verdict(original, compressed, evaluation, gate) -> dict:
    """A compressed model's outputs judged against the original's by a stage's ``gate``, with the gate
    and which metric gated recorded in the row."""
    from .parity import compare, judge, token_mask
    parity = judge(compare(original.outputs, compressed.outputs, evaluation.labels,
                           mask=token_mask(evaluation.inputs)), gate).to_dict()
    parity["gate"] = {k: v for k, v in vars(gate).items() if v is not None and k != "per_output"}
    parity["gated_by"] = ("accuracy drop against the labels" if evaluation.labels is not None
                          else "top-1 agreement and cosine with the original model (no labels)")
    return parity


def qat_stage(source, original, calibration, evaluation, config, report, progress) -> dict:
    """Quantization-aware training of the (pruned) float model for the target formats whose int8
    artifact is converted from a QAT model; returns {format: (QAT source, its reference)}.

    A framework's trainer (``QAT_TRAINERS[framework]``) makes one QAT model for its formats; a
    format whose converter needs a QAT model of its own (``QAT_TRAINERS[(framework, format)]``:
    PyTorch's TFLite, litert-torch converting PT2E graphs but not NNCF's fake quantizers) gets one,
    trained only when that format is a target, with its own reference file and compression row.
    Each QAT model is judged against the original by ``qat_gate``."""
    from .routes import QAT, QAT_TRAINERS, ROUTES

    if source.framework not in QAT_TRAINERS.entries():
        raise ConfigError(f"QAT needs a PyTorch or Keras model; {source.description} is {source.framework}")
    formats = [fmt for fmt in config.targets if ROUTES.find(source.framework, fmt, QAT) is not None]
    models = {}
    for key, trained_for in _trainers(source.framework, formats).items():
        models.update(dict.fromkeys(trained_for, _qat_model(key, source, original, calibration, evaluation,
                                                            config, report, progress)))
    return models


def _trainers(framework, formats) -> dict:
    """{QAT_TRAINERS key: the formats whose QAT artifacts that trainer's model makes}."""
    from .routes import QAT_TRAINERS
    entries = QAT_TRAINERS.entries()
    trainers = {}
    for fmt in formats:
        trainers.setdefault((framework, fmt) if (framework, fmt) in entries else framework, []).append(fmt)
    return trainers


def _qat_model(key, source, original, calibration, evaluation, config, report, progress):
    """Train one QAT model (trainer ``key``), add its compression row; returns (QAT source, its
    reference). A format's own model is named after it: row "QAT (torch, tflite)", reference file
    ``reference.qat-tflite.npz``; the framework's model keeps "QAT (torch)", ``reference.qat.npz``."""
    import dataclasses

    from .routes import QAT_TRAINERS
    own = "" if isinstance(key, str) else key[1]  # the format of a format's own QAT model
    name = f"{source.framework}, {own}" if own else source.framework
    label = f" ({own})" if own else ""
    with timed_step(f"quantization-aware training{label}", report.stages, progress):
        result = QAT_TRAINERS.get(key)(source, config.qat, calibration, config.quantize,
                                       pruned=config.prune is not None)
    qat_source = source.with_model(result.model, " (QAT)")
    with timed_step(f"reference ({name}, QAT)", report.stages, progress):
        qat_reference = dataclasses.replace(qat_source.reference(evaluation, config.reference_device),
                                            file=f"reference.qat-{own}.npz" if own else "reference.qat.npz")
    gate = qat_gate(config, evaluation.labels is not None)
    parity = _stage_verdict(original, qat_reference, evaluation, gate)
    if not report.compression:
        report.compression.append(_reference_row(source, parity))
    report.compression.append({"stage": f"QAT ({name})", **parity,
                               "size_bytes": qat_source.weight_bytes(), "recipe": result.details})
    report.warnings += [f"qat{label}: {note}" for note in result.notes]
    return qat_source, qat_reference

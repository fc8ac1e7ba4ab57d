"""Parity of artifacts through ``edgekit.runtime`` — shared by ``export`` and ``edgekit verify``.

The verifier runs each artifact through the same runtime a device uses; parity
measured any other way would prove nothing about what ships.
"""

import logging
import time
from pathlib import Path

import numpy as np

import edgekit.runtime as ekr

from edgekit.runtime._child import ChildFailure, run_isolated
from edgekit.runtime._manifest import artifact_path

from .config import DEFAULT_TOLERANCES, VERIFY_TIMEOUT_S, Precision, check_timeout
from .data import ImagePreprocess, load_data, validate
from .errors import InputError, NothingEvaluatedError, ParityError
from .parity import compare, judge
from .reference import ReferenceOutputs
from .report import Report
from .timing import timed_step

log = logging.getLogger("edgekit.verify")
EVAL_BATCH = 64
LATENCY_BUDGET_S = 1.0
LATENCY_MAX_RUNS = 200


def median_latency_ms(model, sample: dict) -> float:
    """Median wall time of one batch-1 call through the runtime, within a small time budget."""
    model.run(sample)
    times = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < LATENCY_MAX_RUNS and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        model.run(sample)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _transpose(array, have, want):
    if have == want or array.ndim != 4 or not have or not want:
        return array
    return array.transpose((0, 2, 3, 1) if (have, want) == ("nchw", "nhwc") else (0, 3, 1, 2))


def in_artifact_layout(artifact_inputs, dataset, specs) -> dict:
    """The eval inputs in the layout each artifact input declares (a converter may make an NCHW
    model take NHWC, as the TFLite converter of PyTorch models does); explicit and recorded in the
    manifest, never guessed from shapes."""
    source_layouts = {s.name: s.layout for s in specs}
    return {t.key: np.ascontiguousarray(_transpose(dataset.inputs[t.key], source_layouts.get(t.key), t.layout))
            for t in artifact_inputs}


def evaluate(entry: dict, file, dataset, reference: ReferenceOutputs, tolerance, specs, *, latency=True,
             isolate=True, timeout=VERIFY_TIMEOUT_S, kinds=None) -> dict:
    """Run one artifact over the eval set, judge it, and fill ``entry['parity']``.

    With ``isolate`` the artifact runs in a child process (a crash or a hang there fails this
    artifact, within ``timeout`` seconds); otherwise it is loaded and run here. Latency is measured
    here, once the artifact has run. ``kinds``: how each output is judged (``parity.output_kinds``).
    """
    artifact_inputs = [ekr.TensorInfo.from_dict(d) for d in entry["inputs"]]
    try:
        inputs = in_artifact_layout(artifact_inputs, dataset, specs)
    except KeyError:
        entry["parity"] = {"passed": False, "failures": [
            f"the artifact's inputs {[t.key for t in artifact_inputs]} are not the model's inputs "
            f"{[s.name for s in specs]} (a damaged or hand-edited manifest)"]}
        return entry
    model = None
    try:
        if isolate:
            outputs = run_isolated(file, inputs, timeout=timeout, entry=entry, batch=EVAL_BATCH,
                                   what=f"running {entry.get('id')}")
        else:
            model = ekr.load_artifact(file, entry)
            outputs = model.run_batched(inputs, EVAL_BATCH)
    except (ChildFailure, ekr.ModelLoadError, ekr.RuntimeInputError, RuntimeError, ValueError) as exc:
        # A broken artifact fails the gate, it does not crash it.
        entry["parity"] = {"passed": False, "failures": [f"runtime error: {type(exc).__name__}: {exc}"]}
        return entry
    result = judge(compare(reference.outputs, outputs, dataset.labels, kinds), tolerance)
    entry["parity"] = result.to_dict()
    entry["parity"]["tolerance"] = {k: v for k, v in vars(tolerance).items()}
    if latency:
        model = model or ekr.load_artifact(file, entry)
        entry["latency_ms"] = median_latency_ms(model, {k: v[:1] for k, v in inputs.items()})
    return entry


def verify(bundle, eval, *, tolerances=None, artifacts=None, latency=False, progress=None, isolate=True,
           timeout=VERIFY_TIMEOUT_S) -> Report:
    """Re-run parity of an existing bundle on ``eval`` against its stored reference outputs.

    Each artifact runs in an isolated child process (``isolate``), within ``timeout`` seconds.
    Raises ParityError (carrying the report) when an artifact fails, InputError when
    the eval data is not the data the reference was computed on.
    """
    check_timeout(timeout)
    bundle = Path(bundle)
    try:
        manifest = ekr.read_manifest(bundle)  # parsed once: every artifact is selected from it
    except ekr.ModelLoadError as exc:
        raise InputError(str(exc)) from exc
    specs = [ekr.TensorInfo.from_dict(d) for d in manifest["inputs"]]
    pre = manifest.get("preprocessing")
    preprocess = ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()
                                    if k != "scale"}) if pre else None
    dataset = validate(load_data(eval, preprocess=preprocess, role="eval"), specs, role="eval")
    reference = ReferenceOutputs.load(bundle, manifest["reference"])
    unhashed = [] if manifest["reference"].get("sha256") else [
        f"{reference.file} has no sha256 in the manifest (exported before edgekit recorded one): used "
        "unchecked; re-export to record it"]
    if reference.eval_sha256 and dataset.sha256() != reference.eval_sha256:
        raise InputError(
            f"the eval data ({dataset.origin}, {len(dataset)} samples) is not the data the reference "
            f"outputs were computed on ({reference.num_samples} samples, sha256 {reference.eval_sha256[:12]}…); "
            "verify with the same --eval as the export")
    tolerances = tolerances or DEFAULT_TOLERANCES
    report = Report("verify", source=manifest.get("source", {}), reference=manifest["reference"],
                    output=str(bundle))
    report.warnings += unhashed
    entries = [e for e in manifest["artifacts"] if artifacts is None or e["id"] in artifacts]
    references = {reference.file: reference}
    if not entries:
        raise NothingEvaluatedError(f"no artifact to verify in {bundle} (asked for {artifacts})")
    for entry in entries:
        entry = dict(entry)
        with timed_step(f"verify {entry['id']}", report.stages, progress):
            try:
                file = artifact_path(bundle, entry, check_hash=True)
                ekr.backends.backend_for(file)  # the engine is installed
            except (ekr.ModelLoadError, ekr.BackendUnavailableError) as exc:
                entry["parity"] = {"passed": False, "failures": [f"cannot load: {exc}"]}
            else:
                own = entry.get("reference")  # artifacts of a QAT model: that model's outputs
                if own and own["file"] not in references:
                    references[own["file"]] = ReferenceOutputs.load(bundle, own)
                evaluate(entry, file, dataset, references[own["file"]] if own else reference,
                         tolerances[Precision(entry["precision"])], specs, latency=latency, isolate=isolate,
                         timeout=timeout, kinds=manifest.get("output_kinds"))
        report.artifacts.append(entry)
    if not report.passed:
        raise ParityError("parity failed: " + "; ".join(report.failures), report)
    return report

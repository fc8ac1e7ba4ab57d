"""Parity of artifacts through ``edgekit.runtime`` — shared by ``export`` and ``edgekit verify``.

The verifier runs each artifact through the same runtime a device uses; parity
measured any other way would prove nothing about what ships.
"""

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import edgekit.runtime as ekr

from edgekit.runtime._tensor import to_layout
from edgekit.runtime._child import ChildFailure, run_isolated
from edgekit.runtime._cpu import describe_host
from edgekit.runtime._manifest import artifact_path
from edgekit.runtime._records import plain

from .config import (DEFAULT_TOLERANCES, VERIFY_TIMEOUT_S, Precision, Tolerance, check_timeout,
                     parse_tolerance_overrides)
from .data import ImagePreprocess, load_data, validate
from .errors import (ConfigError, InputError, MissingDependencyError, NothingEvaluatedError, ParityError,
                     did_you_mean)
from .parity import compare, judge, token_mask
from .profiles import HOST, checkable, default_targets, not_verified_warnings
from .reference import ReferenceOutputs
from .report import Report
from .memory import VERIFY_BATCH
from .timing import advance, timed_step
from .workers import Workers, WorkerLost, session

SERIAL = Workers()

log = logging.getLogger("edgekit.verification")
EVAL_BATCH = VERIFY_BATCH  # samples per call of a verification run (edgekit.memory)
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


def in_artifact_layout(artifact_inputs, dataset, specs) -> dict:
    """The eval inputs in the layout each artifact input declares (a converter may make an NCHW
    model take NHWC, as the TFLite converter of PyTorch models does); explicit and recorded in the
    manifest, never guessed from shapes."""
    source_layouts = {s.name: s.layout for s in specs}
    return {t.key: np.ascontiguousarray(to_layout(dataset.inputs[t.key], source_layouts.get(t.key), t.layout))
            for t in artifact_inputs}


def evaluate(entry: dict, file, dataset, reference: ReferenceOutputs, tolerance, specs, *, latency=True,
             isolate=True, timeout=VERIFY_TIMEOUT_S, kinds=None, runners=(HOST,), not_verified=None,
             workers: Workers = SERIAL, batch=EVAL_BATCH) -> dict:
    """Run one artifact over the eval set on each target profile's ``runners``, ``batch`` samples per
    call (the export's memory plan may lower it), judge it, and fill
    ``entry['parity']`` (the worst profile's verdict; a failure on any profile fails the artifact),
    ``entry['verified_on']`` and ``entry['not_verified']``.

    With ``isolate`` the artifact runs in a child process (a crash or a hang there fails this
    artifact, within ``timeout`` seconds); otherwise a native run is loaded and run here; emulated
    runs are always children. With parallel ``workers`` the children's runs are Ray tasks: every
    profile at once, the eval set sharded on batch boundaries (``shards``), outputs concatenated
    in order, so the verdict is the one a single process reaches. Latency is measured here,
    natively, once the artifact has run everywhere. ``kinds``: how each output is judged
    (``parity.output_kinds``).
    """
    artifact_inputs = [ekr.TensorInfo.from_dict(d) for d in entry["inputs"]]
    try:
        inputs = in_artifact_layout(artifact_inputs, dataset, specs)
    except KeyError:
        entry["parity"] = {"passed": False, "failures": [
            f"the artifact's inputs {[t.key for t in artifact_inputs]} are not the model's inputs "
            f"{[s.name for s in specs]} (a damaged or hand-edited manifest)"]}
        return entry
    model, verdicts, ran, mask = None, [], True, token_mask(dataset.inputs)
    if workers.parallel:  # (each task runs its shard in an isolated child: --no-isolate does not apply)
        runs = _run_in_tasks(entry, file, inputs, runners, timeout, workers, batch)
    else:
        runs = []
        for runner in runners:
            def on_batch(done, total):  # (called while this runner runs)
                advance(done, total, f"eval samples on {runner.profile} ({runner.how})")
            try:
                if isolate or not runner.native:
                    outputs = run_isolated(file, inputs, timeout=timeout, entry=entry, batch=batch,
                                           launcher=runner.launcher, on_batch=on_batch, what=_what(entry, runner))
                else:
                    model = ekr.load_artifact(file, entry)
                    outputs = model.run_batched(inputs, batch, on_batch)
            except ARTIFACT_FAILURES as exc:
                outputs = exc
            runs.append(outputs)
    for runner, outputs in zip(runners, runs):
        if isinstance(outputs, Exception):
            # A broken artifact fails the gate, it does not crash it (a bug around the engine does).
            verdict, ran = {"passed": False, "failures": [f"runtime error: {type(outputs).__name__}: {outputs}"]}, False
        else:
            verdict = judge(compare(reference.outputs, outputs, dataset.labels, kinds, mask),
                            tolerance).to_dict()
            verdict["tolerance"] = {k: v for k, v in vars(tolerance).items()}
        verdicts.append((runner, verdict))
    entry["parity"] = combine_profiles(verdicts)
    entry["verified_on"] = [{"profile": r.profile, "how": r.how, "passed": v["passed"]} for r, v in verdicts]
    if not_verified:
        entry["not_verified"] = dict(not_verified)
    if latency and ran:
        _timed(entry, model or ekr.load_artifact(file, entry), inputs)
    return entry


def measure_latency(entry: dict, file, dataset, specs):
    """``entry["latency_ms"]`` (and the CPU it was measured on): batch-1 calls natively, here. Raises
    what loading or running the artifact raises (``ARTIFACT_FAILURES``)."""
    inputs = in_artifact_layout([ekr.TensorInfo.from_dict(d) for d in entry["inputs"]], dataset.take(1), specs)
    _timed(entry, ekr.load_artifact(file, entry), inputs)


def _timed(entry, model, inputs):
    entry["latency_ms"] = median_latency_ms(model, {k: v[:1] for k, v in inputs.items()})
    entry["latency_cpu"] = describe_host()


# What the artifact itself failed at (a verdict), as opposed to a bug around the engine (raised).
ARTIFACT_FAILURES = (ChildFailure, ekr.ModelLoadError, ekr.RuntimeInputError, ekr.EngineError)


def _what(entry, runner) -> str:
    return f"running {entry.get('id')} on {runner.profile} ({runner.how})"


def shards(count: int, pieces: int, batch: int = EVAL_BATCH) -> list:
    """At most ``pieces`` slices of ``count`` samples, cut on ``batch`` boundaries: each shard's
    batches are the batches one process runs, so the engine computes the same outputs bit for bit."""
    if count <= 0:
        return []
    batches = -(-count // batch)
    per = -(-batches // max(1, min(pieces, batches))) * batch
    return [slice(start, min(start + per, count)) for start in range(0, count, per)]


def _run_in_tasks(entry, file, inputs, runners, timeout, workers, batch=EVAL_BATCH) -> list:
    """Each runner's outputs (or the artifact's failure) from Ray tasks: one per runner and shard.
    A native runner's tasks run on this machine's node: it is this CPU's verdict. Companion files
    (an IR's ``.bin``) sit beside the artifact, as its engine looks for them."""
    count = len(next(iter(inputs.values())))
    pieces = shards(count, max(1, workers.slots() // len(runners)), batch)
    names = [Path(file).name, *(Path(c["file"]).name for c in entry.get("companions", []))]
    files = {name: (Path(file).parent / name).read_bytes() for name in names}
    jobs = [(names[0], {k: v[piece] for k, v in inputs.items()}, runner.launcher, _what(entry, runner))
            for runner in runners for piece in pieces]
    # Each task's engine gets its share of the cores (an engine left to use every core in each of N
    # tasks at once would oversubscribe them: on 2 vCPUs, 2 tasks were no faster than 1).
    threads = max(1, (os.cpu_count() or 1) // min(len(jobs), workers.slots()))
    try:
        results = workers.map(_run_shard, jobs, shared={"files": files, "entry": entry, "timeout": timeout,
                                                        "threads": threads, "batch": batch},
                              on_result=lambda done, total: advance(done, total, "eval shards"),
                              here=lambda i: runners[i // len(pieces)].native)
    except WorkerLost as exc:  # e.g. the artifact's allocation got its worker killed: a verdict
        return [ChildFailure(f"{entry.get('id')}: a verification task's worker died: {exc}")] * len(runners)
    runs = []
    for r in range(len(runners)):
        parts = results[r * len(pieces):(r + 1) * len(pieces)]
        failed = next((p for p in parts if isinstance(p, Exception)), None)
        runs.append(failed or {name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
    return runs


def _run_shard(name, inputs, launcher, what, *, files, entry, timeout, threads, batch=EVAL_BATCH):
    """One task: the artifact (its files shipped as bytes) over ``inputs`` in an isolated child
    whose engine uses ``threads``; the artifact's failure is returned (a verdict), anything else
    raised."""
    with tempfile.TemporaryDirectory(prefix="edgekit-shard-") as folder:
        for file_name, data in files.items():
            (Path(folder) / file_name).write_bytes(data)
        try:
            return run_isolated(Path(folder) / name, inputs, timeout=timeout, entry=entry, batch=batch,
                                launcher=launcher, what=what, threads=threads)
        except ARTIFACT_FAILURES as exc:
            return exc


def combine_profiles(verdicts) -> dict:
    """One verdict from each profile's: the worst one's figures (the first that failed, else the
    lowest cosine), every profile's failures, and a compact per-profile summary."""
    if len(verdicts) == 1:
        runner, verdict = verdicts[0]
        return {**verdict, "profile": runner.profile}
    failed = [(r, v) for r, v in verdicts if not v["passed"]]
    worst_runner, worst = failed[0] if failed else min(verdicts, key=lambda rv: rv[1].get("cosine", 1.0))
    combined = {**worst, "profile": worst_runner.profile,
                "failures": [f"{f} (on {r.profile}, {r.how})" for r, v in failed for f in v["failures"]]}
    combined["passed"] = not failed
    combined["profiles"] = {r.profile: {k: v[k] for k in ("passed", "accuracy", "accuracy_drop", "cosine",
                                                           "cosine_min", "top1_agreement") if k in v}
                            for r, v in verdicts}
    return combined


def recorded_tolerance(entry: ekr.ArtifactEntry, overrides=()) -> tuple:
    """(Tolerance, where it came from) for an artifact of a bundle: the one its export judged it
    with (``parity.tolerance`` in the manifest), else the defaults, with ``--tol`` ``overrides``
    for its precision applied on top."""
    precision = Precision(entry.precision)
    stored = entry.parity.tolerance if entry.parity is not None else None
    base, source = DEFAULT_TOLERANCES[precision], "defaults (the bundle records none)"
    if hasattr(stored, "items"):
        known = {f.name for f in dataclasses.fields(Tolerance)}
        try:
            base = Tolerance(**{k: plain(v) for k, v in stored.items() if k in known})
        except (ConfigError, TypeError) as exc:
            raise InputError(f"{entry.id}: the tolerance recorded in the manifest is invalid: {exc}") from exc
        source = "recorded in the bundle"
    if overrides:
        tolerance = parse_tolerance_overrides(overrides, base={**DEFAULT_TOLERANCES, precision: base})[precision]
        if tolerance != base:
            return tolerance, f"{source}, with --tol overrides"
    return base, source


def verify(bundle, eval, *, tolerances=None, artifacts=None, latency=False, progress=None, isolate=True,
           timeout=VERIFY_TIMEOUT_S, target_cpu=None, emulation="auto", require=(), overrides=(), workers=1,
           ray_address=None) -> Report:
    """Re-run parity of an existing bundle on ``eval`` against its stored reference outputs.

    Each artifact runs in an isolated child process (``isolate``), within ``timeout`` seconds, on
    each CPU profile of ``target_cpu`` (default: those the bundle was exported for; see
    ``edgekit.profiles``), natively or emulated.
    Each artifact is judged with ``tolerances`` (per precision) when given, else with the tolerance
    its export recorded, ``overrides`` (``--tol`` strings) applied on top.
    An artifact whose engine is not installed here is skipped (reported, not failed) unless its
    format is in ``require``, which makes the missing engine an error. ``workers``/``ray_address``:
    the profiles and shards of the eval set run as Ray tasks (``evaluate``).
    Raises ParityError (carrying the report) when an artifact fails, InputError when
    the eval data is not the data the reference was computed on.
    """
    check_timeout(timeout)
    parallel = Workers(workers, ray_address)
    parse_tolerance_overrides(overrides)  # a bad --tol is a usage error before any work
    bundle = Path(bundle)
    try:
        manifest = ekr.read_manifest(bundle)  # parsed once: every artifact is selected from it
    except ekr.ModelLoadError as exc:
        raise InputError(str(exc)) from exc
    ids = [e.id for e in manifest.artifacts]
    unknown = [a for a in artifacts or [] if a not in ids]
    if unknown:
        raise ConfigError(f"--artifact {', '.join(unknown)}: not in {bundle}"
                          + "".join(did_you_mean(a, ids) for a in unknown) + f"; its artifacts: {', '.join(ids)}")
    recorded = manifest.target_cpu.get("requested")
    runners, not_verified = checkable(target_cpu or recorded or default_targets(), emulation)
    specs = list(manifest.inputs)
    pre = manifest.preprocessing
    preprocess = ImagePreprocess(**{k: v for k, v in pre.items() if k != "scale"}) if pre else None
    dataset = validate(load_data(eval, preprocess=preprocess, role="eval"), specs, role="eval")
    reference = ReferenceOutputs.load(bundle, plain(manifest.reference))
    unhashed = [] if manifest.reference.get("sha256") else [
        f"{reference.file} has no sha256 in the manifest (exported before edgekit recorded one): used "
        "unchecked; re-export to record it"]
    if reference.eval_sha256 and dataset.sha256() != reference.eval_sha256:
        raise InputError(
            f"the eval data ({dataset.origin}, {len(dataset)} samples) is not the data the reference "
            f"outputs were computed on ({reference.num_samples} samples, sha256 {reference.eval_sha256[:12]}…); "
            "verify with the same --eval as the export")
    report = Report("verify", source=plain(manifest.source), reference=plain(manifest.reference),
                    output=str(bundle))
    report.warnings += unhashed
    report.warnings += not_verified_warnings(not_verified)
    entries = [e for e in manifest.artifacts if artifacts is None or e.id in artifacts]
    references = {reference.file: reference}
    if not entries:
        raise NothingEvaluatedError(f"no artifact to verify in {bundle} (asked for {artifacts})")
    with session():  # (a Ray started for --workers stops when the verification ends)
        for artifact in entries:
            entry = artifact.to_dict()  # the report's copy, which this verification's verdict replaces
            for measured_at_export in ("latency_ms", "latency_cpu"):  # this run measures its own, or none
                entry.pop(measured_at_export, None)
            with timed_step(f"verify {artifact.id}", report.stages, progress):
                try:
                    file = artifact_path(bundle, artifact, check_hash=True)
                    ekr.backends.backend_for(file)  # the engine is installed
                except ekr.BackendUnavailableError as exc:
                    # A runner without this format's engine cannot check it: not a regression, unless
                    # the format is one this runner must check.
                    if entry["format"] in (require or ()):
                        raise MissingDependencyError(f"{entry['id']}: {exc} (--require {entry['format']})") from exc
                    entry["parity"] = {"passed": None, "skipped": f"engine not installed: {exc}", "failures": []}
                    report.warnings.append(f"{entry['id']} not verified here: {exc}")
                except ekr.ModelLoadError as exc:
                    entry["parity"] = {"passed": False, "failures": [f"cannot load: {exc}"]}
                else:
                    own = entry.get("reference")  # artifacts of a QAT model: that model's outputs
                    if own and own["file"] not in references:
                        references[own["file"]] = ReferenceOutputs.load(bundle, own)
                    if tolerances is not None:
                        tolerance, used = tolerances[Precision(artifact.precision)], "given by the caller"
                    else:
                        tolerance, used = recorded_tolerance(artifact, overrides)
                    entry["tolerance_source"] = used
                    evaluate(entry, file, dataset, references[own["file"]] if own else reference,
                             tolerance, specs, latency=latency, isolate=isolate,
                             timeout=timeout, kinds=plain(manifest.output_kinds), runners=runners,
                             not_verified=not_verified, workers=parallel)
            report.artifacts.append(entry)
    if all(a["parity"].get("skipped") for a in report.artifacts):
        raise NothingEvaluatedError(f"no artifact of {bundle} could be verified here: "
                                    + "; ".join(a["parity"]["skipped"] for a in report.artifacts))
    if not report.passed:
        raise ParityError("parity failed: " + "; ".join(report.failures), report)
    return report

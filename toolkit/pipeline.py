"""The export pipeline, one direction only:

load source → bind and validate data → reference outputs → (prune / QAT) → export
per format → quantize per format → verify each artifact through edgekit.runtime →
write the bundle atomically.

Each stage is a function of plain values; ``export`` only sequences them.
"""

import dataclasses
import json
import logging
import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import edgekit.runtime as ekr
from edgekit.runtime._cpu import cpu_flags, describe_host
from edgekit.converters import FORMATS, format_module
from edgekit.quantize.prune import gzip_size
from edgekit.quantize.recipes import candidates, summary

from . import golden
from ._version import __version__, versions
from .bundle import check_output_dir, output_lock, staged_bundle
from .compress import prune_stage, qat_stage
from .config import CALIBRATED, ExportConfig, ModelType, Precision, QuantizeOptions
from .data import Dataset, check_calibration, load_data, validate
from .errors import ConfigError, InputError, ParityError, QuantizationError, UnsupportedError, did_you_mean
from .memory import over_budget, trim_heap
from .memory import plan as memory_plan
from .parity import output_kinds
from .profiles import checkable, not_verified_warnings
from .report import Report
from .routes import FP32, MANIFEST_SCHEMES, QAT, ROUTES
from .sources import load_source
from .timing import timed_step
from .verification import ARTIFACT_FAILURES, evaluate, measure_latency
from .workers import session as workers_session

log = logging.getLogger("edgekit.pipeline")


def export(model, example_inputs=None, *, calib=None, eval=None, targets=("onnx",), int8=False,
           fp16=False, precisions=None, out, weights=None, input_specs=None, preprocess=None, labels=None,
           quantize: QuantizeOptions | None = None, config: ExportConfig | None = None,
           progress=None, trust_model=False, custom_objects=None, **options) -> Report:
    """Export ``model`` to every target (fp32, plus int8/fp16 when asked), verify, write the bundle.

    ``model``: a live torch module / torch.export program, ``file.py:factory``, a ``.pt2`` or
    ``.onnx`` path (``.pt2``/TorchScript only with ``trust_model=True``); a saved Keras model's own classes
    come from ``custom_objects`` (the user's FILE.py files, or a dict). ``calib``/``eval``: anything ``edgekit.data.load_data`` takes. Further keyword
    options are ExportConfig fields (``reference_device``, ``tolerances``, ``seed``, ``opset``...).
    Returns the Report; raises ParityError (with the report) when an artifact fails its tolerance,
    after keeping the failing candidate bundle at ``OUT.rejected``.
    """
    loose = {name: value for name, value in (("targets", targets if targets != ("onnx",) else None),
                                             ("int8", int8 or None), ("fp16", fp16 or None),
                                             ("precisions", precisions), ("quantize", quantize)) if value is not None}
    if config is not None and (loose or options):
        raise ConfigError(f"config= holds every export option; also given: {', '.join([*loose, *options])} "
                          "(put them in the ExportConfig, e.g. dataclasses.replace(config, ...))")
    if config is None:
        fields = {f.name for f in dataclasses.fields(ExportConfig)}
        unknown = [name for name in options if name not in fields]
        if unknown:
            raise ConfigError(f"unknown export option(s): {', '.join(unknown)}"
                              + "".join(did_you_mean(name, sorted(fields)) for name in unknown))
        precisions = list(precisions or []) + ([Precision.FP16] if fp16 else []) + ([Precision.INT8] if int8 else [])
        config = ExportConfig(targets=tuple(targets) if not isinstance(targets, str) else targets,
                              precisions=tuple(precisions), quantize=quantize or QuantizeOptions(), **options)
    runners, not_verified = checkable(config.target_cpu, config.emulation)
    out = check_output_dir(Path(out))
    # One export per output folder: the lock is held until the bundle is in place. A Ray started for
    # --workers stops when the export ends.
    with output_lock(out), workers_session():
        check_output_dir(out)  # again, now that no other export can change it
        np.random.seed(config.seed)
        report = Report("export", output=str(out))
        report.warnings += not_verified_warnings(not_verified)
        trim_heap()  # what the caller freed but glibc kept (building a Keras MobileNetV2: 1 GB) goes back first

        with timed_step("load source", report.stages, progress):
            source = load_source(model, weights=weights, input_specs=input_specs, trust_model=trust_model,
                                 custom_objects=custom_objects)
        report.source = {"model": source.description, "framework": source.framework}
        config = _plan(source, config, report)  # unsupported cells: known before any work

        with timed_step("load data", report.stages, progress):
            calibration, evaluation = _load_datasets(source, example_inputs, calib, eval, preprocess, labels,
                                                     config, report)
            source.probe(evaluation, timeout=config.timeout)
        source = source.freeze()  # the PreparedModel every later stage receives (edgekit.prepared)
        memory = memory_plan(config.max_memory, _sample_bytes(evaluation))
        report.memory = memory.describe()

        with timed_step(f"reference ({source.framework})", report.stages, progress):
            reference = source.reference(evaluation, config.reference_device, timeout=config.timeout, memory=memory)
        report.reference = reference.provenance()
        unknown = sorted(set(config.output_kinds) - set(reference.outputs))
        if unknown:
            raise ConfigError(f"output kinds given for {unknown}; the model's outputs are {list(reference.outputs)}")
        unknown = sorted({name for t in config.tolerances.values() for name in t.per_output} - set(reference.outputs))
        if unknown:
            raise ConfigError(f"tolerances given for outputs {unknown}; the model's outputs are {list(reference.outputs)}")
        kinds = output_kinds(reference.outputs, evaluation.labels, config.output_kinds)
        original = reference
        if config.prune is not None:
            source, reference = prune_stage(source, reference, evaluation, config, report, progress)
        qat = {}  # format -> (its QAT model, that model's reference)
        if config.qat is not None:
            qat = qat_stage(source, original, calibration, evaluation, config, report, progress)

        workers = config.parallelism()
        with staged_bundle(out) as staging:
            def reference_of(entry):  # an artifact of a QAT model is judged against that model's outputs
                return qat[entry["format"]][1] if entry.get("reference") else reference

            def judge(entry, file=None, latency=True):
                """Verify one artifact through the runtime (in a child when isolated, loaded here only
                to measure latency, unless ``latency`` is off); fills ``entry["parity"]``. ``file``:
                where the artifact is when not at its place in the bundle (a recipe kept aside)."""
                with timed_step(f"verify {entry['id']}", report.stages, progress):
                    evaluate(entry, file or staging.path / entry["file"], evaluation, reference_of(entry),
                             config.tolerances[Precision(entry["precision"])], source.input_specs,
                             latency=config.measure_latency and latency, isolate=config.isolate,
                             timeout=config.timeout, kinds=kinds, runners=runners, not_verified=not_verified,
                             workers=workers, batch=memory.child_batch)
                return entry

            for fmt in config.targets:
                report.artifacts += _artifacts_for(fmt, source, calibration, evaluation, config, staging.path,
                                                   report, progress, judge, qat.get(fmt))
            report.warnings += _slower_than_fp32(report.artifacts)
            partial = not report.passed and config.allow_partial and _partial_possible(report)
            shipped = [a for a in report.artifacts if a["parity"]["passed"]] if partial else report.artifacts
            if partial:
                for entry in report.artifacts:
                    if not entry["parity"]["passed"]:
                        for name in [entry["file"], *(c["file"] for c in entry.get("companions", []))]:
                            (staging.path / name).unlink(missing_ok=True)
            used = {a["reference"]["file"] for a in shipped if "reference" in a}
            references = [reference, *{ref.file: ref for _, ref in qat.values() if ref.file in used}.values()]
            digests = {ref.file: ref.save(staging.path) for ref in references}
            golden_record = golden.write(staging.path, evaluation, references, source.input_specs, source.output_names)
            if golden_record is not None:
                with timed_step("golden samples", report.stages, progress):
                    for entry in (e for e in shipped if e["parity"]["passed"]):  # (they ran, in a child)
                        entry["golden"] = golden.figures(staging.path, entry, evaluation, reference_of(entry),
                                                         source.input_specs, kinds, golden_record["samples"])
            report.warnings += over_budget(report.stages, config.max_memory)  # (every stage has run)
            manifest = _manifest(source, reference, evaluation, config, report, preprocess, calibration, shipped)
            manifest["golden"] = golden_record
            manifest["output_kinds"] = kinds  # verify judges each output as the export did
            manifest["target_cpu"] = {"requested": list(config.target_cpu),
                                      "verified": [{"profile": r.profile, "how": r.how} for r in runners],
                                      "not_verified": not_verified}
            if partial:
                manifest["missing_artifacts"] = [{"id": a["id"], "failures": a["parity"]["failures"]}
                                                 for a in report.artifacts if not a["parity"]["passed"]]
            qat_provenances = [a["reference"] for a in manifest["artifacts"] if "reference" in a]
            for provenance in [manifest["reference"], *qat_provenances]:
                provenance["sha256"] = digests[provenance["file"]]  # checked by ReferenceOutputs.load
            # Checked by the runtime's records: what a device would refuse to read fails here, not there.
            text = json.dumps(manifest, indent=2) + "\n"
            ekr.Manifest.from_dict(json.loads(text))  # the file's own content, as a device will parse it
            (staging.path / ekr.MANIFEST_NAME).write_text(text)
            (staging.path / "report.json").write_text(report.to_json() + "\n")
            (staging.path / "report.md").write_text(report.to_markdown())
            (staging.path / "report.html").write_text(report.to_html())
            if report.passed:
                staging.commit()
            elif partial:
                staging.commit()
                missing = [a["id"] for a in report.artifacts if not a["parity"]["passed"]]
                raise ParityError(f"parity failed for {', '.join(missing)}; bundle written to {out} with the "
                                  f"{len(shipped)} artifacts that passed (--allow-partial): "
                                  + "; ".join(report.failures), report)
            else:
                rejected = staging.reject()
                report.output = str(rejected)
                raise ParityError(f"parity failed (candidate kept at {rejected}): " + "; ".join(report.failures),
                                  report)
        return report


def _plan(source, config, report):
    """``config`` without the requested cells the support table lacks for this source: each is a
    warning (an error with ``strict``), found before any conversion starts."""
    framework, missing, targets = source.framework, [], []
    for fmt in config.targets:
        if ROUTES.find(framework, fmt, FP32) is None:
            formats = ", ".join(ROUTES.formats(framework))
            missing.append(f"{fmt} from a {framework} model: no converter (from {framework}: {formats})")
            continue
        targets.append(fmt)
        for precision in config.precisions:
            qat = config.qat is not None and precision == Precision.INT8
            if precision != Precision.FP32 and ROUTES.find(framework, fmt, QAT if qat else precision) is None:
                missing.append(f"{fmt} {precision} from a {'QAT ' if qat else ''}{framework} model: not supported")
    if missing and config.strict:
        raise UnsupportedError("unsupported in the support matrix (--strict): " + "; ".join(missing))
    report.warnings += [f"{cell}; no artifact made" for cell in missing]
    if not targets:
        raise UnsupportedError(f"none of the requested formats can be made from a {framework} model: "
                               + "; ".join(missing))
    return dataclasses.replace(config, targets=tuple(targets))


def _load_datasets(source, example_inputs, calib, eval, preprocess, labels, config, report):
    loaded = {role: load_data(spec, preprocess=preprocess, role=role)
              for role, spec in (("calibration", calib), ("eval", eval)) if spec is not None}
    if example_inputs is not None and not loaded:
        loaded["example"] = load_data(example_inputs, role="example_inputs")
    calibrated = [str(p) for p in config.precisions if p in CALIBRATED]
    if calibrated and "calibration" not in loaded:
        raise ConfigError(f"{', '.join(calibrated)} needs calibration data: pass calib= (CLI: --calib DATA)")
    if not loaded:
        if not source.input_specs or any(d is None for s in source.input_specs for d in s.shape[1:]):
            raise ConfigError("no data to verify with: pass eval= or calib= (CLI: --eval/--calib), "
                              "or example_inputs")
        loaded["random"] = _random_data(source.input_specs, config.seed)
        report.warnings.append(f"no eval data given: parity checked on {RANDOM_SAMPLES} random samples (no accuracy)")
    if source.input_specs is None:
        source.input_specs = _specs_from_data(source, loaded)
    validated = {role: validate(ds, source.input_specs, role=role) for role, ds in loaded.items()}
    if labels is not None:
        for role, ds in validated.items():
            if ds.class_names is None:
                validated[role] = Dataset(ds.inputs, ds.labels, ds.origin, tuple(labels))
    calibration = validated.get("calibration")
    if calibration is not None and calibrated:
        report.warnings += check_calibration(calibration, min_samples=config.quantize.min_calibration_samples)
    if calibration is not None:
        # Capped here, once: every quantizer, QAT and the blame passes calibrate on these samples.
        calibration = calibration.take(config.quantize.max_calibration_samples)
    evaluation = validated.get("eval") or calibration or next(iter(validated.values()))
    if "eval" not in validated and "random" not in validated:
        report.warnings.append("no eval data given: parity checked on the calibration set")
    return calibration, evaluation


def _specs_from_data(source, loaded) -> list:
    """Input specs of a model that declares none, from its data: the eval set's (it feeds the
    reference) once every other data set agrees. When they disagree, the error names each file with
    what it holds and whether the model runs on it: the model is the only judge of which is right."""
    inferred = {}
    for role, dataset in loaded.items():
        try:
            inferred[role] = source.specs_from_data(dataset)
        except InputError as exc:
            raise InputError(f"{role} ({dataset.origin}): {exc}") from exc
    held = {role: {s.name: (ekr.format_shape(s.shape, compact=True), np.dtype(s.dtype).name) for s in specs}
            for role, specs in inferred.items()}
    if len({repr(sorted(h.items())) for h in held.values()}) > 1:
        verdicts = {}
        for role, specs in inferred.items():
            source.input_specs = specs
            try:
                source.probe(validate(loaded[role], specs, role=role))
                verdicts[role] = "the model runs on it"
            except InputError as exc:
                verdicts[role] = f"the model rejects it: {exc}"
        source.input_specs, source.output_names = None, None
        raise InputError("the data sets disagree on the model's inputs (the model declares no input shapes, so "
                         "each is checked against the model): " + "; ".join(
                             f"{role} ({loaded[role].origin}) holds {held[role]} — {verdicts[role]}" for role in held))
    return inferred["eval"] if "eval" in inferred else next(iter(inferred.values()))


def _sample_bytes(dataset) -> int:
    """Bytes of one sample's inputs: what the memory plan sizes batches by."""
    return sum(array[:1].nbytes for array in dataset.inputs.values())


RANDOM_SAMPLES = 64
MAX_RANDOM_BYTES = 1 << 30  # peak memory of synthesized eval data; a model that needs more needs real data


def _random_data(specs, seed) -> Dataset:
    shapes = {spec.name: (RANDOM_SAMPLES, *spec.shape[1:]) for spec in specs}
    bad = {name: shape for name, shape in shapes.items() if any(d < 0 for d in shape)}
    if bad:
        raise InputError(f"the model declares input shapes {bad} with negative sizes; expected sizes >= 0")
    # Each array is drawn as 8-byte values, then cast to the input's dtype.
    peak = sum(math.prod(shapes[s.name]) * (8 + np.dtype(s.dtype).itemsize) for s in specs)
    if peak > MAX_RANDOM_BYTES:
        raise ConfigError(f"no eval data given, and {RANDOM_SAMPLES} random samples of the inputs {shapes} would take "
                          f"{peak / (1 << 30):.1f} GiB to make (limit {MAX_RANDOM_BYTES / (1 << 30):.0f} GiB): "
                          "pass eval= data (CLI: --eval DATA)")
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        shape = shapes[spec.name]
        inputs[spec.name] = (rng.standard_normal(shape).astype(spec.dtype) if spec.dtype.kind == "f"
                             else rng.integers(0, 2, shape).astype(spec.dtype))
    return Dataset(inputs, origin="random")


def _artifacts_for(fmt, source, calibration, evaluation, config, staging: Path, report, progress, judge, qat=None):
    """Yield the verified manifest entry of fp32 and of each quantized precision of ``fmt``; with
    ``config.qat`` the int8 artifact is converted from the format's QAT model ``qat`` (QAT source,
    its reference; None when the format has no QAT route).
    ``judge(entry)`` verifies an artifact; a precision with a recipe ladder
    (``edgekit.quantize.recipes``) tries its recipes until one passes."""
    suffix = FORMATS[fmt][0]
    checker = format_module(fmt)
    convert = ROUTES.get((source.framework, fmt, FP32))
    fp32_path = staging / f"model{suffix}"
    with timed_step(f"export {fmt} fp32", report.stages, progress):
        result = convert(source, fp32_path, config, example=calibration or evaluation)
        checker.check(fp32_path)
    fp32 = judge(_entry(fmt, Precision.FP32, fp32_path, source, checker, result, {}, result.notes))
    yield fp32
    for precision in config.precisions:
        if precision == Precision.FP32:
            continue
        path = staging / f"model.{precision}{suffix}"
        if config.qat is not None and precision == Precision.INT8:
            entry = _qat_artifact(fmt, path, qat, checker, config, calibration or evaluation, report, progress)
            if entry is not None:
                yield judge(entry)
            continue
        entry = _search(fmt, precision, path, source, checker, result, calibration, evaluation, config, report,
                        progress, judge, fp32.get("latency_ms"))
        if entry is not None:
            yield entry


def _slower_than_own_fp32(artifacts) -> list:
    """(artifact, its format's fp32 latency) for each quantized artifact measured slower than it."""
    fp32 = {a["format"]: a.get("latency_ms") for a in artifacts if a["precision"] == "fp32"}
    return [(a, fp32[a["format"]]) for a in artifacts if a["precision"] != "fp32" and a.get("latency_ms") is not None
            and fp32.get(a["format"]) is not None and a["latency_ms"] > fp32[a["format"]]]


def _slower_than_fp32(artifacts) -> list:
    """Say so when a quantized artifact runs slower than its format's fp32 one on this CPU (tiny
    models, where per-call overhead dominates, and CPUs without fast int8 kernels)."""
    cpu = describe_host()
    return [f"{a['id']} is slower than {a['format']}-fp32 on this CPU ({a['latency_ms']:.3f} vs "
            f"{fp32_ms:.3f} ms per batch-1 call, {cpu}): it gains size, not speed, here"
            for a, fp32_ms in _slower_than_own_fp32(artifacts)]


# A recipe that passes but runs more than this many times slower than the format's fp32 artifact here
# does not end the search. Not 1.0: int8 of a tiny model is always a little slower (fixed per-call
# cost), and recipes of one family run within noise of each other (digits IR: full bias correction
# 1.02x fp32) — going on would only try slower recipes (accuracy control, 972 s on a MiniLM). Measured
# far above it: TFLite 16x8 of MobileNetV2 46x fp32 (reference kernels), ONNX dynamic int8 of it 12x.
MUCH_SLOWER = 1.5
# ... and only for models whose fp32 call takes this long: below it a call is fixed per-call cost and
# timer noise (digits: 0.05 ms fp32, int8 0.07-0.11 ms run to run), which no recipe changes, and the
# recipe shipped would vary between runs.
TIMED_FROM_MS = 1.0


def _search(fmt, precision, path, source, checker, conversion, calibration, evaluation, config, report, progress,
            judge, fp32_ms=None):
    """Quantize with each recipe of the ladder in turn until one passes the gate; return the entry of
    the one that shipped (else of the last tried), with every recipe tried in ``quantization.search``.
    A recipe that passes but runs much slower than the format's fp32 artifact here (``MUCH_SLOWER``
    times ``fp32_ms``, when latency is measured) does not end the search: later recipes may be faster
    (TFLite's 16x8 runs on reference kernels, ONNX dynamic int8 of convolutions on slow ones), and the
    fastest that passed ships."""
    model_type = config.quantize.model_type
    if model_type == ModelType.AUTO:  # a format whose module can tell (ONNX) picks its transformer ladder
        model_type = getattr(checker, "model_type", lambda _: ModelType.CNN)(conversion.path)
    ladder = candidates(fmt, precision, config.quantize, model_type)
    tried, entry, started, out_of_time = [], None, time.monotonic(), None
    shipped, slow, last_failed, failed_quantizing = None, [], None, []  # slow: (latency, index in tried, entry)
    files = _RecipeFiles(checker, path)

    def make(recipe, options, route, judged=True):
        """Quantize with one recipe into ``path``; its entry, verified (``judged``) or not yet."""
        label = f"quantize {fmt} {precision}" + (f" ({recipe.name})" if len(ladder) > 1 else "")
        with timed_step(label, report.stages, progress):
            qresult = route.load()(conversion, path, calibration, options, evaluation=evaluation)
            checker.check(path)
        made = _entry(fmt, precision, path, source, checker, conversion, qresult.details, qresult.notes,
                      scheme=qresult.scheme)
        return judge(made) if judged else made

    try:
        # With parallel workers every recipe is made and verified up front, all at once; the walk
        # below then takes each result in ladder order with the same rules, so the same recipe ships.
        ahead = _made_ahead(ladder, source, fmt, make, files, judge, evaluation, config) \
            if config.parallelism().parallel and len(ladder) > 1 else None
        for rung, (recipe, options) in enumerate(ladder):
            spent = time.monotonic() - started
            if tried and options.search_time is not None and spent >= options.search_time:
                out_of_time = (f"search time budget spent ({spent:.0f} s of {options.search_time:.0f} s) before "
                               f"{recipe.name!r}")
                break
            route = ROUTES.find(source.framework, fmt, recipe.precision)
            if route is None:  # no quantizer for the source's framework: the cell (warned by _plan), or a rung
                if recipe.precision == str(precision):
                    return None
                continue
            try:
                made = (ahead.take(rung) if ahead is not None else None) or make(recipe, options, route)
            except QuantizationError as exc:
                files.clear()  # what the failed quantizer left half-written
                if len(ladder) == 1 or isinstance(exc.__cause__, (OSError, MemoryError)):
                    raise  # a full disk or no memory is the machine's failure, not this recipe's
                # One recipe's quantizer failing on this graph is that recipe's failure, not the search's.
                tried.append({"recipe": recipe.name, "scheme": None, "passed": False,
                              "failures": [f"quantization failed: {exc}"]})
                failed_quantizing.append(exc)
                continue
            entry = made
            tried.append(summary(recipe, entry))
            index = len(tried) - 1
            if not entry["parity"]["passed"]:
                files.drop(last_failed)
                last_failed = files.keep(index)  # the artifact a failed export leaves for inspection
                continue
            latency = entry.get("latency_ms")
            if fp32_ms is None or latency is None or fp32_ms < TIMED_FROM_MS or latency <= fp32_ms * MUCH_SLOWER:
                shipped = index
                break
            tried[-1].update(latency_ms=latency, slower_than_fp32=True)
            slow.append((latency, files.keep(index), entry))
        if entry is None and failed_quantizing:
            raise failed_quantizing[0]
        if shipped is None and slow:
            # Nothing passed at fp32 speed: the fastest recipe that passed ships.
            _, shipped, entry = min(slow, key=lambda item: item[0])
            files.restore(shipped)
        elif shipped is None and last_failed is not None:
            files.restore(last_failed)
    finally:
        files.close()
    if entry is None:
        return None
    if len(ladder) > 1:
        entry["quantization"]["search"] = tried
        if shipped is not None:
            entry["quantization"]["recipe"] = tried[shipped]["recipe"]
        if shipped is not None and len(tried) > 1:
            report.warnings.append(
                f"{entry['id']}: recipe {tried[shipped]['recipe']!r} shipped after " + "; ".join(
                    f"{t['recipe']!r} " + (f"passed but ran much slower than fp32 ({t['latency_ms']:.3f} vs "
                                           f"{fp32_ms:.3f} ms)" if t["passed"] else f"failed ({t['failures'][0]})")
                    for i, t in enumerate(tried) if i != shipped))
        elif shipped is None:
            entry["parity"]["failures"].append(
                f"every recipe tried failed ({', '.join(t['recipe'] for t in tried)}; see quantization.search)"
                + (f"; {out_of_time}" if out_of_time else ""))
        if out_of_time:
            entry["quantization"]["search_stopped"] = out_of_time
    if precision == Precision.INT8 and config.quantize.max_drop is not None and fmt != "openvino":
        report.warnings.append(f"{fmt}-int8: accuracy-controlled quantization (max_drop) is OpenVINO's; "
                               "this artifact is plain post-training int8, judged by the gate")
    report.warnings += [f"{fmt}-{precision}: {note}" for note in entry["notes"]]
    return entry


class _MadeAhead:
    """The recipes of a ladder made and verified before the search walks it (parallel workers).
    ``take(rung)`` puts that recipe's files back at the artifact's path and returns its entry, or
    raises its QuantizationError, as making it during the walk would have; None for a recipe not
    made ahead (the walk makes it in turn, if it gets there)."""

    def __init__(self, files, made: dict):
        self._files, self._made = files, made

    def take(self, rung):
        made = self._made.pop(rung, None)
        if isinstance(made, Exception):
            raise made
        if made is not None:
            self._files.restore(f"ahead{rung}")
        return made


def _made_ahead(ladder, source, fmt, make, files, judge, evaluation, config) -> _MadeAhead:
    """Each recipe made in turn (quantizing is the quick part) and kept aside, then all verified at
    once — a thread each, whose shards run as Ray tasks — then their latency measured one at a time,
    natively (concurrent timings would be the load's, not the artifact's). Not made ahead: recipes
    from the first accuracy-controlled one on (it evaluates the model over and over: 972 s on a
    MiniLM), and those past the search's time budget — the walk makes them if it reaches them."""
    from concurrent.futures import ThreadPoolExecutor
    made, started = {}, time.monotonic()
    for rung, (recipe, options) in enumerate(ladder):
        if options.max_drop is not None or (
                made and options.search_time is not None and time.monotonic() - started >= options.search_time):
            break
        route = ROUTES.find(source.framework, fmt, recipe.precision)
        if route is None:
            continue
        try:
            made[rung] = make(recipe, options, route, judged=False)
        except QuantizationError as exc:
            files.clear()
            if isinstance(exc.__cause__, (OSError, MemoryError)):
                raise  # the machine's failure, not this recipe's
            made[rung] = exc
            continue
        files.keep(f"ahead{rung}")
    entries = [(rung, entry) for rung, entry in made.items() if isinstance(entry, dict)]
    config.parallelism().connect()  # (once, before the threads: each would start a Ray)
    with ThreadPoolExecutor(max_workers=max(1, len(entries)), thread_name_prefix="edgekit-recipe") as pool:
        list(pool.map(lambda item: judge(item[1], file=files.where(f"ahead{item[0]}"), latency=False), entries))
    if config.measure_latency:
        for rung, entry in entries:
            try:
                measure_latency(entry, files.where(f"ahead{rung}"), evaluation, source.input_specs)
            except ARTIFACT_FAILURES:
                pass  # (its verdict already says it does not run)
    return _MadeAhead(files, made)


class _RecipeFiles:
    """The files of the recipes one search made: the newest at the artifact's path, those kept for
    later (passed but slower than fp32; the last that failed; every candidate of a parallel search)
    moved aside into ``.recipe<KEY>/`` under their own names (an IR's .bin still beside its .xml)."""

    def __init__(self, checker, path: Path):
        self._checker, self._path, self._kept = checker, Path(path), {}

    def clear(self):
        for stale in _files(self._checker, self._path):
            stale.unlink(missing_ok=True)

    def keep(self, key):
        """Move the newest recipe's files aside under ``key``; returns ``key``."""
        self._kept[key] = []
        aside = self._path.parent / f".recipe{key}"
        aside.mkdir()
        for original in _files(self._checker, self._path):
            if original.exists():
                moved = aside / original.name
                original.rename(moved)
                self._kept[key].append((moved, original))
        return key

    def where(self, key) -> Path:
        """Where the artifact kept under ``key`` is now."""
        return self._path.parent / f".recipe{key}" / self._path.name

    def restore(self, key):
        self.clear()
        for moved, original in self._kept.pop(key):
            moved.rename(original)
        (self._path.parent / f".recipe{key}").rmdir()

    def drop(self, key):
        if key not in self._kept:
            return
        for moved, _ in self._kept.pop(key):
            moved.unlink(missing_ok=True)
        (self._path.parent / f".recipe{key}").rmdir()

    def close(self):
        for key in list(self._kept):
            self.drop(key)


def _qat_artifact(fmt, path, qat, checker, config, example, report, progress):
    if qat is None:  # no QAT route for the format: the cell, warned by _plan
        return None
    qat_source, qat_reference = qat
    route = ROUTES.find(qat_source.framework, fmt, QAT)  # (qat_stage trains only for formats with one)
    with timed_step(f"export {fmt} int8 (QAT)", report.stages, progress):
        try:
            result = route.load()(qat_source, path, config, example)
        except UnsupportedError as exc:
            report.warnings.append(f"{fmt} int8 from the QAT model: not supported, no artifact made ({exc})")
            for leftover in _files(checker, path):
                leftover.unlink(missing_ok=True)
            return None
        checker.check(path)
    entry = _entry(fmt, Precision.INT8, path, qat_source, checker, result, {"qat": True}, result.notes,
                   scheme=route.capabilities.manifest_scheme)
    entry["reference"] = qat_reference.provenance()
    return entry


def _files(checker, path: Path) -> list:
    """An artifact's files: the one the manifest names, then its companions (an IR's .bin)."""
    return [Path(path), *getattr(checker, "companions", lambda _: [])(path)]


def _entry(fmt, precision, path: Path, source, checker, conversion, quantization, notes, scheme=None) -> dict:
    engine = ekr.backends.backend_for(path)(path)  # the file's own view of its tensors
    files = _files(checker, path)
    companions = [{"file": p.name, "sha256": ekr.sha256_file(p), "size_bytes": p.stat().st_size} for p in files[1:]]
    # Converters may rename tensors (matched to the source's by position) and change layouts.
    layouts = conversion.input_layouts
    inputs = [ekr.TensorInfo(t.name, t.shape, t.dtype, layouts.get(t.name, spec.layout), t.scale, t.zero_point,
                             alias=spec.name if spec.name != t.name else None).to_dict()
              for t, spec in zip(engine.inputs, source.input_specs)]
    outputs = [ekr.TensorInfo(t.name, t.shape, t.dtype, None, t.scale, t.zero_point,
                              alias=name if name != t.name else None).to_dict()
               for t, name in zip(engine.outputs, source.output_names)]
    return {
        "id": f"{fmt}-{precision}", "format": fmt, "precision": str(precision),
        "scheme": scheme or MANIFEST_SCHEMES[str(precision)],
        "file": path.name, "sha256": ekr.sha256_file(path),
        "size_bytes": sum(p.stat().st_size for p in files),
        "gzip_bytes": sum(gzip_size(p) for p in files),
        **({"companions": companions} if companions else {}),
        "inputs": inputs, "outputs": outputs,
        "quantization": quantization, "contents": checker.describe(path),
        "tools": {"converter": conversion.tool}, "notes": list(notes),
    }


def choose_default(artifacts, source_layouts=None):
    """The artifact ``load(bundle)`` picks: among those that passed, by the runtime's one choice rule
    (``edgekit.runtime.preferred``: source layout, within 10% of the fastest, smallest). A quantized
    artifact measured slower than its format's fp32 one is never the default: it gains size, not
    speed, here."""
    passed = [a for a in artifacts if a["parity"]["passed"]]
    if not passed:
        return None
    slower = {id(a) for a, _ in _slower_than_own_fp32(passed)}
    passed = [a for a in passed if id(a) not in slower] or passed
    chosen = ekr.preferred([ekr.ArtifactEntry.from_dict(a) for a in passed], source_layouts)
    return next(a for a in passed if a["id"] == chosen.id)


def _partial_possible(report) -> bool:
    """--allow-partial ships a bundle when an artifact passed and every model stage (prune, QAT) did:
    a failed compression stage leaves no model whose artifacts could be trusted."""
    return (any(a["parity"]["passed"] for a in report.artifacts)
            and all(row.get("passed", True) for row in report.compression))


def _manifest(source, reference, evaluation, config, report, preprocess, calibration=None, artifacts=None) -> dict:
    artifacts = report.artifacts if artifacts is None else artifacts
    default = choose_default(artifacts, source_layouts=[s.layout for s in source.input_specs])
    return {
        "schema_version": ekr.SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgekit_version": __version__,
        "source": report.source,
        "compression": report.compression,
        "inputs": [ekr.TensorInfo(s.name, s.shape, np.dtype(s.dtype), s.layout).to_dict()
                   for s in source.input_specs],
        "outputs": list(source.output_names),
        "preprocessing": preprocess.to_dict() if preprocess is not None else None,
        "labels": list(evaluation.class_names) if evaluation.class_names else None,
        "default_artifact": default["id"] if default else None,
        "artifacts": artifacts,
        "reference": reference.provenance(),
        "seed": config.seed,
        "data": {"eval_sha256": evaluation.sha256(), "eval_samples": len(evaluation),
                 "calibration_sha256": calibration.sha256() if calibration is not None else None,
                 "calibration_samples": len(calibration) if calibration is not None else 0},
        "environment": {"platform": platform.platform(), "machine": platform.machine(),
                        "cpu_flags": list(cpu_flags()), "versions": versions()},
    }

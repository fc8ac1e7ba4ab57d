"""The golden self-test: a bundle checks itself on the device, with no eval data and no framework.

The export stores a few eval samples and the reference outputs for them (``golden.npz``, at most
``GOLDEN_MAX_SAMPLES`` samples and ``GOLDEN_MAX_BYTES``), and records for each artifact what it
measured on those samples (``golden`` in its manifest entry). ``selftest`` runs the artifact here
on the stored inputs and judges its outputs against the stored reference: each output's mean
cosine (per-token outputs with their padding masked, as the gate does) and worst-sample cosine,
and the top-1 agreement of class scores. The bar for each figure is the artifact's recorded
tolerance, or what the verifying machine measured on these same samples when that was lower (a
few samples can sit below a mean that held over the whole eval set), less ``SLACK``. It fails
when this CPU computes the artifact worse than the machine that verified it: the failure the
CPU profiles exist for.
"""

from dataclasses import dataclass, field

import numpy as np

from ._cpu import describe_host, host_profile
from ._errors import ModelLoadError
from ._manifest import _checked_file
from ._metrics import masked, sample_cosines, token_mask
from ._tensor import to_layout

GOLDEN_NAME = "golden.npz"
GOLDEN_MAX_SAMPLES = 16
GOLDEN_MAX_BYTES = 1 << 20   # inputs and every reference's outputs, together
SLACK = 1e-3                 # cosine: float accumulation order differs between CPUs by ~1e-6; int8 more


@dataclass(frozen=True)
class SelfTestResult:
    artifact: str
    passed: bool
    cpu: str                                   # this CPU, described
    profile: str | None                        # its profile (edgekit.runtime._cpu)
    verified_here: bool | None                 # the artifact was verified on this profile (None: not recorded)
    samples: int
    figures: dict = field(default_factory=dict)    # output -> {cosine, cosine_min, top1_agreement}
    failures: tuple = ()

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "passed": self.passed, "cpu": self.cpu, "profile": self.profile,
                "verified_here": self.verified_here, "samples": self.samples, "figures": self.figures,
                "failures": list(self.failures)}


def golden_keys(count_inputs: int, reference_files) -> tuple:
    """The npz keys: ``i<k>`` per input (the manifest's input order), ``r<j>o<k>`` per reference j's output k."""
    return [f"i{k}" for k in range(count_inputs)], {file: f"r{j}o" for j, file in enumerate(reference_files)}


def read_golden(bundle_dir, manifest) -> tuple:
    """(inputs by source name, {reference file: {output name: array}}) from the bundle's golden file,
    checked against its sha256; ModelLoadError when the bundle has none or it does not fit."""
    record = manifest.golden
    if not record:
        raise ModelLoadError("this bundle stores no golden samples (exported before edgekit made them, or its "
                             "samples were too large); run `edgekit verify DIR --eval DATA` instead")
    path = _checked_file(bundle_dir, "the golden samples", record["file"], record.get("sha256"), True)
    references = list(record["references"])
    input_keys, prefixes = golden_keys(len(manifest.inputs), references)
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = {t.name: data[key] for t, key in zip(manifest.inputs, input_keys)}
            outputs = {file: {name: data[f"{prefix}{k}"] for k, name in enumerate(manifest.outputs)}
                       for file, prefix in prefixes.items()}
    except (KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path}: not the golden samples the manifest describes: {exc}") from exc
    counts = {len(a) for a in inputs.values()} | {len(a) for r in outputs.values() for a in r.values()}
    if len(counts) != 1:
        raise ModelLoadError(f"{path}: its arrays hold different numbers of samples {sorted(counts)}")
    return inputs, outputs


def measure(model, source_inputs, inputs: dict, reference: dict, kinds) -> dict:
    """Per output: the mean and worst per-sample cosine against ``reference`` (padding masked) and,
    for class scores, the top-1 agreement. ``inputs`` are by source name, in the source's layouts
    (``source_inputs``, the manifest's); each goes to the artifact in its own layout."""
    feeds = {}
    for spec, artifact_input in zip(source_inputs, model.inputs):
        feeds[artifact_input.key] = np.ascontiguousarray(to_layout(inputs[spec.name], spec.layout, artifact_input.layout))
    outputs = model.run(feeds)
    mask = token_mask(inputs)
    figures = {}
    for name, ref in reference.items():
        out = np.asarray(outputs[name], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        ref_m, _ = masked(ref, mask)
        out_m, _ = masked(out, mask)
        cosines = sample_cosines(ref_m, out_m)
        row = {"cosine": float(cosines.mean()), "cosine_min": float(cosines.min())}
        if kinds.get(name) == "classification" and ref.ndim == 2 and ref.shape[1] > 1:
            row["top1_agreement"] = float((ref.argmax(1) == out.argmax(1)).mean())
        figures[name] = row
    return figures


def selftest(model, bundle_dir, golden=None) -> SelfTestResult:
    """Run ``model`` (loaded from ``bundle_dir``) on the bundle's golden samples and judge it;
    ``golden``: what ``read_golden`` returned for the bundle, when the caller already read it."""
    entry, manifest = model.artifact, model.manifest
    if entry is None or manifest is None:
        raise ModelLoadError("selftest needs a model loaded from a bundle (edgekit.runtime.load(DIR))")
    inputs, references = golden or read_golden(bundle_dir, manifest)
    reference = references.get(entry.reference["file"] if entry.reference else manifest.reference["file"])
    if reference is None:
        raise ModelLoadError(f"the golden samples hold no outputs of the reference {entry.id} is judged against")
    figures = measure(model, manifest.inputs, inputs, reference, dict(manifest.output_kinds))
    recorded = dict(entry.golden or {})
    tolerance = dict(entry.parity.tolerance or {}) if entry.parity else {}
    failures = []
    for name, row in figures.items():
        limits = {**tolerance, **dict((tolerance.get("per_output") or {}).get(name) or {})}
        at_export = dict(recorded.get(name) or {})
        # The gate's figures: the mean cosine of every output, the worst sample's of outputs that are
        # not class scores, the top-1 agreement of class scores.
        checks = [("cosine", "min_cosine"), ("top1_agreement", "min_top1_agreement")]
        if "top1_agreement" not in row:
            checks.append(("cosine_min", "min_sample_cosine"))
        for figure, limit_name in checks:
            bars = [b for b in (limits.get(limit_name), at_export.get(figure)) if b is not None]
            if figure not in row or not bars:
                continue
            bar = min(bars) - (SLACK if figure != "top1_agreement" else 0.0)
            if row[figure] < bar:
                failures.append(f"{name}: {figure.replace('_', ' ')} {row[figure]:.6f} < {bar:.6f} "
                                f"(tolerance {limits.get(limit_name)}, at export on these samples "
                                f"{at_export.get(figure, 'not recorded')})")
    profile = host_profile()
    verified_here = None if entry.verified_on is None else profile in entry.verified_profiles
    return SelfTestResult(entry.id, not failures, describe_host(), profile, verified_here,
                          len(next(iter(inputs.values()))), figures, tuple(failures))

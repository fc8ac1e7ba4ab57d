"""The golden samples a bundle carries for its self-test on the device (``edgekit.runtime._selftest``):
the first eval samples that fit ``GOLDEN_MAX_BYTES`` (at most ``GOLDEN_MAX_SAMPLES``), the outputs of
every reference shipped for them, and each artifact's figures on them, measured here through the
runtime (the device is judged against what this machine saw on the same samples)."""

import logging
from pathlib import Path

import numpy as np

import edgekit.runtime as ekr
from edgekit.runtime._selftest import GOLDEN_MAX_BYTES, GOLDEN_MAX_SAMPLES, GOLDEN_NAME, golden_keys, measure

log = logging.getLogger("edgekit.golden")


def sample_count(evaluation, references) -> int:
    """How many eval samples fit the budget with every reference's outputs for them."""
    per_sample = sum(a[0].nbytes for a in evaluation.inputs.values() if len(a)) + sum(
        a[0].nbytes for ref in references for a in ref.outputs.values() if len(a))
    return min(GOLDEN_MAX_SAMPLES, len(evaluation), GOLDEN_MAX_BYTES // max(per_sample, 1))


def write(staging: Path, evaluation, references, input_specs, output_names) -> dict | None:
    """Write ``golden.npz`` into ``staging``; returns the manifest's ``golden`` record (None, with a
    log line, when not one sample fits)."""
    count = sample_count(evaluation, references)
    if count == 0:
        log.info("golden samples not stored: one sample and its outputs take more than %d bytes", GOLDEN_MAX_BYTES)
        return None
    input_keys, prefixes = golden_keys(len(input_specs), [r.file for r in references])
    arrays = {key: evaluation.inputs[spec.name][:count] for key, spec in zip(input_keys, input_specs)}
    for ref in references:
        arrays.update({f"{prefixes[ref.file]}{k}": ref.outputs[name][:count] for k, name in enumerate(output_names)})
    path = Path(staging) / GOLDEN_NAME
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return {"file": GOLDEN_NAME, "sha256": ekr.sha256_file(path), "samples": count,
            "references": [r.file for r in references]}


def figures(staging: Path, entry: dict, evaluation, reference, input_specs, kinds, count: int) -> dict:
    """What the artifact of ``entry`` gives on the golden samples, against ``reference``."""
    model = ekr.load_artifact(Path(staging) / entry["file"], entry)
    inputs = {spec.name: evaluation.inputs[spec.name][:count] for spec in input_specs}
    outputs = {name: array[:count] for name, array in reference.outputs.items()}
    return measure(model, input_specs, inputs, outputs, kinds)

"""Accuracy regression against a committed baseline: "no worse than the last release".

A baseline is a small JSON file (``edgekit verify DIR --eval DATA --baseline golden.json
--update-baseline`` writes it) holding, per artifact, the figures a verification measured:
accuracy, cosine (mean and worst sample) and top-1 agreement per output, size, latency where
measured, the recipe, scheme and sha256. ``compare`` judges new figures against it: a regression is a
metric worse than its baseline value by more than its tolerance (``TOLERANCES``; ``--baseline-tol
METRIC=VALUE``), or an artifact that disappeared. Latency is compared only when both were measured
on the same CPU profile. ``edgekit diff OLD NEW`` compares two bundles, reports or baselines the
same way and also lists what changed (file hash, recipe, scheme).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, InputError

BASELINE_VERSION = 1
# metric -> (which way is better, how much worse is still not a regression: points, absolute, or
# relative for sizes and latencies). Cosines are compared where int8 noise is ~1e-4 run to run;
# latency +25%: timer noise on a shared CPU moves a tiny model's latency by 10-20% (README).
TOLERANCES = {"accuracy": 0.5, "top1_agreement": 0.005, "cosine": 0.001, "cosine_min": 0.005,
              "size_bytes": 0.05, "latency_ms": 0.25}
RELATIVE = ("size_bytes", "latency_ms")
LOWER_IS_BETTER = ("size_bytes", "latency_ms")
_PER_OUTPUT = ("cosine", "cosine_min", "top1_agreement")


def snapshot(artifacts, cpu_profile=None) -> dict:
    """The baseline figures of verified artifacts (manifest or report entries, as dicts)."""
    entries = {}
    for a in artifacts:
        parity = a.get("parity") or {}
        if parity.get("skipped") or parity.get("passed") is None:
            continue
        metrics = {k: parity[k] for k in ("accuracy", "top1_agreement", "cosine", "cosine_min") if k in parity}
        outputs = parity.get("per_output") or {}
        per_output = {name: {k: row[k] for k in _PER_OUTPUT if k in row}
                      for name, row in outputs.items()} if len(outputs) > 1 else {}  # (one: the metrics are its)
        quantization = a.get("quantization") or {}
        entries[a["id"]] = {"passed": bool(parity.get("passed")), "metrics": metrics, "per_output": per_output,
                            "size_bytes": a.get("size_bytes"), "latency_ms": a.get("latency_ms"),
                            "scheme": a.get("scheme"), "recipe": quantization.get("recipe"),
                            "sha256": a.get("sha256")}
    return {"edgekit_baseline": BASELINE_VERSION, "cpu_profile": cpu_profile, "artifacts": entries}


def read(path) -> dict:
    """A baseline file, a ``report.json`` or a bundle folder, as baseline figures."""
    path = Path(path)
    if path.is_dir():
        import edgekit.runtime as ekr
        from edgekit.runtime._records import plain
        manifest = ekr.read_manifest(path)
        return snapshot([a.to_dict() for a in manifest.artifacts], _profile(plain(manifest.target_cpu)))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such baseline (write one with --update-baseline)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a baseline, report.json or bundle: {exc}") from exc
    if isinstance(data, dict) and data.get("edgekit_baseline") == BASELINE_VERSION:
        return data
    if isinstance(data, dict) and isinstance(data.get("artifacts"), list):  # a report.json
        return snapshot(data["artifacts"], data.get("cpu_profile"))
    raise InputError(f"{path}: expected an edgekit baseline (version {BASELINE_VERSION}), a report.json or a "
                     f"bundle folder; got {type(data).__name__}"
                     + (f" with keys {sorted(data)[:6]}" if isinstance(data, dict) else ""))


def _profile(target_cpu) -> str | None:
    verified = [v.get("profile") for v in (target_cpu or {}).get("verified", []) if v.get("how") == "native"]
    return verified[0] if verified else None


def write(path, figures: dict):
    from .bundle import write_atomic  # a committed baseline is never half-written
    write_atomic(path, json.dumps(figures, indent=2, sort_keys=True) + "\n")


def check(report, path, *, update=False, tolerance_items=()) -> "Comparison | None":
    """The one baseline step of ``verify --baseline`` and ``assert_parity``: this verification's
    figures (on this CPU's profile) written to ``path`` when ``update``, else compared with it."""
    from edgekit.runtime._cpu import host_profile
    figures = snapshot(report.artifacts, host_profile())
    if update:
        write(path, figures)
        return None
    return compare(read(path), figures, parse_tolerances(tolerance_items))


def parse_tolerances(items) -> dict:
    tolerances = dict(TOLERANCES)
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or name not in TOLERANCES:
            raise ConfigError(f"--baseline-tol {item!r}: expected METRIC=VALUE with METRIC in {sorted(TOLERANCES)}")
        try:
            tolerances[name] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--baseline-tol {item!r}: {value!r} is not a number") from exc
    return tolerances


@dataclass
class Comparison:
    rows: list = field(default_factory=list)         # (artifact, metric, old, new, "regression"|"better"|"same"|"changed")
    regressions: list = field(default_factory=list)  # human-readable lines
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.regressions

    def lines(self) -> list:
        shown = [f"{'artifact':16s} {'metric':28s} {'baseline':>14s} {'now':>14s}  verdict"]
        for artifact, metric, old, new, verdict in self.rows:
            shown.append(f"{artifact:16s} {metric:28s} {_shown(old):>14s} {_shown(new):>14s}  {verdict}")
        return shown + [f"note: {n}" for n in self.notes]


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)[:14]


def _verdict(metric, old, new, tolerance) -> str:
    if old is None or new is None:
        return "same" if old == new else "changed"
    worse = (new - old) if metric in LOWER_IS_BETTER else (old - new)
    allowed = tolerance * abs(old) if metric in RELATIVE else tolerance
    if worse > allowed:
        return "regression"
    return "better" if worse < -allowed else "same"


def compare(old: dict, new: dict, tolerances=None) -> Comparison:
    """Judge ``new`` figures against the ``old`` baseline."""
    tolerances = tolerances or TOLERANCES
    result = Comparison()
    same_cpu = old.get("cpu_profile") is not None and old.get("cpu_profile") == new.get("cpu_profile")
    for artifact, before in old["artifacts"].items():
        after = new["artifacts"].get(artifact)
        if after is None:
            result.rows.append((artifact, "artifact", "present", "missing", "regression"))
            result.regressions.append(f"{artifact}: in the baseline, missing now")
            continue
        pairs = [(m, before["metrics"].get(m), after["metrics"].get(m)) for m in before["metrics"]]
        for output, figures in before.get("per_output", {}).items():
            pairs += [(f"{output}.{m}", v, after.get("per_output", {}).get(output, {}).get(m)) for m, v in figures.items()]
        pairs.append(("size_bytes", before.get("size_bytes"), after.get("size_bytes")))
        if same_cpu:
            pairs.append(("latency_ms", before.get("latency_ms"), after.get("latency_ms")))
        for metric, was, now in pairs:
            base_metric = metric.rpartition(".")[2]
            if was is None and now is None:
                continue
            verdict = _verdict(base_metric, was, now, tolerances[base_metric]) if now is not None else "regression"
            result.rows.append((artifact, metric, was, now, verdict))
            if verdict == "regression":
                result.regressions.append(f"{artifact}: {metric} {_shown(was)} -> {_shown(now)} "
                                          f"(tolerance {tolerances[base_metric]}"
                                          f"{' relative' if base_metric in RELATIVE else ''})")
        if before.get("passed") and not after.get("passed"):
            result.rows.append((artifact, "passed", True, False, "regression"))
            result.regressions.append(f"{artifact}: passed its gate in the baseline, fails now")
        for what in ("scheme", "recipe", "sha256"):
            if before.get(what) != after.get(what):
                result.rows.append((artifact, what, before.get(what), after.get(what), "changed"))
    result.notes += [f"{a}: new since the baseline" for a in new["artifacts"] if a not in old["artifacts"]]
    if not same_cpu:
        result.notes.append(f"latency not compared: measured on {old.get('cpu_profile') or 'an unrecorded CPU'} "
                            f"then, {new.get('cpu_profile') or 'an unrecorded CPU'} now")
    return result

"""The export/verify report: one dataclass, written as report.json and report.md, printed as a table."""

import json
import math
from dataclasses import dataclass, field

from .memory import memory_line


@dataclass
class Report:
    command: str                                  # "export" or "verify"
    source: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # manifest artifact entries (with "parity")
    stages: list = field(default_factory=list)
    compression: list = field(default_factory=list)  # reference -> pruned ...: one row per model stage
    warnings: list = field(default_factory=list)
    output: str = ""
    memory: dict = field(default_factory=dict)     # the memory budget and the settings it chose (edgekit.memory)

    @property
    def passed(self) -> bool:
        return (bool(self.artifacts) and all(a["parity"]["passed"] or a["parity"].get("skipped")
                                             for a in self.artifacts)
                and all(row.get("passed", True) for row in self.compression))

    @property
    def failures(self) -> list:
        return ([f"{row['stage']}: {f}" for row in self.compression for f in row.get("failures", [])]
                + [f"{a['id']}: {f}" for a in self.artifacts for f in a["parity"]["failures"]])

    def to_dict(self) -> dict:
        return {"command": self.command, "passed": self.passed, "output": self.output,
                "source": self.source, "reference": self.reference, "compression": self.compression,
                "artifacts": self.artifacts,
                "stages": self.stages, "memory": self.memory, "warnings": self.warnings, "failures": self.failures}

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=2, sort_keys=False)

    def to_html(self) -> str:
        from .report_html import render
        return render(_finite(self.to_dict()))

    def rows(self) -> list:
        rows = [_row(c["stage"], "fp32", c.get("size_bytes"), None, c, c.get("sparsity"), None)
                for c in self.compression]
        for a in self.artifacts:
            rows.append(_row(a["id"], a["precision"], a.get("size_bytes"), a.get("latency_ms"), a["parity"],
                             a.get("contents", {}).get("sparsity"), a.get("gzip_bytes")))
            rows += _output_rows(a["parity"])
        if not self.compression:  # sparsity and compressed size matter once a pruning stage ran
            for r in rows:
                del r["sparsity"], r["gzip"]
        return rows

    def verified_on(self) -> str:
        """One line: the CPU profiles the artifacts were verified on, and how, and those not verified."""
        seen, missing = {}, {}
        for a in self.artifacts:
            seen.update({v["profile"]: v["how"] for v in a.get("verified_on", [])})
            missing.update(a.get("not_verified", {}))
        if not seen:
            return ""
        line = "Verified on: " + ", ".join(f"{p} ({how})" for p, how in seen.items())
        if missing:
            line += "; NOT verified on: " + ", ".join(missing) + " (see warnings)"
        return line

    def tolerances_used(self) -> str:
        """One line: where the tolerances judging the artifacts came from (``edgekit verify``)."""
        used = {}
        for a in self.artifacts:
            if a.get("tolerance_source"):
                used.setdefault(a["tolerance_source"], []).append(a["id"])
        if not used:
            return ""
        if len(used) == 1:
            return f"Tolerances: {next(iter(used))}"
        return "Tolerances: " + "; ".join(f"{source} ({', '.join(ids)})" for source, ids in used.items())

    def table(self) -> str:
        rows = self.rows()
        if not rows:
            return "(no artifacts)"
        headers = list(rows[0])
        widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
        line = "  ".join(h.ljust(widths[h]) for h in headers)
        out = [line, "  ".join("-" * widths[h] for h in headers)]
        out += ["  ".join(r[h].ljust(widths[h]) for h in headers) for r in rows]
        return "\n".join(out)

    def to_markdown(self) -> str:
        rows = self.rows()
        lines = [f"# edgekit {self.command} report", "",
                 f"Result: **{'PASS' if self.passed else 'FAIL'}**", ""]
        if self.source:
            lines.append(f"Source: `{self.source.get('model')}` ({self.source.get('framework')})")
        if self.reference:
            lines.append(f"Reference: {self.reference.get('framework')} on {self.reference.get('device')} "
                         f"({self.reference.get('device_name', '')}), {self.reference.get('num_samples')} samples")
        for line in (self.verified_on(), self.tolerances_used()):
            if line:
                lines.append(line)
        lines.append("")
        if rows:
            headers = list(rows[0])
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(r[h] for h in headers) + " |" for r in rows]
        lines += _blame_tables(self.artifacts)
        if self.failures:
            lines += ["", "## Failures", ""] + [f"- {f}" for f in self.failures]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        if self.stages:
            lines += ["", "## Stages", "", "Peak RSS within each stage: of this process, and of the largest child "
                      "process that ran in it (e.g. a verification run). " + memory_line(self.memory), "",
                      "| stage | seconds | peak RSS (MB) | child peak RSS (MB) |", "|---|---|---|---|"]
            lines += [f"| {s['stage']} | {s['seconds']} | {s['peak_rss_mb']} | {s.get('child_peak_rss_mb', '-')} |"
                      for s in self.stages]
        return "\n".join(lines) + "\n"


def _row(name, precision, size, latency, p, sparsity, gzip_size) -> dict:
    return {
        "artifact": name, "precision": precision, "size": _size(size), "gzip": _size(gzip_size),
        "latency": f"{latency:.3f} ms" if latency is not None else "-",
        "accuracy": f"{p['accuracy']:.2f}%" if "accuracy" in p else "-",
        "delta": f"{0.0 - p['accuracy_drop']:+.2f} pt" if "accuracy_drop" in p else "-",
        "top-1 agree": f"{p['top1_agreement'] * 100:.2f}%" if "top1_agreement" in p else "-",
        "cosine": f"{p['cosine']:.6f}" if "cosine" in p else "-",
        "SQNR": f"{p['sqnr_db']:.1f} dB" if "sqnr_db" in p and math.isfinite(p["sqnr_db"]) else (
            "inf" if "sqnr_db" in p else "-"),
        "sparsity": f"{sparsity * 100:.1f}%" if sparsity is not None else "-",
        "result": "SKIP" if p.get("skipped") else "PASS" if p.get("passed", True) else "FAIL",
    }


def _output_rows(parity) -> list:
    """One sub-row per output when an artifact has several: each is judged on its own."""
    per_output = parity.get("per_output", {})
    if len(per_output) < 2:
        return []
    rows = []
    for name, metrics in per_output.items():
        failed = any(f.startswith(f"{name}: ") for f in parity.get("failures", []))
        row = _row(f"  {name} ({metrics.get('kind', '?')})", "", None, None, {**metrics, "passed": not failed},
                   None, None)
        rows.append({**row, "latency": "", "size": "", "gzip": "", "sparsity": ""})
    return rows


def _blame_tables(artifacts) -> list:
    """Per artifact whose quantization ranked its layers (the mixed-precision recipe): the top layers
    by the quantization noise they add, and which were kept in float."""
    lines = []
    for a in artifacts:
        quantization = a.get("quantization", {})
        blame = quantization.get("blame") or next(
            (t["blame"] for t in reversed(quantization.get("search", [])) if t.get("blame")), None)
        if not blame:
            continue
        lines += ["", f"## Per-layer blame: {a['id']}", "",
                  "Nodes ranked by the quantization noise they add (relative to their output's energy), "
                  "measured against the float graph on calibration samples.", "",
                  "| node | op | output SQNR (dB) | noise added | kept in float |", "|---|---|---|---|---|"]
        lines += [f"| {r['node']} | {r['op']} | {r['sqnr_db']} | {r['noise_added'] * 100:.2f}% | "
                  f"{'yes' if r.get('kept_fp32') else 'no'} |" for r in blame]
    return lines


def _size(n):
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _finite(value):
    """JSON has no inf/NaN: write them as strings so every reader can parse the report."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

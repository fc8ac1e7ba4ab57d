"""``report.html``: the report as one self-contained page (no network, no external assets).

Per artifact: accuracy, cosine (mean and worst sample), size and latency, with inline SVG bars
against its format's fp32 artifact; its figures on each CPU profile it was verified on; the
per-output figures of models with several outputs; each output's error histogram (how many eval
samples fall in each decade of 1 - cosine); the recipes the int8 search tried, on each profile, and
which shipped; the per-layer blame tables; the compression stages; every stage's wall time and peak
memory; the warnings. Every figure cell carries ``data-artifact`` and ``data-figure`` attributes
holding the exact value of report.json, so a test (and a script) can read the page back. Rendered
from report.json's dict, so ``edgekit report DIR`` rebuilds it from a bundle.

The histograms are charts drawn by matplotlib (the ``edgekit[report]`` extra) as inline SVG; without
it they are tables of the same counts.
"""

import io
import json
import re
from html import escape

from .memory import memory_line

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#17702b;font-weight:600}
.fail{color:#b00020;font-weight:600}.skip{color:#777}svg{vertical-align:middle}h2{margin-top:1.6em}
.warn{background:#fff6e0;padding:.3em .6em;margin:.2em 0}
"""


def bar(fraction, colour="#4a7bd0", width=120, mark=True) -> str:
    """An inline SVG bar, ``fraction`` of its width (capped at 1.5; ``mark``: a line at 1.0, fp32)."""
    if fraction is None:
        return ""
    shown = max(0.0, min(float(fraction), 1.5))
    line = (f'<line x1="{width / 1.5:.1f}" x2="{width / 1.5:.1f}" y1="0" y2="10" stroke="#222"/>'
            if mark else "")
    return (f'<svg width="{width}" height="10" role="img" aria-label="{fraction:.3f}">'
            f'<rect width="{shown / 1.5 * width:.1f}" height="10" fill="{colour}"/>{line}</svg>')


def figure_cell(artifact, figure, value, text=None, chart="") -> str:
    shown = "–" if value is None else (text if text is not None else f"{value}")
    data = "" if value is None else f' data-value="{escape(repr(value))}"'
    return (f'<td class="n" data-artifact="{escape(str(artifact))}" data-figure="{escape(figure)}"{data}>'
            f"{escape(shown)} {chart}</td>")


def _fp32_of(artifacts) -> dict:
    return {a["format"]: a for a in artifacts if a.get("precision") == "fp32"}


def render(report: dict) -> str:
    artifacts = report.get("artifacts", [])
    fp32 = _fp32_of(artifacts)
    source = report.get("source") or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit {escape(report.get('command', ''))}"
             f" report</title><style>{STYLE}</style></head><body>",
             f"<h1>edgekit {escape(report.get('command', ''))}: "
             f"<span class='{'pass' if report.get('passed') else 'fail'}'>"
             f"{'PASS' if report.get('passed') else 'FAIL'}</span></h1>",
             f"<p>Source: <code>{escape(str(source.get('model', '')))}</code> ({escape(str(source.get('framework', '')))})"
             f" · reference on {escape(str((report.get('reference') or {}).get('device', '')))}</p>"]
    parts.append("<h2>Artifacts</h2><table><tr><th>artifact</th><th>scheme</th><th>recipe</th><th>accuracy</th>"
                 "<th>cosine</th><th>worst sample</th><th>size (vs fp32)</th><th>latency (vs fp32)</th>"
                 "<th>verified on</th><th>result</th></tr>")
    for a in artifacts:
        parity = a.get("parity") or {}
        base = fp32.get(a["format"], {})
        size, latency = a.get("size_bytes"), a.get("latency_ms")
        size_ratio = size / base["size_bytes"] if size and base.get("size_bytes") else None
        latency_ratio = latency / base["latency_ms"] if latency and base.get("latency_ms") else None
        result = ("skip", "SKIP") if parity.get("skipped") else ("pass", "PASS") if parity.get("passed") else ("fail", "FAIL")
        recipe = (a.get("quantization") or {}).get("recipe") or ""
        verified = ", ".join(f"{v.get('profile')} ({v.get('how')})" for v in a.get("verified_on") or [])
        parts.append(
            f"<tr><td>{escape(a['id'])}</td><td>{escape(str(a.get('scheme', '')))}</td><td>{escape(recipe)}</td>"
            + figure_cell(a["id"], "accuracy", parity.get("accuracy"),
                    f"{parity['accuracy']:.2f}%" if parity.get("accuracy") is not None else None)
            + figure_cell(a["id"], "cosine", parity.get("cosine"),
                    f"{parity['cosine']:.6f}" if parity.get("cosine") is not None else None)
            + figure_cell(a["id"], "cosine_min", parity.get("cosine_min"),
                    f"{parity['cosine_min']:.6f}" if parity.get("cosine_min") is not None else None)
            + figure_cell(a["id"], "size_bytes", size, f"{size / 1024:.1f} KiB" if size else None, bar(size_ratio))
            + figure_cell(a["id"], "latency_ms", latency, f"{latency:.3f} ms" if latency else None,
                    bar(latency_ratio, "#d0884a"))
            + f"<td>{escape(verified)}</td><td class='{result[0]}'>{result[1]}</td></tr>")
    parts.append("</table>")
    parts += (_profiles(artifacts) + _per_output(artifacts) + _histograms(artifacts) + _searches(artifacts)
              + _blame(artifacts) + _compression(report))
    parts += _stages(report.get("stages", []), report.get("memory"))
    warnings = report.get("warnings", []) + [f"FAILED {f}" for f in report.get("failures", [])]
    if warnings:
        parts.append("<h2>Warnings and failures</h2>" + "".join(f"<div class='warn'>{escape(w)}</div>" for w in warnings))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _per_output(artifacts) -> list:
    rows = [(a["id"], name, m) for a in artifacts for name, m in ((a.get("parity") or {}).get("per_output") or {}).items()
            if len((a.get("parity") or {}).get("per_output") or {}) > 1]
    if not rows:
        return []
    out = ["<h2>Per output</h2><table><tr><th>artifact</th><th>output</th><th>kind</th><th>cosine</th>"
           "<th>worst sample</th><th>top-1 agreement</th><th>max abs error</th></tr>"]
    for artifact, name, m in rows:
        out.append(f"<tr><td>{escape(artifact)}</td><td>{escape(name)}</td><td>{escape(str(m.get('kind', '')))}</td>"
                   + "".join(figure_cell(f"{artifact}::{name}", k, m.get(k), f"{m[k]:.6g}" if m.get(k) is not None else None)
                             for k in ("cosine", "cosine_min", "top1_agreement", "max_abs_error")) + "</tr>")
    return out + ["</table>"]


def _section(heading: str, artifacts, render) -> list:
    """``heading`` and each artifact's part (``render(index, artifact)``: a list of HTML pieces,
    empty when it has none), or nothing when no artifact has one."""
    parts = [part for index, a in enumerate(artifacts) for part in render(index, a)]
    return [heading, *parts] if parts else []


def _searches(artifacts) -> list:
    return _section("<h2>Int8 recipe search</h2>", artifacts, _search)


def _search(_, a) -> list:
    tried = (a.get("quantization") or {}).get("search") or []
    if not tried:
        return []
    profiles = list(dict.fromkeys(p for t in tried for p in t.get("profiles") or {}))
    out = [f"<h3>Recipes tried for {escape(a['id'])}</h3><table><tr><th>recipe</th><th>scheme</th>"
           "<th>cosine</th>" + "".join(f"<th>on {escape(p)}</th>" for p in profiles)
           + "<th>result</th><th>why</th></tr>"]
    for t in tried:
        shipped = " (shipped)" if t.get("recipe") == (a.get("quantization") or {}).get("recipe") else ""
        cosine = f"{t['cosine']:.6f}" if t.get("cosine") is not None else "–"
        on = [(t.get("profiles") or {}).get(p) for p in profiles]
        out.append(f"<tr><td>{escape(str(t.get('recipe')))}{shipped}</td><td>{escape(str(t.get('scheme')))}</td>"
                   f"<td class='n'>{cosine}</td>"
                   + "".join(_verdict_cell(f"{a['id']}::{t.get('recipe')}::{p}", v) for p, v in zip(profiles, on))
                   + _verdict_cell(f"{a['id']}::{t.get('recipe')}", {"passed": t.get("passed")}, "passed", "failed")
                   + f"<td>{escape('; '.join(t.get('failures') or []))}</td></tr>")
    return out + ["</table>"]


def _verdict_cell(key, verdict, passed="pass", failed="fail") -> str:
    """``pass 0.999123`` / ``fail 0.97`` (a profile's verdict and cosine), ``–`` where it did not run."""
    if not verdict:
        return "<td class='skip'>–</td>"
    cosine = f" {verdict['cosine']:.6f}" if verdict.get("cosine") is not None else ""
    ok = bool(verdict.get("passed"))
    return (f"<td class='{'pass' if ok else 'fail'}' data-artifact='{escape(key)}' data-figure='passed' "
            f"data-value='{ok}'>{passed if ok else failed}{cosine}</td>")


def _profiles(artifacts) -> list:
    """Each artifact's figures on each CPU profile, where it was verified on more than one."""
    rows = [(a, name, figures) for a in artifacts
            for name, figures in ((a.get("parity") or {}).get("profiles") or {}).items()]
    if not rows:
        return []
    how = {(a["id"], v.get("profile")): v.get("how") for a in artifacts for v in a.get("verified_on") or []}
    out = ["<h2>CPU profiles</h2><table><tr><th>artifact</th><th>profile</th><th>how</th><th>accuracy</th>"
           "<th>cosine</th><th>worst sample</th><th>top-1 agreement</th><th>result</th></tr>"]
    for a, name, m in rows:
        key = f"{a['id']}@{name}"
        out.append(f"<tr><td>{escape(a['id'])}</td><td>{escape(name)}</td><td>{escape(str(how.get((a['id'], name), '')))}</td>"
                   + "".join(figure_cell(key, k, m.get(k), f"{m[k]:.6g}" if m.get(k) is not None else None)
                             for k in ("accuracy", "cosine", "cosine_min", "top1_agreement"))
                   + f"<td class='{'pass' if m.get('passed') else 'fail'}'>{'PASS' if m.get('passed') else 'FAIL'}</td></tr>")
    return out + ["</table>"]


def _histograms(artifacts) -> list:
    """Per artifact, each output's samples per decade of 1 - cosine: a chart, else a table."""
    return _section("<h2>Error distribution</h2><p>Eval samples per decade of per-sample error (1 - cosine "
                    "against the reference), per output.</p>", artifacts, _histogram)


def _histogram(index, a) -> list:
    outputs = {name: m["error_histogram"] for name, m in ((a.get("parity") or {}).get("per_output") or {}).items()
               if (m or {}).get("error_histogram")}
    if not outputs:
        return []
    data = escape(json.dumps({name: h["counts"] for name, h in outputs.items()}, sort_keys=True))
    if all(not any(h["counts"][1:]) for h in outputs.values()):  # a float twin: nothing to draw
        chart = f"<p>every sample of every output below {outputs[next(iter(outputs))]['edges'][1]:.0e}</p>"
    else:
        chart = _histogram_svg(a["id"], outputs, index) or _histogram_table(outputs)
    return [f"<h3>{escape(a['id'])}</h3><figure data-artifact='{escape(a['id'])}' data-figure='error_histogram' "
            f"data-value='{data}'>{chart}</figure>"]


def _bin_labels(edges) -> list:
    inner = [f"{lo:.0e}–{hi:.0e}" for lo, hi in zip(edges[1:-2], edges[2:-1])]
    return [f"<{edges[1]:.0e}"] + inner + [f"≥{edges[-2]:.0e}"]


def _histogram_svg(artifact, outputs, index):
    """The histograms as one inline SVG chart drawn by matplotlib, or None without it. Deterministic
    (fixed hash salt, no date), so a rebuilt page is byte-identical; ids salted per chart."""
    try:
        import matplotlib
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure
    except ImportError:
        return None
    labels = _bin_labels(next(iter(outputs.values()))["edges"])
    with matplotlib.rc_context({"svg.hashsalt": f"edgekit-{index}", "svg.fonttype": "none", "font.size": 8}):
        figure = Figure(figsize=(7.0, 1.9))
        axes = figure.add_subplot()
        width = 0.8 / len(outputs)
        for k, (name, histogram) in enumerate(outputs.items()):
            bars = axes.bar([i + (k - (len(outputs) - 1) / 2) * width for i in range(len(labels))],
                            histogram["counts"], width, label=_label(name))
            for i, bar in enumerate(bars):
                bar.set_gid(f"ek-{index}-{k}-{i}")
        axes.set_xticks(range(len(labels)), labels)
        axes.set_ylabel("samples")
        axes.spines[["top", "right"]].set_visible(False)
        if len(outputs) > 1:
            axes.legend(frameon=False)
        figure.tight_layout()
        buffer = io.StringIO()
        FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None, "Creator": None, "Format": None,
                                                            "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return re.sub(r' xmlns(:xlink)?="[^"]*"', "", svg, count=2)  # inline SVG in HTML needs no namespaces


def _label(name) -> str:
    """An output's name as matplotlib shows it verbatim: no mathtext (``$``), not hidden (``_...``)."""
    text = str(name).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _histogram_table(outputs) -> str:
    labels = _bin_labels(next(iter(outputs.values()))["edges"])
    most = max((c for h in outputs.values() for c in h["counts"]), default=0) or 1
    rows = "".join(f"<tr><td>{escape(str(name))}</td>" + "".join(
        f"<td class='n'>{c} {bar(c / most * 1.5 if c else None, '#4a7bd0', 40, mark=False)}</td>" for c in h["counts"]) + "</tr>"
        for name, h in outputs.items())
    return ("<table><tr><th>output</th>" + "".join(f"<th>{escape(label)}</th>" for label in labels) + "</tr>"
            + rows + "</table>")


def _blame(artifacts) -> list:
    return _section("<h2>Per-layer blame</h2>", artifacts, _blame_table)


def _blame_table(_, a) -> list:
    rows = (a.get("quantization") or {}).get("blame") or []
    if not rows:
        return []
    keys = [k for k in rows[0] if k != "kept_fp32"]
    out = [f"<h3>Per-layer blame: {escape(a['id'])}</h3><table><tr>"
           + "".join(f"<th>{escape(k)}</th>" for k in keys) + "<th>kept in float</th></tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{escape(str(row.get(k)))}</td>" for k in keys)
                   + f"<td>{'yes' if row.get('kept_fp32') else ''}</td></tr>")
    return out + ["</table>"]


def _compression(report) -> list:
    rows = report.get("compression") or []
    if not rows:
        return []
    out = ["<h2>Model stages</h2><table><tr><th>stage</th><th>accuracy</th><th>cosine</th><th>size</th>"
           "<th>result</th></tr>"]
    for row in rows:
        out.append(f"<tr><td>{escape(str(row.get('stage')))}</td>"
                   + figure_cell(row.get("stage"), "accuracy", row.get("accuracy"))
                   + figure_cell(row.get("stage"), "cosine", row.get("cosine"))
                   + figure_cell(row.get("stage"), "size_bytes", row.get("size_bytes"))
                   + f"<td class='{'pass' if row.get('passed', True) else 'fail'}'>"
                   f"{'PASS' if row.get('passed', True) else 'FAIL'}</td></tr>")
    return out + ["</table>"]


def _stages(stages, memory=None) -> list:
    if not stages:
        return []
    longest = max((s.get("seconds") or 0 for s in stages), default=0) or 1
    out = ["<h2>Stages</h2>" + (f"<p>{escape(memory_line(memory))}</p>" if memory else "") + "<table><tr><th>stage</th><th>wall time</th><th>peak RSS</th><th>child peak RSS</th></tr>"]
    for s in stages:
        seconds = s.get("seconds")
        out.append(f"<tr><td>{escape(str(s.get('stage')))}</td>"
                   + figure_cell(s.get("stage"), "seconds", seconds, f"{seconds:.2f} s" if seconds is not None else None,
                           bar((seconds or 0) / longest * 1.5 if seconds else None, "#7a5cc0", mark=False))
                   + figure_cell(s.get("stage"), "peak_rss_mb", s.get("peak_rss_mb"),
                           f"{s['peak_rss_mb']:.0f} MB" if s.get("peak_rss_mb") is not None else None)
                   + figure_cell(s.get("stage"), "child_peak_rss_mb", s.get("child_peak_rss_mb"),
                           f"{s['child_peak_rss_mb']:.0f} MB" if s.get("child_peak_rss_mb") is not None else None)
                   + "</tr>")
    return out + ["</table>"]

"""report.html: self-contained, and every figure it shows is report.json's."""

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from edgekit import report_html
from edgekit.cli.main import main


class _Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.open_tags, self.external = {}, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("table", "tr", "td", "th", "svg", "h1", "h2", "h3"):
            self.open_tags.append(tag)
        if "data-figure" in attrs and "data-value" in attrs:
            self.figures[(attrs["data-artifact"], attrs["data-figure"])] = attrs["data-value"]
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag in ("table", "tr", "td", "th", "svg", "h1", "h2", "h3"):
            assert self.open_tags and self.open_tags[-1] == tag, (tag, self.open_tags[-5:])
            self.open_tags.pop()


def test_the_bundles_report_html_shows_report_json_figures_and_loads_nothing(digits_bundle, tmp_path):
    bundle = digits_bundle[0]
    report = json.loads((bundle / "report.json").read_text())
    page = (bundle / "report.html").read_text()
    parser = _Figures()
    parser.feed(page)
    assert not parser.open_tags and not parser.external, (parser.open_tags, parser.external)
    assert "<script" not in page and "http" not in page.split("<body>")[1]  # no network, no code
    checked = 0
    for artifact in report["artifacts"]:
        shown = {"size_bytes": artifact["size_bytes"], "latency_ms": artifact.get("latency_ms"),
                 **{k: artifact["parity"].get(k) for k in ("accuracy", "cosine", "cosine_min")}}
        for figure, value in shown.items():
            if value is not None:
                assert float(parser.figures[(artifact["id"], figure)]) == value, (artifact["id"], figure)
                checked += 1
    for stage in report["stages"]:
        assert float(parser.figures[(stage["stage"], "seconds")]) == stage["seconds"]
    assert checked >= 10 and "<svg" in page
    # Each artifact's error histogram: report.json's counts, over every eval sample.
    for artifact in report["artifacts"]:
        histogram = artifact["parity"]["per_output"]["output"]["error_histogram"]
        assert sum(histogram["counts"]) == artifact["parity"]["samples"]
        shown = json.loads(parser.figures[(artifact["id"], "error_histogram")])
        assert shown == {"output": histogram["counts"]}
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert sum(int8["parity"]["per_output"]["output"]["error_histogram"]["counts"][1:]) > 0  # int8 is not exact
    assert page.count('id="ek-') >= 7  # its chart: one bar per decade, drawn by matplotlib
    # Rebuilt from report.json by the CLI, the same page.
    copy = tmp_path / "b"
    copy.mkdir()
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["report", str(copy), "-q"]) == 0
    assert (copy / "report.html").read_text() == page
    (copy / "report.json").write_text("[]")
    assert main(["report", str(copy), "-q"]) == 2


def _synthetic_report():
    """Two CPU profiles, a two-output artifact, a recipe search judged on both profiles."""
    histogram = {"edges": [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 2.0], "counts": [0, 1, 5, 30, 4, 0, 0]}
    profiles = {"x86-avx2": {"passed": True, "cosine": 0.9991, "accuracy": 97.5},
                "arm64": {"passed": False, "cosine": 0.981, "accuracy": 95.0}}
    search = [{"recipe": "full int8", "scheme": "w8a8-static", "passed": False, "cosine": 0.981,
               "profiles": profiles, "failures": ["cosine 0.981 < 0.99 (on arm64, emulated)"]},
              {"recipe": "selective", "scheme": "w8a8-selective", "passed": True, "cosine": 0.9995,
               "profiles": {"x86-avx2": {"passed": True, "cosine": 0.9996}, "arm64": {"passed": True, "cosine": 0.9995}}}]
    parity = {"passed": True, "failures": [], "samples": 40, "cosine": 0.9995, "profiles": search[1]["profiles"],
              "per_output": {"boxes": {"kind": "regression", "cosine": 0.9995, "error_histogram": histogram},
                             "scores": {"kind": "classification", "cosine": 0.9999, "error_histogram": {
                                 **histogram, "counts": [10, 30, 0, 0, 0, 0, 0]}}}}
    artifact = {"id": "onnx-int8", "format": "onnx", "precision": "int8", "scheme": "w8a8-selective",
                "size_bytes": 1000, "parity": parity,
                "verified_on": [{"profile": "x86-avx2", "how": "native", "passed": True},
                                {"profile": "arm64", "how": "emulated", "passed": True}],
                "quantization": {"recipe": "selective", "search": search}}
    return {"command": "export", "passed": True, "artifacts": [artifact], "stages": []}


def test_the_page_shows_each_cpu_profile_and_each_recipe_on_each_profile():
    report = _synthetic_report()
    parser = _Figures()
    parser.feed(report_html.render(report))
    assert not parser.open_tags
    assert float(parser.figures[("onnx-int8@arm64", "cosine")]) == 0.9995
    assert float(parser.figures[("onnx-int8@x86-avx2", "cosine")]) == 0.9996
    # The first recipe failed on arm64 only, the shipped one passed on both.
    assert parser.figures[("onnx-int8::full int8::arm64", "passed")] == "False"
    assert parser.figures[("onnx-int8::full int8::x86-avx2", "passed")] == "True"
    assert parser.figures[("onnx-int8::selective::arm64", "passed")] == "True"
    assert json.loads(parser.figures[("onnx-int8", "error_histogram")]) == {"boxes": [0, 1, 5, 30, 4, 0, 0],
                                                                            "scores": [10, 30, 0, 0, 0, 0, 0]}


def test_without_matplotlib_the_histograms_are_tables_of_the_same_counts(monkeypatch):
    report = _synthetic_report()
    with_charts = report_html.render(report)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    page = report_html.render(report)
    assert 'id="ek-0-0-3"' in with_charts and 'id="ek-' not in page
    parser = _Figures()
    parser.feed(page)
    assert not parser.open_tags
    table = page[page.index("Error distribution"):]
    assert "<td>boxes</td><td class='n'>0 </td><td class='n'>1 <svg" in table
    assert json.loads(parser.figures[("onnx-int8", "error_histogram")])["boxes"][3] == 30


def test_error_histogram_counts_each_sample_in_its_decade():
    from edgekit.parity import error_histogram
    cosines = 1.0 - np.array([0.0, 5e-7, 2e-6, 0.5e-3, 5e-3, 0.05, 0.5, 1.9, 2.0 + 1e-12])
    assert error_histogram(cosines)["counts"] == [2, 1, 0, 1, 1, 1, 3]
    assert error_histogram(np.array([1.0 + 1e-12]))["counts"][0] == 1  # rounding above 1 is no error


def _chromium():
    named = os.environ.get("EDGEKIT_CHROMIUM")
    return named or next(filter(None, map(shutil.which, ("chromium-headless-shell", "chromium", "chromium-browser",
                                                         "google-chrome", "headless_shell"))), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine (make test installs it "
                                                  "where apt-get is allowed)")
def test_headless_chromium_renders_the_page_with_its_charts_and_bars(digits_bundle, tmp_path):
    """A screenshot: the page renders, with the tables' bars and matplotlib's histogram bars drawn."""
    from PIL import Image
    shot = tmp_path / "report.png"
    run = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1300,3000",
                          (digits_bundle[0] / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert (0x4a, 0x7b, 0xd0) in colours  # the size bars against fp32
    assert (0x1f, 0x77, 0xb4) in colours  # the int8 artifact's histogram (matplotlib's first colour)
    assert (0x17, 0x70, 0x2b) in colours  # PASS
    assert (pixels != 255).any(axis=1).mean() > 0.02  # not a blank page

"""report.html: self-contained, and every figure it shows is report.json's."""

import json
from html.parser import HTMLParser

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
    # Rebuilt from report.json by the CLI, the same page.
    copy = tmp_path / "b"
    copy.mkdir()
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["report", str(copy), "-q"]) == 0
    assert (copy / "report.html").read_text() == page
    (copy / "report.json").write_text("[]")
    assert main(["report", str(copy), "-q"]) == 2

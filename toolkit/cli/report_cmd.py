"""``edgekit report DIR [--open]``: the bundle's report.html, rebuilt from its report.json."""

from pathlib import Path

from ._common import printable


def register(sub):
    p = sub.add_parser("report", help="(re)build a bundle's self-contained report.html from its report.json")
    p.add_argument("bundle", metavar="DIR")
    p.add_argument("--open", action="store_true", help="open it in the default browser")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from edgekit.bundle import write_atomic
    from edgekit.errors import InputError
    from edgekit.report_html import render
    source = Path(args.bundle) / "report.json"
    try:
        report = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{source}: expected an edgekit report.json: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list):
        raise InputError(f"{source}: expected an edgekit report.json (an object with an artifacts list)")
    out = Path(args.bundle) / "report.html"
    write_atomic(out, render(report))
    if not args.quiet:
        print(printable(f"wrote {out}"))
    if args.open:
        import webbrowser
        webbrowser.open(out.resolve().as_uri())
    return 0

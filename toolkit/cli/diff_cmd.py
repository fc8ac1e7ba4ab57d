"""``edgekit diff OLD NEW``: two bundles, reports or baselines compared, artifact by artifact."""

import json

from ._common import add_baseline_tol, add_common, printable


def register(sub):
    p = sub.add_parser("diff", help="compare two bundles, report.json files or baselines (exit 1 on a regression)")
    p.add_argument("old", metavar="OLD", help="a bundle folder, a report.json or a baseline file")
    p.add_argument("new", metavar="NEW")
    add_baseline_tol(p)
    add_common(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from edgekit import baseline
    comparison = baseline.compare(baseline.read(args.old), baseline.read(args.new),
                                  baseline.parse_tolerances(args.baseline_tol))
    if args.json:
        print(json.dumps({"passed": comparison.passed, "regressions": comparison.regressions,
                          "notes": comparison.notes,
                          "rows": [dict(zip(("artifact", "metric", "old", "new", "verdict"), r))
                                   for r in comparison.rows]}, indent=2))
    else:
        for line in comparison.lines():
            print(printable(line))
        for line in comparison.regressions:
            print(printable(f"regression: {line}"))
    return 0 if comparison.passed else 1

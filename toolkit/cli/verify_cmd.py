"""``edgekit verify DIR --eval DATA``: the CI gate on an existing bundle."""

import json

from ._common import (Progress, add_baseline_tol, add_common, add_isolation, add_profiles, add_tolerance, print_report,
                      printable)


def register(sub):
    p = sub.add_parser("verify", help="re-run parity of a bundle against its stored reference (CI gate)",
                       description="Run every artifact of bundle DIR through edgekit.runtime on --eval and "
                                   "compare with the reference outputs stored at export time. Exit codes: "
                                   "0 pass, 1 regression, 2 usage/input error, 3 internal error, 4 nothing evaluated.")
    p.add_argument("bundle", metavar="DIR")
    p.add_argument("--eval", required=True, metavar="DATA", help="the eval data the bundle was exported with")
    p.add_argument("--artifact", action="append", metavar="ID", help="only these artifacts (e.g. onnx-int8)")
    p.add_argument("--require", action="append", default=[], choices=["onnx", "tflite", "openvino"],
                   metavar="FORMAT", help="fail (exit 2) when this format's engine is not installed here; without "
                                          "it such artifacts are skipped and reported")
    add_tolerance(p)
    p.add_argument("--latency", action="store_true", help="also measure batch-1 latency")
    add_profiles(p, "default: the profiles the bundle was exported for")
    add_isolation(p)
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (also on failure)")
    add_baseline(p)
    add_common(p)
    p.set_defaults(run=run)


def _xml_text(text) -> str:
    """XML 1.0 cannot hold most control characters (an artifact id from a hostile manifest may
    carry them): show them escaped so the JUnit file stays well-formed."""
    return "".join(c if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
                   or c >= "\U00010000" else ascii(c)[1:-1] for c in str(text))


def write_junit(path, report=None, error=None):
    import xml.etree.ElementTree as ET
    suite = ET.Element("testsuite", name="edgekit.verify")
    cases = 0
    failures = 0
    seconds = {stage["stage"]: stage.get("seconds", 0) for stage in (report.stages if report else [])}
    for entry in (report.artifacts if report else []):
        parity = entry["parity"]
        per_output = parity.get("per_output", {})
        # One case per artifact, and one per output when it has several (each is judged on its own).
        names = [None] + (list(per_output) if len(per_output) > 1 else [])
        for output in names:
            cases += 1
            name = entry["id"] if output is None else f"{entry['id']}::{output}"
            # The artifact's case takes the time its verification took; its outputs' cases none (the
            # same run judged them).
            case = ET.SubElement(suite, "testcase", classname="edgekit.parity", name=_xml_text(name),
                                 time=str(seconds.get(f"verify {entry['id']}", 0) if output is None else 0))
            failed = [f for f in parity["failures"] if output is None or f.startswith(f"{output}: ")]
            if parity.get("skipped"):
                ET.SubElement(case, "skipped", message=_xml_text(parity["skipped"]))
            elif failed:
                failures += 1
                text = [_xml_text(f) for f in failed]
                ET.SubElement(case, "failure", message="; ".join(text)).text = "\n".join(text)
            else:
                source = parity if output is None else per_output[output]
                metrics = {k: source[k] for k in ("accuracy", "accuracy_drop", "cosine", "cosine_min",
                                                  "top1_agreement") if k in source}
                if output is None and entry.get("verified_on"):
                    metrics["verified_on"] = [f"{v['profile']} ({v['how']})" for v in entry["verified_on"]]
                ET.SubElement(case, "system-out").text = _xml_text(json.dumps(metrics, default=str))
    errors = 0
    if error is not None:
        errors = 1
        cases += 1
        case = ET.SubElement(suite, "testcase", classname="edgekit.verify", name="verify")
        ET.SubElement(case, "error", message=_xml_text(error), type=type(error).__name__).text = _xml_text(error)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(sum(1 for a in (report.artifacts if report else []) if a["parity"].get("skipped"))))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def run(args) -> int:
    from edgekit.errors import ParityError
    from edgekit.verification import verify

    progress = Progress(len(args.artifact or []) or 1, quiet=True)
    try:
        report = verify(args.bundle, args.eval, overrides=args.tol,
                        artifacts=args.artifact, latency=args.latency, progress=progress, isolate=args.isolate,
                        timeout=args.timeout, target_cpu=args.target_cpu, emulation=args.emulation,
                        require=args.require, workers=args.workers, ray_address=args.ray_address)
    except ParityError as exc:
        if exc.report is not None:
            print_report(exc.report, args)
        if args.junit:
            write_junit(args.junit, exc.report)
        raise
    except Exception as exc:
        if args.junit:
            write_junit(args.junit, error=exc)
        raise
    print_report(report, args)
    if args.junit:
        write_junit(args.junit, report)
    if args.baseline:
        _against_baseline(args, report)
    return 0


def add_baseline(p):
    p.add_argument("--baseline", metavar="FILE", help="also fail (exit 1) when a figure is worse than in this "
                                                      "committed baseline by more than its tolerance")
    p.add_argument("--update-baseline", action="store_true",
                   help="write this verification's figures to the --baseline file instead of comparing")
    add_baseline_tol(p)


def _against_baseline(args, report):
    from edgekit import baseline
    from edgekit.errors import ParityError
    comparison = baseline.check(report, args.baseline, update=args.update_baseline, tolerance_items=args.baseline_tol)
    if comparison is None:
        print(printable(f"baseline written: {args.baseline}"))
        return
    if not args.quiet or not comparison.passed:
        print(printable(f"\nAgainst the baseline {args.baseline}:"))
        for line in comparison.lines():
            print(printable(line))
    if not comparison.passed:
        raise ParityError(f"regression against the baseline {args.baseline}: " + "; ".join(comparison.regressions),
                          report)

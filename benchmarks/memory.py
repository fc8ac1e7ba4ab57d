"""Peak memory of a MobileNetV2-class export, per route: is each under the issue's 3 GB?

    python benchmarks/memory.py [--routes keras:tflite,torch:onnx,...] [--calib N] [--eval N]
                                [--max-memory 3G] [--json FILE]

Each route (source framework x format; fp32 and int8, as ``edgekit export --int8 --to FORMAT``
makes them, recipe search and verification included) runs in a fresh process, so that one
route's peak is not another's. The models: keras.applications.MobileNetV2 (weights=None) and the
PyTorch MobileNetV2 of ``benchmarks/mobilenet.py``, both 224x224 with random weights, calibrated
on random images.

Two measures, taken independently of each other:

- *sampled*: this process samples the resident set of the export's whole process tree (the
  export and every child process: verification runs, any a converter starts) every 20 ms; the
  figure per stage is the largest sum seen while the stage ran (stage boundaries come from the
  export's progress callback). The route's figure is the largest sum overall, building the model and its data
  included: what the machine had to hold at once; "export" is the largest while
  ``edgekit.export`` ran.
- *reported*: the export's own report.json figures per stage (``peak_rss_mb``: the export
  process within the stage; ``child_peak_rss_mb``: the largest child it ran in the stage).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "samples"), str(ROOT / "benchmarks")]
# framework:format, or framework:all for one export to every format (what make bench runs)
ROUTES = ("keras:tflite", "keras:onnx", "keras:openvino", "torch:tflite", "torch:onnx", "torch:openvino",
          "keras:all", "torch:all")
FORMATS = ("tflite", "onnx", "openvino")
TARGET_MB = 3072
SAMPLE_S = 0.02


def _model_and_data(framework, calib, evaluation):
    """(model, calibration images, eval images) in the framework's layout, random and seeded."""
    rng = np.random.default_rng(0)
    if framework == "keras":
        from bench import keras_mobilenet
        model, shape = keras_mobilenet(rng), (224, 224, 3)
    else:
        from mobilenet import mobilenet_v2
        model, shape = mobilenet_v2(), (3, 224, 224)
    return (model, rng.standard_normal((calib, *shape)).astype(np.float32),
            rng.standard_normal((evaluation, *shape)).astype(np.float32))


def export_route(route, out: Path, events: Path, calib, evaluation, max_memory=None):
    """In the route's own process: export, appending "time start|end stage" lines to ``events``."""
    import edgekit
    from edgekit.errors import ParityError
    framework, fmt = route.split(":")
    model, calibration, eval_set = _model_and_data(framework, calib, evaluation)
    with open(events, "a", encoding="utf-8") as log:
        def progress(stage, phase, record=None):
            if phase in ("start", "end"):
                log.write(f"{time.monotonic():.3f} {phase} {stage}\n")
                log.flush()
        log.write(f"{time.monotonic():.3f} start export\n")
        options = {"max_memory": max_memory} if max_memory else {}
        try:
            targets = FORMATS if fmt == "all" else [fmt]
            report = edgekit.export(model, calib=calibration, eval=eval_set, targets=targets, int8=True,
                                    out=out / "bundle", progress=progress, **options)
        except ParityError as exc:  # random weights: a recipe may fail its tolerance; the memory still counts
            report = exc.report
        log.write(f"{time.monotonic():.3f} end export\n")
    (out / "stages.json").write_text(json.dumps({"stages": report.stages, "warnings": report.warnings}))


def _tree_rss(pid) -> int:
    """Resident bytes of ``pid`` and all its descendants now (0 once it is gone; Linux's /proc, as
    the export's own stage figures)."""
    from edgekit._peaks import _descendants, _status_mb
    return int(sum(_status_mb(p, "VmRSS") for p in [pid, *_descendants(pid)]) * 2**20)


def measure(route, work: Path, calib, evaluation, max_memory=None) -> dict:
    """Run one route in a fresh process, sampling its tree; per-stage and overall peaks in MB."""
    out = work / route.replace(":", "-")
    out.mkdir()
    events = out / "events.txt"
    command = [sys.executable, __file__, "--child", route, "--out", str(out), "--calib", str(calib),
               "--eval", str(evaluation), *(["--max-memory", max_memory] if max_memory else [])]
    samples = []
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as child:
        while child.poll() is None:
            samples.append((time.monotonic(), _tree_rss(child.pid)))
            time.sleep(SAMPLE_S)
    if child.returncode != 0:
        raise RuntimeError(f"{route}: the export process failed (exit {child.returncode})")
    reported = json.loads((out / "stages.json").read_text())
    stages = _stage_peaks(events.read_text().splitlines(), samples, reported["stages"])
    return {"route": route, "seconds": time.monotonic() - started,
            "peak_tree_mb": max(rss for _, rss in samples) / 2**20,
            "export_tree_mb": next(row["sampled_tree_mb"] for row in stages if row["stage"] == "export"),
            "stages": stages, "warnings": [w for w in reported["warnings"] if "memory" in w]}


def _stage_peaks(lines, samples, reported) -> list:
    """Per stage: the largest sampled tree RSS between its start and end, beside the report's figures."""
    opened, rows, by_name = {}, [], {}
    for record in reported:  # (a recipe search repeats stage names: matched in order)
        by_name.setdefault(record["stage"], []).append(record)
    for line in lines:
        when, phase, stage = line.split(" ", 2)
        if phase == "start":
            opened[stage] = float(when)
            continue
        inside = [rss for t, rss in samples if opened[stage] <= t <= float(when)]
        record = by_name[stage].pop(0) if by_name.get(stage) else {}
        rows.append({"stage": stage, "seconds": float(when) - opened.pop(stage),
                     "sampled_tree_mb": max(inside, default=0) / 2**20,
                     "reported_mb": record.get("peak_rss_mb"), "reported_child_mb": record.get("child_peak_rss_mb")})
    return rows


def _print(result):
    verdict = "ok" if result["peak_tree_mb"] <= TARGET_MB else f"OVER {TARGET_MB} MB"
    print(f"\n== {result['route']}: peak {result['peak_tree_mb']:.0f} MB (process tree, sampled; "
          f"{result['export_tree_mb']:.0f} MB while edgekit.export ran) — {verdict}; {result['seconds']:.0f} s")
    print(f"  {'stage':44s} {'seconds':>8s} {'tree MB':>8s} {'report: process':>16s} {'child':>7s}")
    for row in result["stages"]:
        reported = "-" if row["reported_mb"] is None else f"{row['reported_mb']:.0f}"
        child = "-" if row["reported_child_mb"] is None else f"{row['reported_child_mb']:.0f}"
        print(f"  {row['stage'][:44]:44s} {row['seconds']:8.1f} {row['sampled_tree_mb']:8.0f} {reported:>16s} {child:>7s}")
    for warning in result["warnings"]:
        print(f"  warning: {warning}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of {', '.join(ROUTES)}")
    parser.add_argument("--calib", type=int, default=128, help="calibration images (default 128)")
    parser.add_argument("--eval", type=int, default=32, help="eval images (default 32)")
    parser.add_argument("--max-memory", help="passed to the export (e.g. 3G)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        export_route(args.child, args.out, args.out / "events.txt", args.calib, args.eval, args.max_memory)
        return 0
    routes = args.routes.split(",")
    unknown = sorted(set(routes) - set(ROUTES))
    if unknown:
        parser.error(f"unknown route(s) {unknown}; expected some of {', '.join(ROUTES)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="edgekit-memory-") as tmp:
        for route in routes:  # one at a time: two exports at once would measure each other
            results.append(measure(route, Path(tmp), args.calib, args.eval, args.max_memory))
            _print(results[-1])
    print(f"\npeak RSS of the process tree per route, MB (target <= {TARGET_MB})")
    print(f"{'route':16s} {'process':>8s} {'export':>8s}")
    for result in results:
        print(f"{result['route']:16s} {result['peak_tree_mb']:8.0f} {result['export_tree_mb']:8.0f} "
              f"{'ok' if result['peak_tree_mb'] <= TARGET_MB else 'OVER'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

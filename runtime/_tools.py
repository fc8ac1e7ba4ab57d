"""The device's own tools, with the runtime alone installed: ``selftest`` and ``bench``.

``python -m edgekit.runtime selftest DIR`` / ``bench DIR``, and ``edgekit selftest`` / ``edgekit
bench`` (the same code). Each artifact whose engine is not installed here is skipped and said so.
Exit codes as edgekit's: 0 pass, 1 an artifact failed, 2 usage or a bundle that cannot be read,
4 nothing could run here.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

from ._args import add_bench_arguments, add_selftest_arguments
from ._cpu import peak_rss_mb
from ._errors import BackendUnavailableError, ModelLoadError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 4


def _artifacts(bundle, wanted):
    from ._manifest import read_manifest
    manifest = read_manifest(bundle)
    ids = [a.id for a in manifest.artifacts]
    unknown = [a for a in wanted or () if a not in ids]
    if unknown:
        raise ModelLoadError(f"--artifact {', '.join(unknown)}: not in {bundle}; its artifacts: {', '.join(ids)}")
    return manifest, [a for a in manifest.artifacts if not wanted or a.id in wanted]


def selftest(args, out=print) -> int:
    from ._model import load
    from ._selftest import read_golden, selftest as judge
    manifest, entries = _artifacts(args.bundle, args.artifact)
    results, skipped, golden = [], [], None
    for entry in entries:
        try:
            model = load(args.bundle, artifact=entry.id)
        except BackendUnavailableError as exc:
            skipped.append({"artifact": entry.id, "skipped": str(exc)})
            continue
        golden = golden or read_golden(args.bundle, manifest)  # (read and checked once for every artifact)
        results.append(judge(model, args.bundle, golden))
    if args.json:
        out(json.dumps({"results": [r.to_dict() for r in results], "skipped": skipped}, indent=2))
    else:
        for r in results:
            worst = min((row["cosine"] for row in r.figures.values()), default=float("nan"))
            where = "" if r.verified_here is not False else "  (this CPU's profile was not verified at export)"
            out(f"{r.artifact:16s} {'PASS' if r.passed else 'FAIL'}  cosine {worst:.6f} on {r.samples} golden "
                f"samples, {r.cpu}{where}")
            for failure in r.failures:
                out(f"  {failure}")
        for s in skipped:
            out(f"{s['artifact']:16s} SKIP  {s['skipped']}")
    if not results:
        return EXIT_NOTHING
    return EXIT_PASS if all(r.passed for r in results) else EXIT_FAIL


def _golden_inputs(model):
    """The bundle's golden input samples, or None where it stores none."""
    from ._selftest import read_golden
    try:
        return read_golden(model.bundle, model.manifest)[0]
    except ModelLoadError:
        return None


def _inputs(model, golden, batch):
    """``batch`` samples for each input: the golden samples (repeated to the batch) where the bundle
    stores them, else zeros of the declared shapes."""
    from ._tensor import to_layout
    feeds = {}
    for spec, tensor in zip(model.manifest.inputs, model.inputs):
        if golden is not None:
            values = np.resize(golden[spec.name], (batch, *golden[spec.name].shape[1:]))
            feeds[tensor.key] = np.ascontiguousarray(to_layout(values, spec.layout, tensor.layout))
        else:
            feeds[tensor.key] = np.zeros((batch, *[d or 1 for d in tensor.shape[1:]]), tensor.dtype)
    return feeds


def _percentiles_ms(call, runs) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()

    def at(q):
        return times[min(len(times) - 1, int(q * len(times)))] * 1000
    return {"p50_ms": statistics.median(times) * 1000, "p90_ms": at(0.90), "p99_ms": at(0.99)}


def bench_one(bundle, artifact_id, batch, threads, streams, runs) -> dict:
    """Load and time one artifact (run in its own process by ``bench``, so that its load time and
    peak memory are its own)."""
    from ._model import load
    options = {"streams": streams} if streams else {}
    start = time.perf_counter()
    model = load(bundle, artifact=artifact_id, threads=threads, **options)
    load_ms = (time.perf_counter() - start) * 1000
    row = {"artifact": artifact_id, "format": model.artifact.format, "precision": model.artifact.precision,
           "backend": model.backend, "threads": threads or os.cpu_count(), "load_ms": load_ms}
    golden = _golden_inputs(model)
    one = _inputs(model, golden, 1)
    start = time.perf_counter()
    model.run(one)
    row["first_call_ms"] = (time.perf_counter() - start) * 1000
    for _ in range(min(20, runs)):
        model.run(one)
    row["batch1"] = _percentiles_ms(lambda: model.run(one), runs)
    if batch > 1:
        many = _inputs(model, golden, batch)
        model.run(many)
        row[f"batch{batch}"] = figures = _percentiles_ms(lambda: model.run(many), max(10, runs // batch))
        figures["samples_per_s"] = batch / (figures["p50_ms"] / 1000)
    row["samples_per_s_batch1"] = 1000 / row["batch1"]["p50_ms"]
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def bench(args, out=print) -> int:
    import subprocess
    from pathlib import Path

    from ._cpu import describe_host
    from .backends import backend_for
    manifest, entries = _artifacts(args.bundle, args.artifact)
    rows, skipped = [], []
    for entry in entries:
        try:
            backend_for(Path(args.bundle) / entry.file)  # its engine is installed here
        except BackendUnavailableError as exc:
            skipped.append({"artifact": entry.id, "skipped": str(exc)})
            continue
        # Each artifact in a fresh process: its own load time, first call and peak memory.
        command = [sys.executable, "-m", "edgekit.runtime", "_bench_one", str(args.bundle), entry.id,
                   str(args.batch), str(args.threads or 0), str(args.streams or 0), str(args.runs)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == EXIT_NOTHING:
            skipped.append({"artifact": entry.id, "skipped": result.stderr.strip().splitlines()[-1]})
        elif result.returncode != 0:
            raise RuntimeError(f"benchmarking {entry.id} failed: {result.stderr.strip()[-800:]}")
        else:
            rows.append(json.loads(result.stdout))
    warnings = _slower_int8(rows)
    if args.json:
        out(json.dumps({"cpu": describe_host(), "results": rows, "skipped": skipped, "warnings": warnings}, indent=2))
    else:
        out(f"cpu: {describe_host()}")
        out(f"{'artifact':16s} {'backend':11s} {'load':>8s} {'first':>8s} {'p50':>8s} {'p90':>8s} {'p99':>8s} "
            f"{'batch ' + str(args.batch) + ' p50':>13s} {'samples/s':>10s} {'peak RSS':>9s}")
        for r in rows:
            many = r.get(f"batch{args.batch}", {})
            rss = f"{r['peak_rss_mb']:7.0f}MB" if r["peak_rss_mb"] is not None else "        -"
            out(f"{r['artifact']:16s} {r['backend']:11s} {r['load_ms']:6.1f}ms {r['first_call_ms']:6.2f}ms "
                f"{r['batch1']['p50_ms']:6.3f}ms {r['batch1']['p90_ms']:6.3f}ms {r['batch1']['p99_ms']:6.3f}ms "
                f"{many.get('p50_ms', float('nan')):11.3f}ms {many.get('samples_per_s', r['samples_per_s_batch1']):10.0f} "
                f"{rss}")
        for s in skipped:
            out(f"{s['artifact']:16s} SKIP  {s['skipped']}")
        for w in warnings:
            out(f"warning: {w}")
    return EXIT_PASS if rows else EXIT_NOTHING


def _slower_int8(rows) -> list:
    """An int8 artifact slower than its format's fp32 one on this CPU gains size, not speed, here."""
    fp32 = {r["format"]: r["batch1"]["p50_ms"] for r in rows if r["precision"] == "fp32"}
    return [f"{r['artifact']} is slower than {r['format']}-fp32 on this CPU ({r['batch1']['p50_ms']:.3f} vs "
            f"{fp32[r['format']]:.3f} ms per batch-1 call)"
            for r in rows if r["precision"] != "fp32" and r["format"] in fp32
            and r["batch1"]["p50_ms"] > fp32[r["format"]]]


def main(argv=None) -> int:
    import argparse
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_bench_one"]:
        bundle, artifact, batch, threads, streams, runs = argv[1:]
        try:
            row = bench_one(bundle, artifact, int(batch), int(threads) or None, int(streams) or None, int(runs))
        except BackendUnavailableError as exc:
            print(exc, file=sys.stderr)
            return EXIT_NOTHING
        print(json.dumps(row))
        return 0
    parser = argparse.ArgumentParser(prog="python -m edgekit.runtime",
                                     description="Check and time an edgekit bundle on this device.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_selftest_arguments(sub.add_parser("selftest", help="run each artifact on the bundle's golden samples"))
    add_bench_arguments(sub.add_parser("bench", help="latency, throughput, load time and memory per artifact"))
    args = parser.parse_args(argv)
    try:
        return selftest(args) if args.command == "selftest" else bench(args)
    except ModelLoadError as exc:
        print(f"edgekit.runtime: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

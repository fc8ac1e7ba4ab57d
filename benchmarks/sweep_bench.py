"""Sweep figures (not a test): wall time of the sample plan on 1 and on 2 local Ray workers, and what
Ray adds per task against a plain loop.

    python benchmarks/sweep_bench.py [--plan samples/sweep/digits.toml] [--tasks 200]

1. The plan's cells (8 for the sample: 2 models × ONNX/OpenVINO × 2 int8 recipes), all run
   (``force``), with ``workers=1`` and ``workers=2``.
2. The same cells run one after another by ``edgekit.sweep_run.run_cell`` in a plain loop, without
   Ray: the difference to 1 worker, per cell, is what Ray costs a cell (its start included).
3. Ray's own per-task cost: ``--tasks`` no-op tasks against as many plain calls.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sweep(plan, out, workers) -> float:
    import edgekit
    started = time.perf_counter()
    board = edgekit.sweep(plan, out=out, workers=workers, force=True)
    seconds = time.perf_counter() - started
    counts = board.counts()
    print(f"  {workers} worker(s): {seconds:.1f} s wall for {len(board.cells)} cells ({counts['passed']} passed)")
    return seconds


def _plain_loop(plan, out) -> tuple:
    from edgekit.sweep_plan import load_plan, with_hashes
    from edgekit.sweep_run import run_cell
    cells = with_hashes(load_plan(plan).cells)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for cell in cells:
        run_cell(cell, str(out / "cells"))
    seconds = time.perf_counter() - started
    print(f"  plain loop, no Ray: {seconds:.1f} s for {len(cells)} cells")
    return seconds, len(cells)


def _noop(x):
    return x


def _task_overhead(count):
    import ray
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        remote = ray.remote(_noop)
        ray.get([remote.remote(i) for i in range(20)])  # workers started and warm
        started = time.perf_counter()
        for i in range(count):
            ray.get(remote.remote(i))
        sequential = (time.perf_counter() - started) / count
        started = time.perf_counter()
        ray.get([remote.remote(i) for i in range(count)])
        batched = (time.perf_counter() - started) / count
    finally:
        ray.shutdown()
    started = time.perf_counter()
    for i in range(count):
        _noop(i)
    plain = (time.perf_counter() - started) / count
    print(f"  no-op task, submitted and awaited one by one: {sequential * 1e3:.2f} ms; {count} submitted at once: "
          f"{batched * 1e3:.2f} ms each; a plain call: {plain * 1e6:.2f} µs")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default=str(ROOT / "samples" / "sweep" / "digits.toml"))
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path.insert(0, str(ROOT / "samples"))
    import digits
    digits.prepare()  # the sample plan's weights and data (trained once)
    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-bench-") as tmp:
        tmp = Path(tmp)
        print(f"sweep of {args.plan}, {os.cpu_count()} CPUs:")
        one = _sweep(args.plan, tmp / "one", 1)
        two = _sweep(args.plan, tmp / "two", 2)
        print(f"  speed-up with 2 workers: {one / two:.2f}x")
        loop, cells = _plain_loop(args.plan, tmp / "loop")
        print(f"  Ray's cost per cell (1 worker vs the loop, Ray's start included): {(one - loop) / cells:+.2f} s")
    print("Ray's per-task overhead:")
    _task_overhead(args.tasks)


if __name__ == "__main__":
    sys.exit(main())

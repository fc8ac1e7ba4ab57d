"""``edgekit sweep PLAN``: every (model, target, precision, recipe, CPU profile) cell of a plan as one
export on Ray, and the leaderboard; ``edgekit sweep --report DIR`` rebuilds the leaderboard."""

import sys
from pathlib import Path

from ._common import add_common, count_arg, printable


def register(sub):
    p = sub.add_parser(
        "sweep", help="run many exports (models × targets × precisions × recipes × CPU profiles) on Ray",
        description="Run each cell of PLAN (TOML or YAML) as one `edgekit export` in a Ray task, each writing its "
                    "own bundle under OUT/cells/, skipping cells whose inputs are unchanged since their bundle was "
                    "written; then write OUT/leaderboard.json, .md and .html. Exit code: 0 every cell passed, 1 a cell "
                    "failed its parity gate, 2 a bad plan or a cell's bad input, 3 an internal error or a lost "
                    "worker, 4 cells not run (--report), 130 interrupted.")
    p.add_argument("plan", nargs="?", metavar="PLAN", help="the sweep plan, a .toml or .yaml file (README, Sweeps)")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default: the plan's `out`, relative to the plan)")
    p.add_argument("--report", metavar="DIR", help="rebuild the leaderboard of the sweep folder DIR from the bundles "
                                                    "and records on disk; runs nothing")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=count_arg(1), metavar="N",
                       help="CPUs of the local Ray started for the sweep, so at most N one-CPU cells at a time "
                            "(default: every CPU of this machine)")
    where.add_argument("--address", metavar="HOST:PORT|auto",
                       help="join this Ray cluster instead of starting a local one (auto: the one `ray start` "
                            "started on this machine)")
    p.add_argument("--transfer", choices=["shared", "driver"], default="shared",
                   help="shared: each worker writes its bundle into OUT (every node sees OUT at the same path); "
                        "driver: workers send each bundle back as bytes and this process writes it (default: shared)")
    p.add_argument("--force", action="store_true", help="run every cell, also those whose inputs are unchanged")
    p.add_argument("--retries", type=count_arg(0), default=2, metavar="N",
                   help="times Ray runs a cell again when its worker died (default 2); a failing export is not retried")
    add_common(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from edgekit import sweep_report
    from edgekit.errors import EXIT_INTERRUPTED, ConfigError
    from edgekit.sweep_run import SweepInterrupted, sweep
    if (args.plan is None) == (args.report is None):
        raise ConfigError("give a PLAN to run, or --report DIR to rebuild a sweep's leaderboard (one of them)")
    if args.report is not None:
        board = sweep_report.write(Path(args.report))
    else:
        try:
            board = sweep(args.plan, out=args.out, address=args.address, workers=args.workers,
                          transfer=args.transfer, force=args.force, retries=args.retries,
                          on_cell=None if args.quiet or args.json else _Progress(), verbose=args.verbose)
        except SweepInterrupted as exc:
            print(printable(f"edgekit: interrupted; finished bundles kept, {len(exc.not_run)} cells did not run: "
                            + ", ".join(exc.not_run)), file=sys.stderr)
            return EXIT_INTERRUPTED
    _print(board, args)
    return board.exit_code


class _Progress:
    """One line per cell on stderr as it finishes: name, seconds, verdict."""

    def __init__(self):
        self.done = 0

    def __call__(self, cell, result, skipped):
        self.done += 1
        if skipped:
            line = f"[{self.done}] {cell.name}: unchanged, skipped (PASS)"
        else:
            verdict = {"passed": "PASS", "failed": "FAIL"}.get(result.status, f"ERROR (exit {result.exit_code})")
            seconds = f"{result.seconds:.1f} s" if result.seconds is not None else "-"
            why = result.error or "; ".join(result.failures[:1])
            line = f"[{self.done}] {cell.name}: {seconds}, {verdict}" + (f": {why}" if why else "")
        print(printable(line), file=sys.stderr, flush=True)


def _print(board, args):
    if args.json:
        print(board.to_json())
        return
    counts = board.counts()
    for group in board.groups:
        fastest = group["fastest"]
        front = [f"{r['cell']}/{r['artifact']}" for r in group["artifacts"] if r["pareto"]]
        print(printable(f"{group['model']} on {group['profile']}: fastest that passes "
                        f"{fastest['cell'] + '/' + fastest['artifact'] if fastest else '-'}; "
                        f"Pareto front ({group['quality']}, latency, size): {', '.join(front) or '-'}"))
    for cell in board.cells:
        if cell["status"] != "passed":
            why = "; ".join(cell["failures"]) or cell["error"] or "not run"
            print(printable(f"{cell['status'].upper()} {cell['cell']}: {why}"))
    print(printable(f"{counts['passed']}/{len(board.cells)} cells passed; leaderboard: "
                    f"{Path(board.output) / 'leaderboard.md'} (.json, .html)"))

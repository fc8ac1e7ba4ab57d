"""``edgekit selftest DIR`` and ``edgekit bench DIR``: the runtime's device tools
(``edgekit.runtime._tools``; ``python -m edgekit.runtime`` runs the same code where only the runtime
is installed), with the runtime's own option declarations (``edgekit.runtime._args``: no numpy, so
``edgekit --help`` stays light)."""

from edgekit.runtime._args import add_bench_arguments, add_selftest_arguments

from ._common import printable


def register(sub):
    for name, add, run, help_text in (
            ("selftest", add_selftest_arguments, run_selftest,
             "run each artifact on the golden samples its bundle stores (no eval data or framework needed)"),
            ("bench", add_bench_arguments, run_bench,
             "latency p50/p90/p99, throughput, load time and peak memory of each artifact on this machine")):
        p = sub.add_parser(name, help=help_text)
        add(p)
        p.add_argument("-v", "--verbose", action="store_true")
        p.add_argument("-q", "--quiet", action="store_true")
        p.set_defaults(run=run)


def _print(text):
    print(printable(text))


def run_selftest(args) -> int:
    from edgekit.runtime._tools import selftest
    return selftest(args, out=_print)


def run_bench(args) -> int:
    from edgekit.runtime._tools import bench
    return bench(args, out=_print)

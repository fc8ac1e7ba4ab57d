"""``edgekit selftest DIR`` and ``edgekit bench DIR``: the runtime's device tools
(``edgekit.runtime._tools``; ``python -m edgekit.runtime`` runs the same code where only the runtime
is installed). The options are declared here again because importing the runtime imports numpy,
which ``edgekit --help`` must not; a test keeps both option sets equal."""

from ._common import printable


def add_selftest_arguments(p):
    p.add_argument("bundle", metavar="DIR")
    p.add_argument("--artifact", action="append", metavar="ID", help="only these artifacts (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def add_bench_arguments(p):
    p.add_argument("bundle", metavar="DIR")
    p.add_argument("--artifact", action="append", metavar="ID", help="only these artifacts (repeatable)")
    p.add_argument("--batch", type=int, default=8, help="the second batch size measured (default 8; 1 is always)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: every core)")
    p.add_argument("--streams", type=int, default=None, help="OpenVINO streams")
    p.add_argument("--runs", type=int, default=200, help="timed calls per batch size (default 200)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


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

"""The device tools' options (``python -m edgekit.runtime selftest|bench`` and ``edgekit
selftest|bench``): one declaration for both. Standard library only, so the ``edgekit`` CLI can
declare them without importing numpy."""


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

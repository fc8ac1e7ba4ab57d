"""Pieces shared by the commands: common flags, progress display, tolerance and report output."""

import sys
import time


def add_common(parser):
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def add_tolerance(parser):
    parser.add_argument("--tol", action="append", default=[], metavar="PREC[.OUTPUT].FIELD=VALUE",
                        help="override a parity tolerance, for every output or for one output, e.g. "
                             "int8.max_accuracy_drop=0.5, fp16.min_cosine=0.9995 or int8.boxes.min_sample_cosine=0.99 "
                             "(fields: min_cosine, min_sample_cosine, max_accuracy_drop, min_top1_agreement, "
                             "max_abs_error)")


def _seconds(text) -> float:
    import argparse
    from edgekit.config import check_timeout
    from edgekit.errors import ConfigError
    try:
        value = float(text)
        check_timeout(value)
    except (ValueError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from exc
    return value


def add_isolation(parser):
    import argparse
    from edgekit.config import VERIFY_TIMEOUT_S
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                        help="run each artifact in an isolated child process, so a crash or hang in an engine "
                             "fails that artifact instead of killing the run (default: on)")
    parser.add_argument("--timeout", type=_seconds, default=VERIFY_TIMEOUT_S, metavar="SECONDS",
                        help=f"time limit per artifact verification (default {VERIFY_TIMEOUT_S:g}); "
                             "an artifact that takes longer fails")


def add_profiles(parser, default_help):
    parser.add_argument("--target-cpu", metavar="PROFILES", default=None,
                        help="comma-separated CPU classes every artifact must hold on: host, x86-avx2 (no VNNI), "
                             "x86-vnni, arm64, or all; measured natively where this machine matches, else in an "
                             f"emulated CPU (QEMU user mode) ({default_help})")
    parser.add_argument("--emulation", choices=["auto", "always", "never"], default="auto",
                        help="auto: native where this machine matches a profile, else emulated; always: emulated "
                             "wherever an emulator exists; never: native only (the other profiles are reported "
                             "as not verified)")


class Progress:
    """Stage progress on stderr: a live line with a bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, quiet=False, stream=None):
        self.total = max(total, 1)
        self.done = 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()

    def __call__(self, stage, phase, record=None):
        if self.quiet:
            return
        if phase == "start":
            if self.tty:
                filled = int(20 * self.done / self.total)
                self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {stage} …")
                self.stream.flush()
            return
        self.done += 1
        self.total = max(self.total, self.done)  # (the total is an estimate: a recipe search adds stages)
        line = f"[{self.done}/{self.total}] {stage}: {record['seconds']:.2f} s, peak RSS {record['peak_rss_mb']:.0f} MB"
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()


def printable(text) -> str:
    """``text`` safe for a terminal: control and format characters (ANSI escapes, bidi overrides)
    from a manifest or a model file are shown escaped, never interpreted. Newlines and tabs stay."""
    import unicodedata
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf")
                   else ascii(c)[1:-1] for c in str(text))


def print_report(report, args):
    if args.json:
        print(report.to_json())  # JSON escapes control characters itself
        return
    print(printable(report.table()))
    for line in (report.verified_on(), report.tolerances_used()):
        if line:
            print(printable(line))
    for failure in report.failures:
        print(printable(f"FAIL {failure}"))
    for warning in report.warnings:
        print(printable(f"warning: {warning}"), file=sys.stderr)

"""Pieces shared by the commands: common flags, progress display, tolerance and report output."""

import os
import shutil
import sys
import threading
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


def count_arg(least: int):
    """An argparse type: a whole number >= ``least``."""
    def parse(text):
        import argparse
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
        return value
    return parse


def add_baseline_tol(parser):
    parser.add_argument("--baseline-tol", action="append", default=[], metavar="METRIC=VALUE",
                        help="how much worse is not a regression (accuracy points, cosine, relative size/latency)")


def add_isolation(parser):
    import argparse
    from edgekit.config import VERIFY_TIMEOUT_S
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                        help="run each artifact in an isolated child process, so a crash or hang in an engine "
                             "fails that artifact instead of killing the run (default: on)")
    parser.add_argument("--timeout", type=_seconds, default=VERIFY_TIMEOUT_S, metavar="SECONDS",
                        help=f"time limit per artifact verification (default {VERIFY_TIMEOUT_S:g}); "
                             "an artifact that takes longer fails")
    parser.add_argument("--workers", type=count_arg(1), default=1, metavar="N",
                        help="verify on N CPUs at once: each CPU profile and shards of the eval set run as Ray "
                             "tasks on an embedded local Ray (needs edgekit[ray]; same verdict as one process)")
    parser.add_argument("--ray-address", metavar="HOST:PORT", default=None,
                        help="run those tasks on the Ray cluster at HOST:PORT (or 'auto'); its nodes need the "
                             "same edgekit and engines")


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
    """Stage progress on stderr. On a terminal, a live line: a bar over the stages, the running
    stage, how far it has got (calibration or eval samples, where the stage reports them) and its
    elapsed time, redrawn every second; then one line per finished stage. Otherwise only the one
    line per finished stage (a CI log)."""

    TICK_S = 1.0

    def __init__(self, total: int, quiet=False, stream=None):
        self.total = max(total, 1)
        self.done = 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self._stage, self._stage_started, self._detail, self._drawn = None, 0.0, "", 0.0
        self._lock = threading.Lock()
        self._ticker = None

    def __call__(self, stage, phase, record=None):
        if self.quiet:
            return
        with self._lock:
            if phase == "start":
                self._stage, self._stage_started, self._detail = stage, time.perf_counter(), ""
            elif phase == "advance":
                total = f"/{record['total']}" if record.get("total") else ""
                self._detail = f"{record['done']}{total} {record['unit']}"
                if record["done"] != record.get("total") and time.perf_counter() - self._drawn < 0.1:
                    return  # (a sample at a time: redrawn at most 10x a second, and when done)
            else:
                self._stage = None
                self._finished(stage, record)
                return
            if self.tty and self._stage is not None:
                self._draw()
            if self.tty and self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="edgekit-progress", daemon=True)
                self._ticker.start()

    def _draw(self):
        filled = int(20 * self.done / self.total)
        elapsed = time.perf_counter() - self._stage_started
        head = f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} "
        tail = f"{': ' + self._detail if self._detail else ''} … {elapsed:.0f} s"
        # A wrapped line would not be redrawn in place: the stage's name gives way, not the figures.
        room = max(self._columns() - 1 - len(head) - len(tail), 10)
        stage = self._stage if len(self._stage) <= room else self._stage[:room - 1] + "…"
        self.stream.write(f"\r\033[K{head}{stage}{tail}")
        self.stream.flush()
        self._drawn = time.perf_counter()

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stand-in)
            return shutil.get_terminal_size().columns

    def _tick(self):
        """Redraw the live line while a stage runs (a converter's long call reports nothing); the
        thread ends when no stage is running and the next stage starts another."""
        while True:
            time.sleep(self.TICK_S)
            with self._lock:
                if self._stage is None:
                    self._ticker = None
                    return
                self._draw()

    def _finished(self, stage, record):
        self.done += 1
        self.total = max(self.total, self.done)  # (the total is an estimate: a recipe search adds stages)
        line = f"[{self.done}/{self.total}] {stage}: {record['seconds']:.2f} s, peak RSS {record['peak_rss_mb']:.0f} MB"
        if record.get("child_peak_rss_mb") is not None:
            line += f" (child process {record['child_peak_rss_mb']:.0f} MB)"
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

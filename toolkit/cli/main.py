"""Entry point: parse, dispatch, and map the error tree to exit codes (here and only here).

Exit codes (documented in the README):
    0  every artifact passed
    1  regression: an artifact failed its parity tolerance
    2  usage or input error: bad option, model file or data, or the user's own code raised
    3  internal error: a converter/quantizer failed, or a bug
    4  nothing evaluated
  130  interrupted
  141  the output was closed early (``edgekit info DIR | head``), as a program killed by SIGPIPE
"""

import argparse
import logging
import os
import signal
import sys

from edgekit._version import __version__

from . import device_cmd, diff_cmd, export_cmd, info_cmd, report_cmd, sweep_cmd, verify_cmd
from ._common import printable

from edgekit.errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NOTHING, EXIT_PASS,  # noqa: F401 (the CLI's codes)
                            EXIT_REGRESSION, EXIT_USAGE)

EXIT_PIPE = 141
COMMANDS = (export_cmd, verify_cmd, info_cmd, diff_cmd, report_cmd, device_cmd, sweep_cmd)


def exit_code(exc: BaseException) -> int:
    from edgekit import errors, runtime
    if isinstance(exc, errors.ParityError):
        return EXIT_REGRESSION
    if isinstance(exc, errors.NothingEvaluatedError):
        return EXIT_NOTHING
    if isinstance(exc, (errors.ConfigError, errors.InputError, errors.UnsupportedError, errors.UserCodeError,
                        errors.MissingDependencyError, errors.CalibrationError,
                        runtime.ModelLoadError, runtime.RuntimeInputError, runtime.BackendUnavailableError)):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit", description="Prune, quantize, convert and parity-verify models for edge devices.",
        epilog="exit codes: 0 pass, 1 regression, 2 usage/input error, 3 internal error, 4 nothing evaluated")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    parser.set_defaults(commands=sub.choices)
    return parser


def _parse(parser, argv):
    """Parse; an unknown option is reported by its subcommand's parser (its usage, not the top
    level's), with the closest option it has."""
    from edgekit.errors import did_you_mean
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = args.commands[args.command]
        flags = [flag for action in command._actions for flag in action.option_strings]  # noqa: SLF001
        hint = did_you_mean(extra[0].split("=")[0], flags) if extra[0].startswith("-") else ""
        command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _terminate(signum, frame):
    # Turn SIGTERM into an exception so that the bundle writer's cleanup runs.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_PASS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    from edgekit._logs import configure
    configure(args.verbose, args.quiet)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.run(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try
        return code
    except BrokenPipeError:
        # The reader went away (``| head``): nothing to report, and nothing more to write.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("edgekit: interrupted; no bundle was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from edgekit.errors import EdgekitError, ParityError
        code = exit_code(exc)
        if isinstance(exc, ParityError):
            pass  # the command already printed the table and the failures
        elif isinstance(exc, EdgekitError) or code == EXIT_USAGE:
            print(printable(f"edgekit: error: {exc}"), file=sys.stderr)
        else:
            logging.getLogger("edgekit").debug("internal error", exc_info=True)
            print(printable(f"edgekit: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)"),
                  file=sys.stderr)
        if getattr(args, "json", False) and not isinstance(exc, ParityError):
            # --json callers parse stdout: they get a report on failure too.
            import json
            print(json.dumps({"command": args.command, "passed": False, "exit_code": code,
                              "error": {"type": type(exc).__name__, "message": str(exc)}}))
        return code


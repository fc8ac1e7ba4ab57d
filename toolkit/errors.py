"""The one error tree of edgekit (the runtime has its own three, see edgekit.runtime).

    EdgekitError
    ├── ConfigError            bad option or combination
    ├── InputError             bad model file or data: shape, dtype, layout, NaN, unsafe content
    ├── MissingDependencyError names the extra to install
    ├── ConversionError        a converter failed (keeps the converter's own message)
    ├── QuantizationError
    │   └── CalibrationError   calibration data unusable
    ├── UnsupportedError       this (source, target, precision) is not supported, and why
    ├── UserCodeError          the user's own code (training hook, metric, model factory) raised
    └── ParityError            an artifact failed its tolerance; carries the report

The CLI maps these to exit codes in one place (edgekit.cli.main).
"""

# The exit codes (README, Exit codes): the CLI's, and a sweep cell's, which is its export's.
EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERNAL, EXIT_NOTHING, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose."""


class ConfigError(EdgekitError):
    """An option or a combination of options is invalid."""


class InputError(EdgekitError):
    """A model file or a data set is unusable: wrong shape, dtype, layout, NaN, unsafe content."""


class MissingDependencyError(EdgekitError):
    """An optional package is needed; the message names the extra to install."""


class ConversionError(EdgekitError):
    """A converter failed; the converter's own message is kept."""


class QuantizationError(EdgekitError):
    """Quantization failed."""


class CalibrationError(QuantizationError):
    """The calibration data cannot calibrate this model."""


class UnsupportedError(EdgekitError):
    """This (source, target, precision) combination is not supported."""


class ParityError(EdgekitError):
    """At least one artifact failed its parity tolerance; ``report`` holds every result."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class NothingEvaluatedError(EdgekitError):
    """A gate had nothing to evaluate (no artifact, no sample): never a silent pass."""


class UserCodeError(EdgekitError):
    """The user's own code (training hook, metric, model factory) raised; the cause is chained."""


def did_you_mean(value, choices) -> str:
    """" (did you mean 'x'?)" for the closest of ``choices`` to a mistyped ``value``, else ""."""
    import difflib
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


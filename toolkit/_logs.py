"""Logging: edgekit's own messages and the libraries it drives, each under its own name.

The libraries edgekit drives (torch, litert-torch, tf2onnx, NNCF, torchao) log progress and notices
on every conversion through their own loggers (some through the root logger). The CLI shows them as
``<library>: LEVEL: message`` — never as edgekit's — and drops the ones known to be harmless in an
edgekit run unless ``-v``. ``quiet_loggers`` quietens named loggers for one call and restores them,
so a process that embeds edgekit keeps its own settings.
"""

import contextlib
import logging
import re

VERBOSE = False  # set by the CLI's -v: nothing is quietened or dropped

# Notices that say nothing about the user's model or edgekit's result (shown with -v).
HARMLESS = (
    "converted in training mode",        # litert-torch, about the wrapper it traces (the model is in eval mode)
    "Failed to load",                    # torchao's optional CUDA kernels on a CPU machine
    "Detected no triton",                # torchao, the same
    "os.fork() was called",              # JAX's warning when TensorFlow's converter forks a worker
    "is an Enum subclass and is now natively supported",  # torch.compile deprecation notice
    "tf.lite.Interpreter is deprecated",
)
# Libraries whose INFO/WARNING output is progress: shown from ERROR unless -v.
CHATTY = ("torch.onnx", "onnxscript", "onnx_ir", "onnxruntime", "tensorflow", "tf2onnx", "absl", "torchao",
          "litert_torch", "nncf")


@contextlib.contextmanager
def quiet_loggers(*names, level=logging.ERROR):
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    if not VERBOSE:
        for logger in loggers:
            logger.setLevel(max(level, logger.level))
    try:
        yield
    finally:
        for logger, previous in zip(loggers, saved):
            logger.setLevel(previous)


_PACKAGE = re.compile(r"site-packages/([A-Za-z0-9_]+)")


def origin(record) -> str:
    """Who logged: "edgekit", a library's logger name, or (for the root logger) its package."""
    if record.name == "edgekit" or record.name.startswith("edgekit."):
        return "edgekit"
    if record.name == "py.warnings":
        return "warning"
    if record.name == "root":
        match = _PACKAGE.search(record.pathname or "")
        return match.group(1) if match else "python"
    return record.name


class _Formatter(logging.Formatter):
    def format(self, record):
        text = f"{origin(record)}: {record.levelname}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _DropHarmless(logging.Filter):
    def filter(self, record):
        return origin(record) == "edgekit" or not any(h in record.getMessage() for h in HARMLESS)


def configure(verbose: bool, quiet: bool) -> None:
    """The CLI's logging: one stderr handler, each message under its origin's name."""
    global VERBOSE
    VERBOSE = verbose
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    if not verbose:
        handler.addFilter(_DropHarmless())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings go through the same handler and filter
    for name in CHATTY:
        logging.getLogger(name).setLevel(level if verbose else max(level, logging.ERROR))

"""Third-party log lines are shown under their own names, known-harmless ones only with -v, and
loggers quietened for a call get their levels back."""

import logging

import pytest

from edgekit import _logs


@pytest.fixture
def clean_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in _logs.CHATTY}
    yield
    root.handlers[:], level, levels = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)
    _logs.VERBOSE = False


def _from_library(message, package="litert_torch"):
    """A record as a library logging through the root logger makes it (logging.warning(...))."""
    return logging.LogRecord("root", logging.WARNING, f"/x/site-packages/{package}/convert.py", 1, message, None, None)


def test_library_lines_carry_their_own_name_and_harmless_ones_wait_for_verbose(clean_logging, capsys):
    _logs.configure(verbose=False, quiet=False)
    logging.getLogger("edgekit.pipeline").warning("int8 slower than fp32 here")
    logging.getLogger("somelib.export").error("an operator has no symbolic")
    logging.getLogger().handle(_from_library("Your model is converted in training mode. Please set ..."))
    logging.getLogger().handle(_from_library("a notice worth seeing"))
    logging.getLogger("tf2onnx").warning("progress")  # chatty library below ERROR: not shown
    err = capsys.readouterr().err.splitlines()
    assert err == ["edgekit: WARNING: int8 slower than fp32 here", "somelib.export: ERROR: an operator has no symbolic",
                   "litert_torch: WARNING: a notice worth seeing"]
    _logs.configure(verbose=True, quiet=False)
    logging.getLogger().handle(_from_library("Your model is converted in training mode. Please set ..."))
    logging.getLogger("tf2onnx").warning("progress")
    assert capsys.readouterr().err.splitlines() == [
        "litert_torch: WARNING: Your model is converted in training mode. Please set ...", "tf2onnx: WARNING: progress"]


def test_quietened_loggers_get_their_levels_back(clean_logging):
    logger = logging.getLogger("nncf")
    logger.setLevel(logging.INFO)
    with _logs.quiet_loggers("nncf", level=logging.WARNING):
        assert logger.level == logging.WARNING
    assert logger.level == logging.INFO
    _logs.VERBOSE = True  # -v: nothing is quietened
    with _logs.quiet_loggers("nncf"):
        assert logger.level == logging.INFO

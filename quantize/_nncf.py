"""NNCF, quietly: it logs at INFO and draws progress bars on stdout; edgekit's own progress names the stage."""

import contextlib
import io
import logging


@contextlib.contextmanager
def quiet_nncf():
    from edgekit.export.openvino_ir import disable_telemetry
    disable_telemetry()
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)

"""NNCF, quietly: it logs at INFO and draws progress bars on stdout; edgekit's own progress names the stage."""

import contextlib
import io
import logging

from edgekit._logs import quiet_loggers


@contextlib.contextmanager
def quiet_nncf():
    from edgekit.converters.openvino_ir import disable_telemetry
    disable_telemetry()
    with quiet_loggers("nncf", level=logging.WARNING), contextlib.redirect_stdout(io.StringIO()):
        yield

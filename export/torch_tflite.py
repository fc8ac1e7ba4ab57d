"""PyTorch -> TFLite with litert-torch (the maintained PyTorch -> LiteRT converter; no TensorFlow).

4-D float inputs that the module takes NCHW are made NHWC at the artifact's boundary
(litert-torch's channel-last I/O wrapper), the layout TFLite kernels and camera
pipelines use; the manifest records ``layout: nhwc`` for them, and the verifier feeds
the artifact that way. The batch axis is fixed at 1 (litert-torch cannot lower a
dynamic batch through the layout wrapper); ``edgekit.runtime`` runs larger batches
one sample at a time.
"""

import contextlib
import io
import warnings

import numpy as np

from edgekit._logs import quiet_loggers
from edgekit.runtime import Layout
from edgekit.errors import ConversionError

from . import ConversionResult


def prepared(source, example):
    """(module with NHWC I/O where needed, batch-1 sample args, indices of NHWC inputs)."""
    import litert_torch
    import torch
    litert_torch.config.show_progress = False
    module = source.torch_module()
    nchw = [i for i, s in enumerate(source.input_specs) if s.layout == Layout.NCHW]
    wrapped = litert_torch.to_channel_last_io(module, args=nchw).eval() if nchw else module
    args = []
    for i, spec in enumerate(source.input_specs):
        array = example.inputs[spec.name][:1]
        if i in nchw:
            array = array.transpose(0, 2, 3, 1)
        args.append(torch.from_numpy(np.ascontiguousarray(array)))
    return wrapped, tuple(args), nchw


@contextlib.contextmanager
def quiet():
    """litert-torch and torch.export print progress and deprecation notices on every conversion."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
            quiet_loggers("litert_torch", "absl", "torch._export", "torch.export"):
        warnings.simplefilter("ignore")
        yield


def write(edge_model, out_path, what):
    try:
        with quiet():
            edge_model.export(str(out_path))
    except Exception as exc:
        raise ConversionError(f"litert-torch could not write the {what} model: {type(exc).__name__}: {exc}") from exc


def layouts_of(out_path, nchw) -> dict:
    from edgekit.runtime.backends._tflite import TFLiteBackend
    names = [t.name for t in TFLiteBackend(out_path).inputs]
    return {names[i]: Layout.NHWC for i in nchw}


def convert(source, out_path, config, example=None) -> ConversionResult:
    return lowered(source, out_path, example, "fp32")


def lowered(source, out_path, example, what, *, quant_config=None, failed="litert-torch conversion failed",
            error=ConversionError, tool="") -> ConversionResult:
    """``source``'s module (or PT2E graph) through litert-torch with ``quant_config``, written to
    ``out_path``; a conversion failure is ``error(failed: ...)``."""
    import litert_torch
    wrapped, args, nchw = prepared(source, example)
    try:
        with quiet():
            edge = litert_torch.convert(wrapped, args, **({"quant_config": quant_config} if quant_config else {}))
    except Exception as exc:
        raise error(f"{failed}: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    write(edge, out_path, what)
    return ConversionResult(out_path, f"litert-torch {litert_torch.__version__}{tool}", model=source,
                            input_layouts=layouts_of(out_path, nchw))

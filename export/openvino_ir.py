"""Any source -> OpenVINO IR (``.xml`` + ``.bin``) with ``openvino.convert_model``.

Routes: PyTorch from the live module (traced on one batch-1 sample of the data);
TensorFlow/Keras from the source's frozen SavedModel (the one the TFLite converter
reads); ONNX from the model file. Afterwards the IR is made to match the source:
inputs and outputs in the source's order (OpenVINO's TensorFlow frontend sorts them by
name) and under the source's names, and a dynamic batch axis with every other axis as
the source declares it.
"""

import re
import tempfile
import warnings
from pathlib import Path

from edgekit.errors import ConversionError

from . import ConversionResult


def convert_torch(source, out_path, config, example=None) -> ConversionResult:
    """By TorchScript tracing of the live module (its layers keep their module paths as names,
    which ``--keep-fp32`` patterns match); from a ``torch.export`` program (dynamic batch) when
    tracing fails, as it does on modules whose graph differs between calls."""
    import torch

    from .torch_onnx import example_inputs
    program = source.torch_program()
    if program is not None:
        return _finish(lambda ov: ov.convert_model(program), source, out_path, "torch.export program")
    args = example_inputs(source, example)
    module = source.torch_module()
    try:
        return _finish(lambda ov: ov.convert_model(module, example_input=tuple(a[:1] for a in args)), source,
                       out_path, "PyTorch module, traced")
    except ConversionError as exc:
        traced_error = str(exc)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    dynamic = tuple({0: batch} if s.shape[0] is None else {} for s in source.input_specs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(_Flat(module).eval(), args, dynamic_shapes=(dynamic,))  # forward(*args)
    except Exception as exc:
        raise ConversionError(f"{traced_error}; torch.export also failed: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    return _finish(lambda ov: ov.convert_model(program), source, out_path, "torch.export program",
                   notes=("TorchScript tracing failed; converted from a torch.export program",))


def _Flat(module):
    """The module with its outputs as a flat tuple in the source's order."""
    import torch

    from edgekit._torch import flatten_outputs

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.module = module

        def forward(self, *args):
            return tuple(flatten_outputs(self.module(*args)).values())
    return Flat()


def convert_tf(source, out_path, config, example=None) -> ConversionResult:
    saved_model = str(source.saved_model_dir())
    return _finish(lambda ov: ov.convert_model(saved_model), source, out_path, "SavedModel")


def convert_onnx(source, out_path, config, example=None) -> ConversionResult:
    path = source.onnx_path()
    if path is not None:
        return _finish(lambda ov: ov.convert_model(str(path)), source, out_path, "ONNX")
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-") as tmp:
        file = Path(tmp) / "model.onnx"
        file.write_bytes(source.onnx_model().SerializeToString())
        return _finish(lambda ov: ov.convert_model(str(file)), source, out_path, "ONNX")


def disable_telemetry():
    """Make OpenVINO's and NNCF's usage telemetry send nothing from this process (edgekit sends
    none itself). Unless a consent file in ``~/intel`` says no, ``convert_model`` and NNCF post a
    usage event from a forked child process; forked from a process whose other threads hold
    glibc's resolver lock, that child deadlocked in ``getaddrinfo`` and the export then hung at
    exit waiting for it (seen in the test suite under load). Its sender is replaced, once."""
    try:
        from openvino_telemetry.backend import backend_ga4
    except ImportError:
        return
    backend_ga4.GA4Backend.send = _send_nothing


def _send_nothing(self, message):
    return None


def _finish(convert, source, out_path, route, notes=()) -> ConversionResult:
    import openvino as ov
    disable_telemetry()
    try:
        model = convert(ov)
    except Exception as exc:
        message = str(exc).strip().splitlines()
        raise ConversionError(f"openvino.convert_model ({route}) failed: {type(exc).__name__}: "
                              f"{message[0] if message else ''}") from exc
    model = conform(model, [s.name for s in source.input_specs], list(source.output_names))
    model.reshape({model.inputs[i]: ov.PartialShape([-1] + [-1 if d is None else d for d in spec.shape[1:]])
                   for i, spec in enumerate(source.input_specs)})
    save(model, out_path, compress_to_fp16=False)
    return ConversionResult(out_path, f"openvino.convert_model ({route}) openvino {ov.get_version().split('-')[0]}",
                            notes=tuple(notes), model=source)


_AUTO_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*_\d+$")


def deterministic_names(model):
    """OpenVINO names unnamed operations ``Type_N`` from a process-wide counter (and the model
    ``ModelN``), so two identical exports differ in their XML. Rename those by position."""
    model.set_friendly_name("model")
    for index, op in enumerate(model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


def save(model, out_path, compress_to_fp16):
    import openvino as ov
    deterministic_names(model)
    try:
        ov.save_model(model, str(out_path), compress_to_fp16=compress_to_fp16)
    except Exception as exc:
        raise ConversionError(f"could not write the IR {out_path}: {exc}") from exc


def conform(model, input_names, output_names):
    """The IR with its parameters and results in the source's order, under the source's names.

    Each source name is matched to the port whose tensor names contain it; where no port
    carries the name, ports are matched by position.
    """
    import openvino as ov
    params = _ordered(list(model.get_parameters()), [p.output(0) for p in model.get_parameters()],
                      input_names, "inputs")
    results = _ordered(list(model.get_results()), list(model.outputs), output_names, "outputs")
    if params != list(model.get_parameters()) or results != list(model.get_results()):
        model = ov.Model(results, params, model.get_friendly_name())
    for port, name in zip(model.inputs, input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, output_names):
        port.get_tensor().set_names({name})
    return model


def _ordered(nodes, ports, names, kind):
    if len(nodes) != len(names):
        raise ConversionError(f"the IR has {len(nodes)} {kind}, the model has {len(names)}")
    by_name = {}
    for node, port in zip(nodes, ports):
        for name in port.get_names():
            by_name.setdefault(name, node)
    if all(name in by_name for name in names) and len({id(by_name[n]) for n in names}) == len(names):
        return [by_name[name] for name in names]
    return nodes

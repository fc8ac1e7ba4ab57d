"""TensorFlow/Keras -> ONNX with tf2onnx, from the source's frozen SavedModel (opset >= 17)."""

import io
from contextlib import redirect_stdout

from edgekit._logs import quiet_loggers
from edgekit.errors import ConversionError

from . import ConversionResult
from .onnx_format import rename_inputs, rename_outputs

MIN_OPSET = 17
TF2ONNX_LOGGERS = ("tf2onnx", "tensorflow")  # its progress, at INFO/WARNING on every conversion


def _erfc(ctx, node, name, args):
    """Erfc(x) as 1 - Erf(x): Keras' exact GELU (``activation="gelu"``, the default of transformer
    blocks) computes with Erfc, which tf2onnx 1.16 has no handler for (the file failed the ONNX check)."""
    import numpy as np
    from tf2onnx import utils
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


# TensorFlow ops tf2onnx cannot convert, given to it as custom handlers: op -> (handler, args).
OP_HANDLERS = {"Erfc": (_erfc, [])}


def convert(source, out_path, config, example=None) -> ConversionResult:
    import tensorflow as tf
    import tf2onnx

    opset = max(config.opset, MIN_OPSET)
    loaded = tf.saved_model.load(str(source.saved_model_dir()))
    serving = loaded.signatures["serving_default"]
    names = [s.name for s in source.input_specs]
    signature = [tf.TensorSpec(list(s.shape), tf.as_dtype(s.dtype), name=s.name) for s in source.input_specs]

    @tf.function(input_signature=signature)
    def serve(*args):
        return serving(**dict(zip(names, args)))

    try:
        with redirect_stdout(io.StringIO()), quiet_loggers(*TF2ONNX_LOGGERS):
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset,
                                                     custom_op_handlers=OP_HANDLERS)
    except Exception as exc:
        raise ConversionError(f"tf2onnx failed: {type(exc).__name__}: {exc}") from exc
    outputs = list(serving.structured_outputs)
    if [o.name.split(":")[0] for o in proto.graph.output] != outputs:
        # tf2onnx names outputs after graph tensors; the signature order is the source's order.
        by_name = {o.name.split(":")[0]: o.name for o in proto.graph.output}
        if sorted(by_name) == sorted(outputs):
            order = [by_name[n] for n in outputs]
            kept = {o.name: o for o in proto.graph.output}
            ordered = [kept[n] for n in order]
            del proto.graph.output[:]
            proto.graph.output.extend(ordered)
    return _write(proto, source, out_path, f"tf2onnx {tf2onnx.__version__} opset {opset}")


def _write(proto, source, out_path, tool) -> ConversionResult:
    """The graph's inputs and outputs under the source's names, saved as one file."""
    import onnx
    rename_inputs(proto.graph, [s.name for s in source.input_specs])
    rename_outputs(proto.graph, list(source.output_names))
    onnx.save_model(proto, str(out_path), save_as_external_data=False)
    return ConversionResult(out_path, tool, model=source)


def convert_keras(source, out_path, config) -> ConversionResult:
    """tf2onnx straight from a live tf_keras model (``from_keras``): the route for TF-MOT's
    quantization-aware models, whose quantizer variables the SavedModel route leaves as graph
    inputs; their FakeQuant operations become QuantizeLinear/DequantizeLinear."""
    import tensorflow as tf
    import tf2onnx
    opset = max(config.opset, MIN_OPSET)
    signature = [tf.TensorSpec(list(s.shape), tf.as_dtype(s.dtype), name=s.name) for s in source.input_specs]
    try:
        with redirect_stdout(io.StringIO()), quiet_loggers(*TF2ONNX_LOGGERS):
            proto, _ = tf2onnx.convert.from_keras(source.keras_model(), input_signature=signature, opset=opset,
                                                  custom_op_handlers=OP_HANDLERS)
    except Exception as exc:
        raise ConversionError(f"tf2onnx (from_keras) failed: {type(exc).__name__}: {exc}") from exc
    return _write(proto, source, out_path, f"tf2onnx {tf2onnx.__version__} (from_keras) opset {opset}")

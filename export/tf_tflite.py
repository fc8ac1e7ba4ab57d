"""TensorFlow/Keras -> TFLite fp32, from the source's frozen SavedModel."""

from edgekit.errors import ConversionError

from . import ConversionResult


def converter(source):
    """A TFLiteConverter on the source's SavedModel (weights frozen by the SavedModel export)."""
    import tensorflow as tf
    return tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir()))


def run_converter(conv, out_path, what="fp32"):
    import warnings
    try:
        with warnings.catch_warnings():
            # Calibration runs tf.lite.Interpreter, which warns of its own deprecation on every use.
            warnings.simplefilter("ignore", UserWarning)
            flatbuffer = conv.convert()
    except Exception as exc:
        raise ConversionError(f"the TFLite converter failed ({what}): {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc
    with open(out_path, "wb") as fh:
        fh.write(flatbuffer)


def convert(source, out_path, config, example=None) -> ConversionResult:
    import tensorflow as tf
    run_converter(converter(source), out_path)
    return ConversionResult(out_path, f"tf.lite.TFLiteConverter (SavedModel) tensorflow {tf.__version__}",
                            model=source)

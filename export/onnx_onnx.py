"""ONNX -> ONNX: the source file is the fp32 artifact (re-saved as one self-contained file)."""

from edgekit.errors import ConversionError

from . import ConversionResult


def convert(source, out_path, config, example=None) -> ConversionResult:
    import onnx
    try:
        onnx.save_model(source.onnx_model(), str(out_path), save_as_external_data=False)
    except ValueError as exc:  # over the 2 GB protobuf limit
        raise ConversionError(f"cannot save {source.description} as one file: {exc}") from exc
    return ConversionResult(out_path, f"onnx {onnx.__version__} (copy)", model=source)

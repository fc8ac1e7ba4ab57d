"""The closed choices of edgekit's options, as StrEnums (each member is also its string: ``"int8"``
works wherever ``Precision.INT8`` does). No imports: every layer may use them."""

from enum import StrEnum


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"            # w8a8-static: calibrated int8 weights and activations
    DYNAMIC = "dynamic"      # w8a32-dynamic: int8 weights, activations quantized per call
    INT16X8 = "int16x8"      # w8a16-static: int8 weights, int16 activations (TFLite)


class Scheme(StrEnum):
    """What an artifact contains, named the same in every format (the manifest's ``scheme``)."""
    FP32 = "fp32"
    FP16 = "fp16"                        # half-precision weights
    W8A32_DYNAMIC = "w8a32-dynamic"      # int8 weights, activations quantized on the fly
    W8A8_STATIC = "w8a8-static"          # int8 weights and activations, calibrated
    W8A16_STATIC = "w8a16-static"        # int8 weights, int16 activations, calibrated
    W8A8_QAT = "w8a8-qat"                # int8 converted from a quantization-aware-trained model


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class ReferenceDevice(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Framework(StrEnum):
    """A source's framework."""
    TORCH = "torch"
    TF = "tf"        # Keras 3, tf_keras, SavedModel
    ONNX = "onnx"    # an ONNX file as the source (the fp32 ONNX is the reference)


class Format(StrEnum):
    """A target format (its converters and quantizers: ``edgekit.routes``)."""
    ONNX = "onnx"
    TFLITE = "tflite"
    OPENVINO = "openvino"


class ModelType(StrEnum):
    AUTO = "auto"                # detected from the graph (transformer: Softmax and MatMul, no convolution)
    CNN = "cnn"
    TRANSFORMER = "transformer"


class WeightType(StrEnum):
    S8 = "s8"                    # u8*s8 kernels (fast; 7-bit weights so they cannot saturate without VNNI)
    U8 = "u8"                    # u8*u8 (never saturates)


class PruneSchedule(StrEnum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"


class PruneStructure(StrEnum):
    UNSTRUCTURED = "unstructured"
    TWO_FOUR = "2:4"
    CHANNELS = "channels"


class PruneScope(StrEnum):
    GLOBAL = "global"
    LAYER = "layer"


class Emulation(StrEnum):
    AUTO = "auto"        # native where this machine matches a profile, else emulated
    ALWAYS = "always"    # emulated wherever an emulator exists (checks the emulated path on a matching machine)
    NEVER = "never"      # native only

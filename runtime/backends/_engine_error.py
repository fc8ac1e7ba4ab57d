"""An engine's exception text, made fit for a ModelLoadError message.

OpenVINO puts the reason on the last of several lines ("Exception from src/inference/src/cpp/core.cpp:132:" first,
"Opset opset1 doesn't contain the operation with type: X" four lines later), and the TFLite interpreter adds an
indented "See instructions: ..." line: so keep every line, joined into one, without control characters (a file's
names can carry terminal escapes), and bounded, since some messages quote whole protobuf paths.
"""

MESSAGE_LIMIT = 2000  # characters; the longest reason seen (onnxruntime quoting a C++ signature) is ~600


def engine_message(exc: BaseException) -> str:
    words = ("".join(ch for ch in word if ch.isprintable()) for word in str(exc).split())
    text = " ".join(word for word in words if word)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."

"""The external-data files an ``.onnx`` model names, checked before onnxruntime opens them.

onnxruntime 1.32 already refuses absolute, ``..`` and missing locations, but opens a hard link and a symbolic
link that stays in the folder (measured: a model whose ``weights.bin`` was hard-linked to a file elsewhere loaded
and ran). The exporter (``toolkit/sources/onnx_source.py``) holds external data to this rule; a device holds it
too: each ``location`` is a plain relative path without ``..``, resolves inside the model's folder, and names a
regular file that is not a symbolic link and has one link (``st_nlink == 1``).

The locations are read without the ``onnx`` package, by a bounds-checked walk of the protobuf wire format over
the messages that can hold a TensorProto (field numbers from ``onnx/onnx.proto``, onnx 1.23): initializers,
sparse initializers, tensor attributes of nodes (onnxruntime 1.32 loads a ``Constant`` node's external value,
hard link and all), and the subgraphs and functions that hold nodes. A tensor's ``location`` entry is checked
whatever its ``data_location`` says. Cost: 36 ms for a 67 MB model of 3,000 nodes (raw data is stepped over).
"""

import os
from pathlib import Path, PurePath

import numpy as np

from .._errors import ModelLoadError

# message -> {field number: message it holds}, for the length-delimited fields that lead to a TensorProto
CHILDREN = {
    "ModelProto": {7: "GraphProto", 25: "FunctionProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "FunctionProto": {7: "NodeProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto", 11: "GraphProto",
                       22: "SparseTensorProto", 23: "SparseTensorProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
}
TENSOR_NAME, TENSOR_EXTERNAL_DATA = 8, 13  # TensorProto.name, TensorProto.external_data
ENTRY_KEY, ENTRY_VALUE = 1, 2  # StringStringEntryProto
WIRE_VARINT, WIRE_FIXED64, WIRE_LENGTH, WIRE_FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    """The bytes are not a protobuf message; said once in ModelLoadError."""


def check_external_data(path):
    """Raise ModelLoadError if the model at ``path`` names an external-data file outside the rule above."""
    folder = Path(os.path.abspath(path)).parent
    for tensor, location in external_locations(path):
        _check_location(path, folder, tensor, location)


def external_locations(path):
    """(tensor name, location) for every tensor in the model that keeps its data in another file."""
    if os.path.getsize(path) == 0:
        return []  # nothing to walk; onnxruntime refuses the empty file
    data = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))
    found = []
    pending = [("ModelProto", 0, len(data))]  # a list, not recursion: nesting depth is the file's choice
    try:
        while pending:
            message, start, end = pending.pop()
            if message == "TensorProto":
                found.extend(_tensor_location(data, start, end))
                continue
            for number, field_start, field_end in _length_fields(data, start, end):
                if number in CHILDREN[message]:
                    pending.append((CHILDREN[message][number], field_start, field_end))
    except _Malformed as exc:
        raise ModelLoadError(f"{path} is not a valid ONNX model: {exc}") from exc
    return found


def _tensor_location(data, start, end):
    name, location = "", None
    for number, field_start, field_end in _length_fields(data, start, end):
        if number == TENSOR_NAME:
            name = bytes(data[field_start:field_end]).decode("utf-8", "replace")
        elif number == TENSOR_EXTERNAL_DATA:
            entry = {key: bytes(data[s:e]) for key, s, e in _length_fields(data, field_start, field_end)}
            if entry.get(ENTRY_KEY) == b"location":
                location = entry.get(ENTRY_VALUE, b"").decode("utf-8", "replace")
    return [] if location is None else [(name, location)]


def _length_fields(data, start, end):
    """(field number, start, end) of each length-delimited field of the message in ``data[start:end]``;
    other wire types are stepped over."""
    position = start
    while position < end:
        key, position = _varint(data, position, end)
        number, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            _, position = _varint(data, position, end)
        elif wire == WIRE_FIXED64:
            position += 8
        elif wire == WIRE_FIXED32:
            position += 4
        elif wire == WIRE_LENGTH:
            length, position = _varint(data, position, end)
            if position + length > end:
                raise _Malformed(f"field {number} at byte {position} runs {length} bytes past its message")
            yield number, position, position + length
            position += length
        else:  # groups (3, 4) and 6, 7: onnx.proto uses none of them
            raise _Malformed(f"field {number} at byte {position} has wire type {wire}")
        if position > end:
            raise _Malformed(f"field {number} runs past the end of its message at byte {end}")


def _varint(data, position, end):
    value = shift = 0
    while shift < 70:
        if position >= end:
            raise _Malformed(f"a number runs past byte {end}")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7
    raise _Malformed(f"a number at byte {position} is longer than 10 bytes")


def _check_location(path, folder, tensor, location):
    relative = PurePath(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        raise ModelLoadError(f"{path}: tensor {tensor!r} keeps its data at {location!r}, which is not a plain "
                             "relative path inside the model's folder; refused")
    target = folder / relative
    if target.is_symlink():
        raise ModelLoadError(f"{path}: tensor {tensor!r}: external data {location!r} is a symbolic link; refused")
    if not target.exists():
        raise ModelLoadError(f"{path}: tensor {tensor!r}: external data file {location!r} is missing")
    if not target.is_file():
        raise ModelLoadError(f"{path}: tensor {tensor!r}: external data {location!r} is not a regular file; refused")
    if target.stat().st_nlink != 1:
        raise ModelLoadError(f"{path}: tensor {tensor!r}: external data {location!r} is a hard link "
                             f"({target.stat().st_nlink} links); refused")
    if folder.resolve() not in target.resolve().parents:
        raise ModelLoadError(f"{path}: tensor {tensor!r}: external data {location!r} resolves outside "
                             f"{folder.resolve()}; refused")

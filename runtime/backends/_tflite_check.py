"""Bounds-checked reading of a ``.tflite`` flatbuffer before the interpreter maps it.

The interpreter trusts the file's offsets. It refuses a Buffer whose ``offset + size`` passes the end of the
file, but computes the sum in uint64: one that wraps past 2^64 passes and the interpreter reads outside the
mapping. Measured with ai-edge-litert 2.3: ``offset = 2^64 - 64`` and ``offset = 2^63`` each segfaulted the
loading process (the security review also saw such files load and give outputs that change run to run). So
this module walks the parts of the flatbuffer that point at bytes, every read bounds-checked against the file,
and refuses the file first:

- the file identifier ``TFL3``; the root table and each vtable lie inside the file;
- ``Model.buffers``: each Buffer's inline ``data`` vector lies inside the file; an ``offset``/``size`` pair
  (the > 2 GB layout, data appended after the flatbuffer; offsets 0 and 1 mean "unused") satisfies
  ``offset + size <= file size`` in exact integers, and not together with inline data;
- every subgraph tensor's ``buffer`` and every metadata entry's ``buffer`` index < len(buffers); a constant
  tensor with a static shape holds at least shape-product x element-size bytes;
- an operator's ``large_custom_options_offset``/``size`` obeys the same rule as a Buffer's.

Cost: 11 ms for MobileNetV2 (14 MB, 133 tensors), measured here, against 13-30 ms for the interpreter to load it.

Field ids are the field's position in its table in ``tensorflow/compiler/mlir/lite/schema/schema.fbs``
(a union takes two: its type, then its value). Only numpy and ``int.from_bytes`` are used: the runtime does not
depend on the flatbuffers or tflite schema packages.
"""

import os

import numpy as np

from .._errors import ModelLoadError

IDENTIFIER = b"TFL3"
# Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4, metadata_buffer 5, metadata 6
MODEL_SUBGRAPHS, MODEL_BUFFERS, MODEL_METADATA = 2, 4, 6
# SubGraph: tensors 0, inputs 1, outputs 2, operators 3, name 4
SUBGRAPH_TENSORS, SUBGRAPH_OPERATORS = 0, 3
# Tensor: shape 0, type 1, buffer 2, name 3, quantization 4, is_variable 5, sparsity 6
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_SPARSITY = 0, 1, 2, 6
# Operator: ... builtin_options (union: 3 and 4) ... large_custom_options_offset 9, large_custom_options_size 10
OPERATOR_LARGE_OFFSET, OPERATOR_LARGE_SIZE = 9, 10
# Buffer: data 0, offset 1, size 2.  Metadata: name 0, buffer 1
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
METADATA_BUFFER = 1
# Bits per element by TensorType. INT4 counts 4 bits (the packed layout: a lower bound either way); STRING,
# RESOURCE and VARIANT have no fixed size, and a type this table does not know is left to the interpreter.
ELEMENT_BITS = {0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 6: 8, 7: 16, 8: 64, 9: 8, 10: 64, 11: 128, 12: 64, 15: 32,
                16: 16, 17: 4, 18: 16}


class _File:
    """The file's bytes, read only through bounds-checked little-endian loads."""

    def __init__(self, path, data):
        self.path, self.data, self.size = path, data, len(data)

    def invalid(self, reason) -> ModelLoadError:
        return ModelLoadError(f"{self.path} is not a valid TFLite model: {reason}")

    def outside(self, what, start, end) -> ModelLoadError:
        return self.invalid(f"{what} (bytes {start}..{end}) lies outside the file ({self.size} bytes)")

    def uint(self, position, width, what):
        if position < 0 or position + width > self.size:
            raise self.outside(what, position, position + width)
        return int.from_bytes(self.data[position:position + width].tobytes(), "little")

    def int32(self, position, what):
        value = self.uint(position, 4, what)
        return value - (1 << 32) if value >= 1 << 31 else value

    def vector(self, position, element_width, what):
        """(first element's position, element count) of the vector whose uoffset is at ``position``."""
        start = position + self.uint(position, 4, f"the offset of {what}")
        count = self.uint(start, 4, f"the length of {what}")
        if start + 4 + count * element_width > self.size:
            raise self.outside(f"{what} ({count} elements)", start + 4, start + 4 + count * element_width)
        return start + 4, count


class _Table:
    def __init__(self, file, position, what):
        self.file, self.position, self.what = file, position, what
        self.vtable = position - file.int32(position, what)
        self.vtable_size = file.uint(self.vtable, 2, f"the vtable of {what}")
        self.table_size = file.uint(self.vtable + 2, 2, f"the vtable of {what}")
        if self.vtable_size < 4 or self.vtable + self.vtable_size > file.size:
            raise file.outside(f"the vtable of {what}", self.vtable, self.vtable + self.vtable_size)
        if self.table_size < 4 or position + self.table_size > file.size:
            raise file.outside(what, position, position + self.table_size)

    def _field(self, index, width):
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_size:
            return None
        offset = self.file.uint(self.vtable + slot, 2, f"the vtable of {self.what}")
        if offset == 0:
            return None
        if offset + width > self.table_size:
            raise self.file.invalid(f"field {index} of {self.what} lies outside its table")
        return self.position + offset

    def has(self, index):
        return self._field(index, 4) is not None

    def scalar(self, index, width):
        position = self._field(index, width)
        return 0 if position is None else self.file.uint(position, width, f"field {index} of {self.what}")

    def vector(self, index, element_width, what):
        position = self._field(index, 4)
        return (0, 0) if position is None else self.file.vector(position, element_width, what)

    def tables(self, index, what):
        start, count = self.vector(index, 4, f"the {what} list")
        for k in range(count):
            element = start + 4 * k
            yield _Table(self.file, element + self.file.uint(element, 4, f"{what} {k}"), f"{what} {k}")


def check_flatbuffer(path):
    """Raise ModelLoadError naming the first out-of-bounds reference in the ``.tflite`` file at ``path``."""
    size = os.path.getsize(path)
    if size < 8:
        raise _File(path, b"").invalid(f"{size} bytes is too short for a flatbuffer")
    file = _File(path, np.memmap(path, dtype=np.uint8, mode="r"))
    if file.data[4:8].tobytes() != IDENTIFIER:
        raise file.invalid(f"its file identifier is {file.data[4:8].tobytes()!r}, expected {IDENTIFIER!r}")
    model = _Table(file, file.uint(0, 4, "the root table offset"), "the root table")
    buffer_bytes = [_buffer_bytes(buffer) for buffer in model.tables(MODEL_BUFFERS, "buffer")]
    for metadata in model.tables(MODEL_METADATA, "metadata"):
        _check_index(metadata, metadata.scalar(METADATA_BUFFER, 4), buffer_bytes)
    for subgraph in model.tables(MODEL_SUBGRAPHS, "subgraph"):
        for tensor in subgraph.tables(SUBGRAPH_TENSORS, f"{subgraph.what} tensor"):
            _check_tensor(tensor, buffer_bytes)
        for operator in subgraph.tables(SUBGRAPH_OPERATORS, f"{subgraph.what} operator"):
            _check_span(operator, operator.scalar(OPERATOR_LARGE_OFFSET, 8), operator.scalar(OPERATOR_LARGE_SIZE, 8),
                        f"the custom options of {operator.what}")


def _buffer_bytes(buffer):
    """How many bytes ``buffer`` holds, once they are known to lie inside the file."""
    _, inline = buffer.vector(BUFFER_DATA, 1, f"the data of {buffer.what}")
    offset, length = buffer.scalar(BUFFER_OFFSET, 8), buffer.scalar(BUFFER_SIZE, 8)
    if offset <= 1:  # 0: field absent; 1: the exporter's placeholder (schema: "only valid if > 1")
        return inline
    if inline:
        raise buffer.file.invalid(f"{buffer.what} has both inline data and an offset ({offset})")
    _check_span(buffer, offset, length, buffer.what)
    return length


def _check_span(table, offset, length, what):
    """Data stored after the flatbuffer: exact integers here, where the engine's uint64 sum can wrap."""
    size = table.file.size
    if offset > 1 and offset + length > size:
        wraps = " (the sum wraps past 2^64)" if offset + length >= 1 << 64 else ""
        raise table.file.invalid(f"{what} claims bytes {offset}..{offset + length}{wraps} but the file has "
                                 f"{size} bytes")


def _check_index(table, index, buffer_bytes):
    if index >= len(buffer_bytes):
        raise table.file.invalid(f"{table.what} refers to buffer {index} but the model has {len(buffer_bytes)} "
                                 "buffers")


def _check_tensor(tensor, buffer_bytes):
    index = tensor.scalar(TENSOR_BUFFER, 4)
    _check_index(tensor, index, buffer_bytes)
    held = buffer_bytes[index]
    bits = ELEMENT_BITS.get(tensor.scalar(TENSOR_TYPE, 1))
    if not held or bits is None or tensor.has(TENSOR_SPARSITY):  # sparse constants are stored compressed
        return
    start, rank = tensor.vector(TENSOR_SHAPE, 4, f"the shape of {tensor.what}")
    shape = np.frombuffer(tensor.file.data[start:start + 4 * rank].tobytes(), dtype="<i4").tolist()
    if any(d < 0 for d in shape):
        return
    count = 1
    for d in shape:  # Python integers: a crafted shape must not overflow the product
        count *= d
    needed = (count * bits + 7) // 8
    if held < needed:
        raise tensor.file.invalid(f"{tensor.what} of shape {shape} needs {needed} bytes but buffer {index} "
                                  f"holds {held}")

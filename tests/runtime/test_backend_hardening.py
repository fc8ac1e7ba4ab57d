"""The runtime backends facing hostile files and many threads: crafted TFLite flatbuffers, ONNX external data
that points elsewhere, stale or unbounded OpenVINO compile caches, engine errors that lose their reason, and one
loaded model shared by eight threads. Every model is built here, in code."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import edgekit.runtime as ekr

RNG = np.random.default_rng(0)
WEIGHTS = RNG.standard_normal((16, 8)).astype(np.float32)
BIAS = RNG.standard_normal(8).astype(np.float32)


def _dense_relu(x, weights=WEIGHTS, bias=BIAS):
    return np.maximum(x @ weights + bias, 0)


# --- model builders -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tflite_bytes():
    """relu(x @ WEIGHTS + BIAS) for x of shape (1, 16), converted by TensorFlow's own converter."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32, name="x")])
    def dense(x):
        return {"y": tf.nn.relu(tf.matmul(x, WEIGHTS) + BIAS)}

    return tf.lite.TFLiteConverter.from_concrete_functions([dense.get_concrete_function()], dense).convert()


def _flatbuffer_object(data):
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _flatbuffer_bytes(model, extra=b""):
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils.convert_object_to_bytearray(model, extra)


def _weights_buffer(model):
    """Index of the largest buffer: the 16 x 8 float weights (512 bytes)."""
    sizes = [0 if b.data is None else len(b.data) for b in model.buffers]
    assert max(sizes) == WEIGHTS.nbytes
    return sizes.index(max(sizes))


def _offset_buffer(data, offset_of, size_of, keep_data=False):
    """The model with its weights moved after the flatbuffer (the > 2 GB layout): Buffer.offset/size point at
    them. ``offset_of(start)``/``size_of(start)`` choose the fields, given where the weights really start."""
    model = _flatbuffer_object(data)
    buffer = model.buffers[_weights_buffer(model)]
    weights = bytes(buffer.data)
    if not keep_data:
        buffer.data = None
    buffer.offset = buffer.size = 1 << 40  # a placeholder of the same encoded width as the final values
    length = len(_flatbuffer_bytes(model))
    start = (length + 15) // 16 * 16
    buffer.offset, buffer.size = offset_of(start), size_of(start)
    out = _flatbuffer_bytes(model, b"\0" * (start - length) + weights)
    assert len(out) == start + len(weights)
    return out


def _mutated(data, mutate):
    model = _flatbuffer_object(data)
    mutate(model)
    return _flatbuffer_bytes(model)


def _patched(data, at, value: bytes):
    out = bytearray(data)
    out[at:at + len(value)] = value
    return bytes(out)


def _weights_vector_length_at(data):
    """Where the u32 length of the weights' inline data vector sits (just before the weight bytes)."""
    model = _flatbuffer_object(data)
    position = data.find(bytes(model.buffers[_weights_buffer(model)].data))
    assert position > 4
    return position - 4


def _set_tensor_buffer(index):
    def mutate(model):
        model.subgraphs[0].tensors[_weights_tensor(model)].buffer = index
    return mutate


def _weights_tensor(model):
    weights = _weights_buffer(model)
    return next(i for i, t in enumerate(model.subgraphs[0].tensors) if t.buffer == weights)


def _truncate_weights(model):
    buffer = model.buffers[_weights_buffer(model)]
    buffer.data = buffer.data[:256]


def _metadata_buffer_99(model):
    model.metadata[0].buffer = 99


def _custom_op(model):
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = 32  # BuiltinOperator.CUSTOM
    code.customCode = b"EdgekitNoSuchOp"


def _openvino_ir(path, weights=WEIGHTS, bias=BIAS):
    import openvino
    from openvino import opset13 as ops
    x = ops.parameter([1, 16], np.float32, name="x")
    y = ops.relu(ops.add(ops.matmul(x, ops.constant(weights), False, False), ops.constant(bias[None])))
    y.output(0).get_tensor().set_names({"y"})
    openvino.save_model(openvino.Model([y], [x], "dense"), str(path), compress_to_fp16=False)
    return path


def _onnx_model(weights=WEIGHTS, bias=BIAS, op_type="MatMul", weights_as_constant=False):
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node(op_type, ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    initializers = [numpy_helper.from_array(bias, "b")]
    if weights_as_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weights, "w")))
    else:
        initializers.append(numpy_helper.from_array(weights, "w"))
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _save_onnx_external(folder, location="weights.bin", weights_as_constant=False):
    import onnx
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_onnx_model(weights_as_constant=weights_as_constant), str(folder / "m.onnx"),
              save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=100,
              convert_attribute=weights_as_constant)  # the weights (512 bytes) go out, the bias (32) stays
    return folder / "m.onnx"


# --- 1. TFLite: the flatbuffer is checked before the interpreter reads it -------------------------------------------

@pytest.mark.parametrize("layout", ["inline", "offset"])
def test_tflite_valid_files_load_and_predict(tmp_path, tflite_bytes, layout):
    data = tflite_bytes if layout == "inline" else _offset_buffer(tflite_bytes, lambda s: s, lambda s: 512)
    (tmp_path / "m.tflite").write_bytes(data)
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    model = ekr.load(tmp_path / "m.tflite")
    np.testing.assert_allclose(model.predict(x), _dense_relu(x), rtol=1e-5, atol=1e-5)


# name -> (how the file is crafted from the converter's bytes, what the refusal says)
CRAFTED = {
    "offset_wraps_2_64": (lambda d: _offset_buffer(d, lambda s: 2**64 - 64, lambda s: s + 64 + 512),
                          r"buffer \d+ .*bytes 18446744073709551552\.\..*wraps past 2\^64"),
    "offset_wraps_far": (lambda d: _offset_buffer(d, lambda s: 2**63, lambda s: 2**63 + 512), "wraps past 2\\^64"),
    "offset_past_end": (lambda d: _offset_buffer(d, lambda s: s + 4096, lambda s: 512), r"but the file has \d+ bytes"),
    "data_and_offset": (lambda d: _offset_buffer(d, lambda s: s, lambda s: 512, keep_data=True),
                        "both inline data and an offset"),
    "tensor_buffer_index": (lambda d: _mutated(d, _set_tensor_buffer(99)), r"buffer 99 .*7 buffers"),
    "truncated_constant": (lambda d: _mutated(d, _truncate_weights), r"needs 512 bytes .*holds 256"),
    "metadata_buffer_index": (lambda d: _mutated(d, _metadata_buffer_99), r"metadata .*buffer 99 .*7 buffers"),
    "data_vector_length": (lambda d: _patched(d, _weights_vector_length_at(d), (2**31 - 1).to_bytes(4, "little")),
                           "outside the file"),
    "root_offset": (lambda d: _patched(d, 0, (2**32 - 16).to_bytes(4, "little")), "root table .*outside the file"),
    "vtable_offset": (lambda d: _patched(d, int.from_bytes(d[:4], "little"), (-2**30).to_bytes(4, "little",
                                                                                                 signed=True)),
                      "vtable .*outside the file"),
    "identifier": (lambda d: _patched(d, 4, b"TFL2"), "TFL3"),
    "too_short": (lambda d: d[:6], "too short"),
}

LOAD_EACH = """
import json, sys
import edgekit.runtime as ekr
for path in sys.argv[1:]:
    try:
        ekr.load(path)
        outcome = "loaded"
    except ekr.ModelLoadError as exc:
        outcome = "refused: " + str(exc)
    print(json.dumps([path, outcome]), flush=True)
"""


@pytest.fixture(scope="module")
def crafted_tflite(tmp_path_factory, tflite_bytes):
    folder = tmp_path_factory.mktemp("crafted")
    paths = {}
    for name, (craft, _) in CRAFTED.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(craft(tflite_bytes))
    return paths


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_tflite_crafted_files_are_refused_before_the_interpreter(crafted_tflite, name):
    from edgekit.runtime.backends import _tflite_check
    with pytest.raises(ekr.ModelLoadError, match=CRAFTED[name][1]):
        _tflite_check.check_flatbuffer(crafted_tflite[name])


def test_tflite_crafted_files_never_reach_the_interpreter(crafted_tflite):
    """Through ``ekr.load`` in a child process: the two wrap-around files segfaulted the interpreter (or let it read
    memory before the file) until the check ran first, so a missed check must fail this test, not kill pytest."""
    names = sorted(CRAFTED)
    result = subprocess.run([sys.executable, "-I", "-c", LOAD_EACH, *(str(crafted_tflite[n]) for n in names)],
                            capture_output=True, text=True, timeout=300)
    outcomes = dict(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))
    assert result.returncode == 0, (f"the loader died (exit {result.returncode}) after {len(outcomes)} files, on "
                                    f"{names[len(outcomes)] if len(outcomes) < len(names) else '?'}: "
                                    f"{result.stderr[-1500:]}")
    assert len(outcomes) == len(names)
    for name in names:
        outcome = outcomes[str(crafted_tflite[name])]
        assert outcome.startswith("refused: "), (name, outcome)
        assert "is not a valid TFLite model" in outcome, (name, outcome)


def test_tflite_load_error_keeps_the_interpreter_reason(tmp_path, tflite_bytes):
    (tmp_path / "custom.tflite").write_bytes(_mutated(tflite_bytes, _custom_op))
    with pytest.raises(ekr.ModelLoadError, match="EdgekitNoSuchOp") as caught:
        ekr.load(tmp_path / "custom.tflite")
    assert "\n" not in str(caught.value) and "failed to prepare" in str(caught.value)
    assert isinstance(caught.value.__cause__, (ValueError, RuntimeError))


# --- 2. One loaded model shared by eight threads --------------------------------------------------------------------

def _shared_model(kind, folder, tflite_bytes):
    if kind == "tflite":
        (folder / "dense.tflite").write_bytes(tflite_bytes)
        return ekr.load(folder / "dense.tflite")
    if kind == "openvino":
        return ekr.load(_openvino_ir(folder / "dense.xml"))
    import onnx
    onnx.save(_onnx_model(), str(folder / "dense.onnx"))
    return ekr.load(folder / "dense.onnx")


@pytest.mark.parametrize("kind", ["tflite", "openvino", "onnx"])
def test_one_model_shared_by_eight_threads_gives_the_sequential_results(tmp_path, tflite_bytes, kind):
    """8 threads x 200 calls, each with its own input: every result equals, bit for bit, the one-thread result for
    that input. Before the fix TFLite gave 2-5 wrong results and raw RuntimeErrors, OpenVINO 34-213 wrong."""
    model = _shared_model(kind, tmp_path, tflite_bytes)
    threads, calls = 8, 200
    inputs = np.random.default_rng(1).standard_normal((threads * calls, 16)).astype(np.float32)
    sequential = [model.predict(x) for x in inputs]
    assert len({r.tobytes() for r in sequential}) > 0.99 * len(inputs)  # a wrong result shows (relu zeroes a few)
    threaded = [None] * len(inputs)
    errors = []
    start = threading.Barrier(threads)

    def work(first):
        start.wait()
        for i in range(first, len(inputs), threads):
            try:
                threaded[i] = model.predict(inputs[i])
            except Exception as exc:  # counted and reported below, with the wrong results
                errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wrong = [i for i, (a, b) in enumerate(zip(threaded, sequential)) if a is None or not np.array_equal(a, b)]
    assert errors == [] and wrong == [], f"{len(errors)} errors ({errors[:2]}), {len(wrong)} wrong results"
    np.testing.assert_allclose(sequential[0], _dense_relu(inputs[0]), rtol=1e-5, atol=1e-5)


# --- 3. OpenVINO compile cache: keyed on content, bounded -----------------------------------------------------------

def test_openvino_cache_serves_new_weights_after_a_same_size_rewrite_with_the_old_mtime(tmp_path):
    """rsync -t, tar or FAT's 2 s clock keep size and mtime: the compiled model must follow the bytes."""
    path = _openvino_ir(tmp_path / "dense.xml")
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_allclose(ekr.load(path).predict(x), _dense_relu(x), rtol=1e-5, atol=1e-5)
    bin_path = path.with_suffix(".bin")
    before = os.stat(bin_path)
    new_weights, new_bias = -WEIGHTS, BIAS + 1
    _openvino_ir(tmp_path / "other.xml", new_weights, new_bias)
    replacement = (tmp_path / "other.bin").read_bytes()
    assert len(replacement) == before.st_size and replacement != bin_path.read_bytes()
    with open(bin_path, "r+b") as fh:  # in place: same inode, same size
        fh.write(replacement)
    os.utime(bin_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(bin_path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    np.testing.assert_allclose(ekr.load(path).predict(x), _dense_relu(x, new_weights, new_bias), rtol=1e-5, atol=1e-5)


def test_openvino_cache_is_bounded(tmp_path):
    from edgekit.runtime.backends import _openvino
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    models = []
    for k in range(20):
        weights = WEIGHTS + k
        path = _openvino_ir(tmp_path / f"m{k}.xml", weights)
        models.append((path, weights))
        np.testing.assert_allclose(ekr.load(path).predict(x), _dense_relu(x, weights), rtol=1e-5, atol=1e-4)
        assert len(_openvino._COMPILED) <= _openvino.CACHE_SIZE
    assert _openvino.CACHE_SIZE == 8 and len(_openvino._COMPILED) == _openvino.CACHE_SIZE
    last = ekr.load(models[-1][0])._engine._compiled
    assert ekr.load(models[-1][0])._engine._compiled is last  # still cached: compiled once
    first_path, first_weights = models[0]
    np.testing.assert_allclose(ekr.load(first_path).predict(x), _dense_relu(x, first_weights), rtol=1e-5, atol=1e-4)
    assert len(_openvino._COMPILED) == _openvino.CACHE_SIZE


# --- 4. Engine errors keep their reason -----------------------------------------------------------------------------

def test_openvino_load_error_keeps_the_plugin_reason(tmp_path):
    path = _openvino_ir(tmp_path / "dense.xml")
    path.write_text(path.read_text().replace('type="ReLU"', 'type="EdgekitBogus"'))
    with pytest.raises(ekr.ModelLoadError, match="doesn't contain the operation with type: EdgekitBogus") as caught:
        ekr.load(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_onnxruntime_load_error_keeps_the_reason(tmp_path):
    import onnx
    onnx.save(_onnx_model(op_type="EdgekitNoSuchOp"), str(tmp_path / "m.onnx"))
    with pytest.raises(ekr.ModelLoadError, match="EdgekitNoSuchOp") as caught:
        ekr.load(tmp_path / "m.onnx")
    assert caught.value.__cause__ is not None


def test_engine_messages_are_one_clean_line_of_bounded_length():
    from edgekit.runtime.backends._engine_error import engine_message
    assert engine_message(RuntimeError("Exception from core.cpp:132:\n\tbad\x1b[31m  thing\r\n\x00")) == \
        "Exception from core.cpp:132: bad[31m thing"
    long = engine_message(RuntimeError("why " * 5000))
    assert len(long) <= 2003 and long.endswith("...") and long.startswith("why why")


# --- 5. ONNX external data is checked at run time, too --------------------------------------------------------------

def test_onnx_external_data_in_the_model_folder_loads(tmp_path):
    path = _save_onnx_external(tmp_path / "model")
    assert (tmp_path / "model" / "weights.bin").stat().st_size == WEIGHTS.nbytes
    x = RNG.standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(ekr.load(path).predict(x), _dense_relu(x), rtol=1e-5, atol=1e-5)


def _relocate(path, location):
    """Point every external-data entry of the saved model at ``location``."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("case, message", [
    ("hardlink", "hard link"),
    ("symlink", "symbolic link"),
    ("parent", "not a plain relative path"),
    ("absolute", "not a plain relative path"),
    ("missing", "is missing"),
    ("directory", "not a regular file"),
    ("ort_memory_address", "is missing"),
    ("constant_attribute_hardlink", "tensor 'w'.*hard link"),  # the Constant node's value, not an initializer
])
def test_onnx_external_data_outside_the_model_folder_is_refused_at_run_time(tmp_path, case, message):
    folder = tmp_path / "model"
    path = _save_onnx_external(folder, weights_as_constant=case.startswith("constant"))
    weights = folder / "weights.bin"
    if case.endswith("hardlink"):
        os.link(weights, tmp_path / "elsewhere.bin")
    elif case == "symlink":
        weights.rename(tmp_path / "real.bin")
        weights.symlink_to(tmp_path / "real.bin")
    elif case == "parent":
        weights.rename(tmp_path / "weights.bin")
        _relocate(path, "../weights.bin")
    elif case == "absolute":
        _relocate(path, str(weights))
    elif case == "missing":
        weights.unlink()
    elif case == "directory":
        weights.unlink()
        weights.mkdir()
    elif case == "ort_memory_address":  # onnxruntime's tag for "offset is a pointer in this process"
        _relocate(path, "*/_ORT_MEM_ADDR_/*")
    with pytest.raises(ekr.ModelLoadError, match=message):
        ekr.load(path)

"""Hostile data files: zip bombs, forged sizes, huge declared shapes, FIFOs, object arrays; a model whose
declared input would make export synthesize gigabytes; NaN in parity metrics. Each is a clean error that
says what came, what was expected and what to do, and nothing is inflated or allocated first."""

import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from edgekit.config import DEFAULT_TOLERANCES, Precision, Tolerance
from edgekit.data import load_data
from edgekit.errors import ConfigError, InputError
from edgekit.parity import ParityResult, compare, judge
from edgekit.reference import ReferenceOutputs
from edgekit.runtime import TensorInfo

from ..timeouts import deadline

CAP_ENV = "EDGEKIT_MAX_ARRAY_BYTES"


def _npy_header(shape, descr="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _forged_zip(name, data, *, claimed_size, method=zipfile.ZIP_DEFLATED) -> bytes:
    """A one-member zip whose directory claims ``claimed_size`` bytes for the ``data`` it stores as is."""
    raw = name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, 0, len(data), claimed_size, len(raw), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, 0, len(data), claimed_size,
                          len(raw), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(raw),
                      len(local) + len(raw) + len(data), 0)
    return local + raw + data + central + raw + end


@pytest.fixture
def bomb_3gb(tmp_path):
    """The review's case under the default cap: a ~3 MB .npz whose member declares 3 GiB (a plausible
    deflate ratio, ~1000x). Nothing in it is ever decompressed, so its data can be noise."""
    header = _npy_header((3 << 28,))  # float32: 3 GiB
    data = np.random.default_rng(0).bytes(3 << 20)
    path = tmp_path / "bomb.npz"
    path.write_bytes(_forged_zip("x.npy", data, claimed_size=len(header) + (3 << 30)))
    return path


def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path, monkeypatch):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros(16 << 20, np.float32))  # 64 MiB of zeros in ~65 KiB
    assert path.stat().st_size < 100_000
    monkeypatch.setenv(CAP_ENV, str(16 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"calibration: .*zeros\.npz holds 64\.0 MiB .* once decompressed "
                                             r"\(.* compressed\), more than the 16\.0 MiB .* cap "
                                             r"\(EDGEKIT_MAX_ARRAY_BYTES\); pass less data or raise the cap"):
            load_data(path, role="calibration")
        assert tracemalloc.get_traced_memory()[1] < 4 << 20  # nothing was inflated
    finally:
        tracemalloc.stop()


def test_a_3gb_claim_is_refused_under_the_default_cap(bomb_3gb):
    with pytest.raises(InputError, match=r"eval: .*bomb\.npz holds 3\.0 GiB .* more than the 2\.0 GiB .* cap"):
        load_data(bomb_3gb, role="eval")


def test_a_zip_bomb_as_calib_is_exit_code_2(bomb_3gb, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from edgekit.cli.main import main
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, tmp_path / "m.onnx")
    args = ["export", str(tmp_path / "m.onnx"), "--int8", "--calib", str(bomb_3gb), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "more than the 2.0 GiB" in capsys.readouterr().err


def test_a_member_claiming_more_than_deflate_can_make_is_refused(tmp_path):
    path = tmp_path / "liar.npz"
    path.write_bytes(_forged_zip("x.npy", b"\0" * 1000, claimed_size=100 << 20))
    with pytest.raises(InputError, match=r"claims 100\.0 MiB .* from 1000 bytes compressed, more than deflate can "
                                         r"produce \(at most 1100x\)"):
        load_data(path, role="eval")


def test_a_stored_member_with_two_sizes_is_refused(tmp_path):
    path = tmp_path / "stored.npz"
    header = _npy_header((4,))
    path.write_bytes(_forged_zip("x.npy", header + b"\0" * 16, claimed_size=len(header) + 32,
                                 method=zipfile.ZIP_STORED))
    with pytest.raises(InputError, match="stored uncompressed but the zip directory gives it two sizes"):
        load_data(path, role="eval")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_header_declaring_a_huge_array_is_an_input_error_not_a_memory_error(tmp_path, suffix):
    blob = _npy_header((2**40,)) + b"\0" * 16
    path = tmp_path / f"huge{suffix}"
    if suffix == ".npy":
        path.write_bytes(blob)
    else:
        with zipfile.ZipFile(path, "w") as archive:  # honest zip sizes; only the header lies
            archive.writestr("x.npy", blob)
    with pytest.raises(InputError, match=r"declares an array of shape \(1099511627776,\) float32 \(4\.0 TiB"):
        load_data(path, role="eval")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_the_header_must_agree_with_the_bytes_that_follow(tmp_path, suffix):
    blob = _npy_header((10,)) + b"\0" * 60  # 40 bytes declared, 60 present
    path = tmp_path / f"padded{suffix}"
    if suffix == ".npy":
        path.write_bytes(blob)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", blob)
    with pytest.raises(InputError, match=r"declares shape \(10,\) float32 \(168 bytes\) but holds 188 bytes"):
        load_data(path, role="eval")


def test_bit_flipped_and_truncated_archives_are_input_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((8, 4)).astype(np.float32))
    data = path.read_bytes()
    rng = np.random.default_rng(1)
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(60):
        broken = bytearray(data[:rng.integers(len(data))] if trial % 3 == 0 else data)
        if trial % 3:
            broken[rng.integers(len(broken))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(broken))
        try:
            load_data(path, role="eval")
            outcomes["loaded"] += 1  # a flip in a timestamp or a name is harmless
        except InputError:
            outcomes["error"] += 1
    assert outcomes["error"] >= 30, outcomes


def test_object_arrays_in_an_npz_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot be read without unpickling; save plain numeric arrays"):
        load_data(tmp_path / "evil.npz", role="eval")


def test_non_numeric_arrays_are_refused(tmp_path):
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="has dtype <U1; expected plain numeric arrays"):
        load_data(tmp_path / "text.npy", role="eval")


@pytest.mark.parametrize("name", ["data.npz", "data.npy"])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, name):
    import os
    os.mkfifo(tmp_path / name)
    with deadline(10), pytest.raises(InputError, match="is not a regular file .*FIFO"):
        load_data(tmp_path / name, role="eval")


def test_the_cap_is_read_from_the_environment(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((8, 64), np.float32))  # 2 KiB of arrays in a small file
    monkeypatch.setenv(CAP_ENV, "1000")
    with pytest.raises(InputError, match=r"holds 2\.1 KiB .* more than the 1000 bytes cap \(EDGEKIT_MAX_ARRAY_BYTES\)"):
        load_data(tmp_path / "d.npz", role="eval")
    np.save(tmp_path / "d.npy", np.zeros((8, 64), np.float32))
    with pytest.raises(InputError, match=r"d\.npy is 2\.1 KiB .* more than the 1000 bytes cap on array data"):
        load_data(tmp_path / "d.npy", role="eval")
    for bad in ("2GB", "0", "-5"):
        monkeypatch.setenv(CAP_ENV, bad)
        with pytest.raises(ConfigError, match="EDGEKIT_MAX_ARRAY_BYTES"):
            load_data(tmp_path / "d.npz", role="eval")
    monkeypatch.setenv(CAP_ENV, str(1 << 20))
    assert load_data(tmp_path / "d.npz", role="eval").inputs["x"].shape == (8, 64)


def test_plain_numpy_files_load_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.random((5, 3, 2)).astype(np.float32))
    labels = rng.integers(0, 3, 5)
    np.savez(tmp_path / "a.npz", x=x, y=labels)
    np.savez_compressed(tmp_path / "b.npz", image=x, mask=x > 0.5)
    np.save(tmp_path / "c.npy", x.astype(np.float16))
    a = load_data(tmp_path / "a.npz")
    np.testing.assert_array_equal(a.inputs["x"], x)
    np.testing.assert_array_equal(a.labels, labels)
    b = load_data(tmp_path / "b.npz")
    assert b.inputs["mask"].dtype == np.bool_ and np.array_equal(b.inputs["image"], x)
    np.testing.assert_array_equal(load_data(tmp_path / "c.npy").inputs["x"], x.astype(np.float16))


def test_a_bomb_as_reference_npz_is_refused(tmp_path, bomb_3gb):
    bomb_3gb.rename(tmp_path / "reference.npz")
    with pytest.raises(InputError, match=r"reference outputs: .*reference\.npz holds 3\.0 GiB .* cap"):
        ReferenceOutputs.load(tmp_path, {"file": "reference.npz", "outputs": ["output"]})


# --- synthesized eval data ------------------------------------------------------------------------------------------

def test_synthesized_eval_data_is_capped_before_it_is_made():
    from edgekit.pipeline import _random_data
    specs = [TensorInfo("x", (None, 2**23), np.dtype(np.float32))]
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"64 random samples .* would take 6\.0 GiB .* pass eval= data "
                                              r"\(CLI: --eval DATA\)"):
            _random_data(specs, 0)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    small = _random_data([TensorInfo("x", (None, 3), np.dtype(np.float32))], 0)
    assert small.inputs["x"].shape == (64, 3) and small.inputs["x"].dtype == np.float32
    with pytest.raises(InputError, match="negative sizes"):
        _random_data([TensorInfo("x", (None, -3), np.dtype(np.float32))], 0)


def test_a_tiny_onnx_declaring_a_huge_input_without_eval_data_is_exit_code_2(tmp_path, capsys):
    """The review's 87-byte model: an Identity on [N, 2^23] floats."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.cli.main import main
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**23])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2**23])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])),
              tmp_path / "wide.onnx")
    assert (tmp_path / "wide.onnx").stat().st_size < 200
    assert main(["export", str(tmp_path / "wide.onnx"), "--out", str(tmp_path / "out")]) == 2
    assert "pass eval= data (CLI: --eval DATA)" in capsys.readouterr().err


# --- NaN in parity ----------------------------------------------------------------------------------------------------

INT8 = DEFAULT_TOLERANCES[Precision.INT8]


def test_nan_metrics_fail_every_limit():
    nan = float("nan")
    metrics = {"finite": True, "reference_finite": True, "all_zero": False, "cosine": nan, "max_abs_error": nan,
               "top1_agreement": nan}
    result = judge(ParityResult({"accuracy_drop": nan}, {"logits": metrics}), Tolerance(
        min_cosine=0.99, max_accuracy_drop=1.0, min_top1_agreement=0.97, max_abs_error=0.1))
    assert not result.passed
    assert [f.split(" ")[1] for f in result.failures] == ["cosine", "max", "top-1", "drop"]


def test_a_nan_reference_fails_parity_even_against_a_nan_output():
    reference = np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32)
    reference[4, 2] = np.nan
    result = judge(compare({"logits": reference}, {"logits": reference.copy()}, reference.argmax(1)), INT8)
    assert not result.passed and "reference outputs hold NaN or inf" in result.failures[0]
    clean = np.nan_to_num(reference)
    assert not judge(compare({"logits": reference}, {"logits": clean}), INT8).passed


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_finite_values_whose_cosine_overflows_fail():
    reference = np.full((4, 3), 1e200)  # finite, but the norms overflow float64: cosine is inf/inf = NaN
    result = judge(compare({"y": reference}, {"y": reference.copy()}), INT8)
    assert np.isnan(result.metrics["cosine"]) and not result.passed

import numpy as np
import pytest

from edgekit.data import Dataset, ImagePreprocess, check_calibration, load_data, validate
from edgekit.errors import CalibrationError, InputError
from edgekit.runtime import TensorInfo

SPEC = [TensorInfo("image", (None, 1, 8, 8), np.dtype("float32"), "nchw")]


def _x(n=4, shape=(1, 8, 8)):
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


def test_npz_binds_x_to_the_single_input(tmp_path):
    np.savez(tmp_path / "d.npz", x=_x(), y=np.arange(4))
    ds = validate(load_data(tmp_path / "d.npz"), SPEC, role="eval")
    assert list(ds.inputs) == ["image"] and ds.labels.tolist() == [0, 1, 2, 3]


def test_npy_and_float64_is_narrowed(tmp_path):
    np.save(tmp_path / "d.npy", _x().astype(np.float64))
    ds = validate(load_data(tmp_path / "d.npy"), SPEC, role="eval")
    assert ds.inputs["image"].dtype == np.float32 and ds.labels is None


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="unpickling"):
        load_data(tmp_path / "evil.npy")


def test_nhwc_data_for_nchw_model_is_an_error_with_a_hint():
    with pytest.raises(InputError, match=r"looks NHWC.*transpose\(0, 3, 1, 2\)"):
        validate(load_data(_x(shape=(8, 8, 1))), SPEC, role="calibration")


@pytest.mark.parametrize("array, match", [
    (_x(shape=(8, 8)), "rank 4"),
    (_x().astype(np.int32), "expected dtype float32, got int32"),
    (np.zeros((0, 1, 8, 8), np.float32), "empty"),
    (_x(shape=(1, 9, 8)), r"expected shape \(N, 1, 8, 8\)"),
])
def test_shape_dtype_and_empty_errors_say_what_was_expected(array, match):
    with pytest.raises(InputError, match=match):
        validate(load_data(array), SPEC, role="eval")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_refused(bad):
    x = _x()
    x[2, 0, 3, 3] = bad
    with pytest.raises(InputError, match="NaN/inf.*sample 2"):
        validate(load_data(x), SPEC, role="calibration")


def test_label_count_must_match():
    with pytest.raises(InputError, match="3 labels for 4 samples"):
        validate(load_data((_x(), np.arange(3))), SPEC, role="eval")


def test_constant_calibration_is_refused_and_few_samples_warn():
    constant = Dataset({"image": np.ones((40, 1, 8, 8), np.float32)})
    with pytest.raises(CalibrationError, match="constant"):
        check_calibration(constant, min_samples=32)
    assert check_calibration(Dataset({"image": _x(8)}), min_samples=32)
    assert check_calibration(Dataset({"image": _x(40)}), min_samples=32) == []


def test_callable_batches_and_multi_input_names():
    specs = [TensorInfo("tokens", (None, 5), np.dtype("int64")),
             TensorInfo("features", (None, 4), np.dtype("float32"))]

    def batches():
        for i in range(3):
            yield {"tokens": np.full((2, 5), i, np.int32), "features": np.ones((2, 4), np.float32),
                   "y": np.array([i, i])}

    ds = validate(load_data(batches), specs, role="eval")
    assert ds.inputs["tokens"].dtype == np.int64 and len(ds) == 6 and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="missing"):
        validate(load_data({"tokens": np.zeros((2, 5), np.int64)}), specs, role="eval")


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray(np.full((12, 10, 3), 200 if label == "dog" else 10, np.uint8)).save(
                tmp_path / label / f"{i}.png")
    pre = ImagePreprocess(size=(8, 8), mean=(0.5,), std=(0.5,), layout="nchw", grayscale=True)
    ds = validate(load_data(tmp_path, preprocess=pre), SPEC, role="eval")
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.class_names == ("cat", "dog")
    assert ds.inputs["image"][0].max() < 0 < ds.inputs["image"][3].min()


def test_dataset_hash_changes_with_content():
    a = Dataset({"x": _x()})
    b = Dataset({"x": _x() + 1})
    assert a.sha256() == Dataset({"x": _x()}).sha256() != b.sha256()


def test_image_folders_keep_the_decompression_bomb_limit(tmp_path, monkeypatch):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "big.png")
    # A limit this small makes a 64x64 image a "bomb" (Pillow errors above twice the limit).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="decompression bomb"):
        load_data(folder, preprocess=ImagePreprocess(size=(8, 8)))

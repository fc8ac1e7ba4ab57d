import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgekit.runtime import dequantize, quantize

scales = st.floats(min_value=1e-4, max_value=10, allow_nan=False)
int8 = st.tuples(scales, st.integers(-128, 127), st.just(np.int8))
uint8 = st.tuples(scales, st.integers(0, 255), st.just(np.uint8))


@given(params=st.one_of(int8, uint8), values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50))
def test_round_trip_within_half_a_step_inside_the_range(params, values):
    scale, zero, dtype = params
    info = np.iinfo(dtype)
    lo, hi = (info.min - zero) * scale, (info.max - zero) * scale
    x = np.clip(np.asarray(values, np.float64), lo, hi)
    back = dequantize(quantize(x, scale, zero, dtype), scale, zero)
    assert np.all(np.abs(back - x) <= scale / 2 + 1e-6 * max(1.0, abs(scale)))


@given(params=st.one_of(int8, uint8))
def test_zero_maps_exactly_to_the_zero_point(params):
    scale, zero, dtype = params
    assert quantize(np.zeros(3), scale, zero, dtype).tolist() == [zero] * 3
    assert dequantize(np.array([zero], dtype), scale, zero)[0] == 0.0


@given(params=st.one_of(int8, uint8), values=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=2, max_size=50))
def test_quantization_is_monotonic_and_saturates(params, values):
    scale, zero, dtype = params
    x = np.sort(np.asarray(values))
    q = quantize(x, scale, zero, dtype).astype(np.int32)
    assert np.all(np.diff(q) >= 0)
    info = np.iinfo(dtype)
    assert q.min() >= info.min and q.max() <= info.max

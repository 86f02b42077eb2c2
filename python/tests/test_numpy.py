"""dmx.numpy against safetensors.numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load_file as st_load
from safetensors.numpy import save_file as st_save

import dmx
import dmx.numpy

NP_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16,
             np.int32, np.uint32, np.int64, np.uint64, np.bool_]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arrays=st.lists(
        st.sampled_from(NP_DTYPES).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
        ),
        min_size=1,
        max_size=4,
    )
)
def test_numpy_round_trip_and_identical_archive(tmp_path_factory, arrays):
    d = tmp_path_factory.mktemp("np")
    tensors = {f"a{i}": a for i, a in enumerate(arrays)}
    st_save(tensors, str(d / "model.safetensors"))
    dmx.compress(d / "model.safetensors", d / "model.dmx")
    (d / "py").mkdir()
    dmx.numpy.save_file(tensors, d / "py" / "model.dmx")
    assert (d / "py" / "model.dmx").read_bytes() == (d / "model.dmx").read_bytes()
    got = dmx.numpy.load_file(d / "model.dmx")
    want = st_load(str(d / "model.safetensors"))
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert got[k].tobytes() == v.tobytes()
        assert got[k].flags.writeable


def test_non_contiguous_and_big_endian_arrays_are_packed(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    dmx.numpy.save_file({"t": a.T, "b": a.astype(">f4")}, tmp_path / "x.dmx")
    got = dmx.numpy.load_file(tmp_path / "x.dmx")
    assert np.array_equal(got["t"], a.T) and np.array_equal(got["b"], a)


def test_bfloat16_needs_torch(archive):
    with pytest.raises(dmx.UsageError, match="numpy has no dtype"):
        dmx.numpy.load_file(archive)

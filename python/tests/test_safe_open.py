"""dmx.safe_open against safetensors.safe_open on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open as st_open

import dmx

INDEXES = [
    slice(None), slice(0, 1), slice(3, 17), slice(-5, None), slice(2, 40, 3), slice(7, 3), 0, 5, -1,
    (slice(None), slice(1, 9)), (slice(2, 4), 3), (Ellipsis, slice(0, 2)), (1, slice(None, None, 2)),
]


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_keys_metadata_tensors_and_slices_match_safetensors(model, archive, framework):
    with st_open(str(model), framework=framework) as want, dmx.safe_open(archive, framework=framework) as got:
        assert got.keys() == want.keys()
        assert got.metadata() == want.metadata()
        for name in want.keys():
            if framework == "np" and name in ("embed.weight", "layers.0.attn.q.weight"):
                continue  # numpy has no bfloat16
            a, b = want.get_tensor(name), got.get_tensor(name)
            assert _equal(a, b), name
            ws, gs = want.get_slice(name), got.get_slice(name)
            assert gs.get_shape() == list(ws.get_shape()) and gs.get_dtype() == ws.get_dtype()
            if not gs.get_shape():
                continue
            for ix in INDEXES:
                nd = len(gs.get_shape())
                if isinstance(ix, tuple) and len([i for i in ix if i is not Ellipsis]) > nd:
                    continue
                if isinstance(ix, int) and ix >= gs.get_shape()[0]:
                    continue
                expected = a[ix]
                assert _equal(gs[ix], expected), (name, ix)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_slices_decode_only_the_rows_asked_for(archive, model):
    # A row slice is read into a buffer of just those rows.
    with dmx.safe_open(archive) as f:
        rows = f.get_slice("embed.weight")[100:110]
    assert rows.shape == (10, 256) and rows.untyped_storage().nbytes() == 10 * 256 * 2


def test_scalars_and_errors(archive):
    with dmx.safe_open(archive) as f:
        s = f.get_slice("step")
        assert s.get_shape() == [] and s[...].item() == 7
        with pytest.raises(dmx.UsageError):
            s[0]
        with pytest.raises(dmx.UsageError, match="no tensor named"):
            f.get_tensor("nope")
        with pytest.raises(IndexError):
            f.get_slice("embed.weight")[512]
    with pytest.raises(dmx.UsageError):
        dmx.safe_open(archive, framework="tf")


def test_lossy_archives_give_decoded_values_in_the_original_dtype(tmp_path, model):
    dmx.compress(model, tmp_path / "l.dmx", mode="bfp", mantissa_bits=4)
    with dmx.safe_open(tmp_path / "l.dmx") as f, st_open(str(model), framework="pt") as o:
        for name in o.keys():
            t = f.get_tensor(name)
            assert t.dtype == o.get_tensor(name).dtype
            assert torch.equal(f.get_slice(name)[0:1] if t.dim() else t, t[0:1] if t.dim() else t)


def test_folder_archives_need_a_file_selector(tmp_path):
    from safetensors.torch import save_file

    import dmx.torch

    folder = tmp_path / "model"
    folder.mkdir()
    a = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    b = {"y": torch.ones(4, dtype=torch.bfloat16)}
    save_file(a, str(folder / "model-00001-of-00002.safetensors"))
    save_file(b, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text("{}")
    dmx.compress(folder, tmp_path / "folder.dmx")
    with pytest.raises(dmx.UsageError, match="choose one with file="):
        dmx.safe_open(tmp_path / "folder.dmx")
    with dmx.safe_open(tmp_path / "folder.dmx", file="model-00002-of-00002.safetensors") as f:
        assert f.keys() == ["y"] and torch.equal(f.get_tensor("y"), b["y"])
        assert sorted(f.files()) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    got = dmx.torch.load_file(tmp_path / "folder.dmx", file="model-00001-of-00002.safetensors")
    assert torch.equal(got["x"], a["x"])


def test_unknown_tensor_is_a_key_error(archive):
    with dmx.safe_open(archive) as f:
        with pytest.raises(KeyError) as e:
            f.get_tensor("nope")
    assert isinstance(e.value, dmx.TensorNotFoundError) and "nope" in str(e.value)

"""dmx.torch against safetensors.torch: round trips, identical archives, interop."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file as st_load
from safetensors.torch import save_file as st_save

import dmx
import dmx.torch

DTYPES = [
    torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.float8_e4m3fn,
    torch.float8_e5m2, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64,
    torch.uint16, torch.uint32, torch.uint64, torch.bool, torch.complex64,
]
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-45, 65504.0, 3.0e38]


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int, special: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if dtype == torch.bool:
        return (torch.rand(n, generator=g) > 0.5).reshape(shape)
    if dtype.is_floating_point or dtype.is_complex:
        t = torch.randn(n, generator=g, dtype=torch.float64) * 3
        if special and n:
            for i, v in enumerate(SPECIAL[:n]):
                t[(i * 7919) % n] = v
        return t.to(dtype).reshape(shape)
    info = torch.iinfo(dtype)
    raw = torch.randint(0, 256, (n * info.bits // 8,), generator=g, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN payloads and -0.0 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


shapes = st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple) | st.sampled_from(
    [(1,), (0,), (3, 0, 2), (1, 1, 1), (17, 33), (4097,)]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=1, max_size=4),
    shape=shapes,
    seed=st.integers(0, 2**16),
    special=st.booleans(),
)
def test_round_trip_and_identical_to_dmx_compress(tmp_path_factory, dtypes, shape, seed, special):
    d = tmp_path_factory.mktemp("rt")
    tensors = {
        f"t{i}.{str(dt).split('.')[-1]}": random_tensor(dt, shape, seed + i, special)
        for i, dt in enumerate(dtypes)
    }
    st_save(tensors, str(d / "model.safetensors"), metadata={"k": "v"})
    dmx.compress(d / "model.safetensors", d / "model.dmx")
    (d / "py").mkdir()
    r = dmx.torch.save_file(tensors, d / "py" / "model.dmx", metadata={"k": "v"})
    assert r.tensors == len(tensors)
    # The archive save_file writes is the one `dmx compress` writes for safetensors' file.
    assert (d / "py" / "model.dmx").read_bytes() == (d / "model.dmx").read_bytes()
    want = st_load(str(d / "model.safetensors"))
    got = dmx.torch.load_file(d / "model.dmx")
    assert list(got) == list(dmx.safe_open(d / "model.dmx").offset_keys())
    assert set(got) == set(want)
    for k in want:
        assert same(got[k], want[k]), k
    # Interop: dmx decompress gives a file safetensors reads back identically.
    dmx.decompress(d / "py" / "model.dmx", d / "back.safetensors")
    back = st_load(str(d / "back.safetensors"))
    for k in tensors:
        assert same(back[k], tensors[k]), k


def test_loaded_tensors_are_writable_and_own_memory(archive):
    out = dmx.torch.load_file(archive)
    for name, t in out.items():
        assert t.is_contiguous()
        assert t.untyped_storage().nbytes() == t.nelement() * t.element_size(), name
    t = out["layers.0.norm.weight"]
    t += 1  # writable
    assert torch.all(t == 2)


def test_load_file_reads_plain_safetensors_too(model):
    want = st_load(str(model))
    got = dmx.torch.load_file(model)
    assert all(same(got[k], want[k]) for k in want)


def test_save_file_refuses_shared_and_non_contiguous(tmp_path):
    w = torch.randn(8, 8)
    with pytest.raises(dmx.UsageError, match="share memory"):
        dmx.torch.save_file({"a": w, "b": w}, tmp_path / "x.dmx")
    with pytest.raises(dmx.UsageError, match="not contiguous"):
        dmx.torch.save_file({"a": w.t()}, tmp_path / "x.dmx")
    with pytest.raises(ValueError):
        dmx.torch.save_file({"a": w}, tmp_path / "x.dmx", metadata={"k": 1})
    assert not (tmp_path / "x.dmx").exists()


def test_save_file_replaces_like_safetensors_unless_force_false(tmp_path):
    p = tmp_path / "x.dmx"
    dmx.torch.save_file({"a": torch.zeros(3)}, p)
    dmx.torch.save_file({"a": torch.ones(3)}, p)
    assert torch.equal(dmx.torch.load_file(p)["a"], torch.ones(3))
    with pytest.raises(FileExistsError):
        dmx.torch.save_file({"a": torch.ones(3)}, p, force=False)


def test_save_file_lossy_modes(tmp_path):
    t = {"w": torch.randn(64, 64, dtype=torch.float32)}
    r = dmx.torch.save_file(t, tmp_path / "l.dmx", mode="bfp", mantissa_bits=6)
    assert r.lossy is True
    got = dmx.torch.load_file(tmp_path / "l.dmx")["w"]
    assert got.dtype == torch.float32 and got.shape == (64, 64)
    assert torch.linalg.norm(got - t["w"]) / torch.linalg.norm(t["w"]) < 0.1


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        self.norm = torch.nn.LayerNorm(4)


def test_save_model_load_model_with_tied_weights(tmp_path):
    m = Tied()
    dmx.torch.save_model(m, tmp_path / "m.dmx")
    with dmx.safe_open(tmp_path / "m.dmx") as f:
        meta = f.metadata()
        assert len([k for k in f.keys() if k.endswith(".weight") and "norm" not in k]) == 1
    assert meta in ({"head.weight": "emb.weight"}, {"emb.weight": "head.weight"})
    m2 = Tied()
    missing, unexpected = dmx.torch.load_model(m2, tmp_path / "m.dmx")
    assert missing == [] and unexpected == []
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    with pytest.raises(RuntimeError, match="missing"):
        dmx.torch.load_model(torch.nn.Linear(4, 4), tmp_path / "m.dmx")

"""save_checkpoint / load_checkpoint and save_state / load_state: exact training states."""

from __future__ import annotations

import collections
import math
import pathlib
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmx
import dmx.torch as dt
from dmx.checkpoint import decode, encode


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.fc = torch.nn.Linear(16, 32)
        self.bn = torch.nn.BatchNorm1d(32)
        self.out = torch.nn.Linear(32, 50, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(torch.relu(self.fc(self.emb(x)))) @ self.fc.weight)


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched=None, steps: int = 3) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 50, (8,), generator=g)
        loss = model(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def same(a, b, path="") -> None:
    """Equal values of equal types, tensors bit for bit with the same dtype."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(bits(a), bits(b)), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}.{i}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def setup(opt_kind: str = "adamw"):
    torch.manual_seed(0)
    model = Net()
    if opt_kind == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    return model, opt, sched


@pytest.mark.parametrize("opt_kind", ["adamw", "sgd"])
def test_model_optimizer_scheduler_exact(tmp_path: pathlib.Path, opt_kind: str) -> None:
    model, opt, sched = setup(opt_kind)
    train(model, opt, sched)
    extra = {"epoch": 3, "best": 0.125, "name": "run", "tags": ("a", 1)}
    path = tmp_path / "ckpt.dmx"
    dt.save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, extra=extra)
    # Segments are named by component.
    names = set(dmx.safe_open(path, "pt").keys())
    assert "model.fc.weight" in names
    if opt_kind == "adamw":
        assert {"optim.state.0.exp_avg", "optim.state.0.exp_avg_sq", "optim.state.0.step"} <= names
    else:
        assert "optim.state.0.momentum_buffer" in names
    model2, opt2, sched2 = setup(opt_kind)
    got = dt.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    same(extra, got)
    same(model.state_dict(), model2.state_dict())
    same(opt.state_dict(), opt2.state_dict())
    same(sched.state_dict(), sched2.state_dict())
    # Tied weights stay tied, and training continues identically.
    assert model2.out.weight is model2.emb.weight
    torch.manual_seed(5)
    train(model, opt, sched)
    torch.manual_seed(5)
    train(model2, opt2, sched2)
    same(model.state_dict(), model2.state_dict())


def test_rng_states_restored(tmp_path: pathlib.Path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    path = tmp_path / "rng.dmx"
    dt.save_checkpoint(path, extra=None)
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(10)
    dt.load_checkpoint(path)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[:2] == got[:2] and torch.equal(want[2], got[2])


def test_lossy_mode_keeps_counters(tmp_path: pathlib.Path) -> None:
    model, opt, sched = setup()
    train(model, opt, sched)
    path = tmp_path / "q.dmx"
    dt.save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, mode="int16")
    model2, opt2, sched2 = setup()
    dt.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    a, b = opt.state_dict(), opt2.state_dict()
    for i in a["state"]:
        assert torch.equal(a["state"][i]["step"], b["state"][i]["step"])
    same(a["param_groups"], b["param_groups"])
    w, w2 = model.fc.weight.detach(), model2.fc.weight.detach()
    assert (w - w2).abs().max() <= w.abs().max() / 16000


def test_unknown_objects_refused_with_path(tmp_path: pathlib.Path) -> None:
    class Thing:
        pass

    with pytest.raises(dmx.UsageError, match=r"extra\.cfg\.1.*Thing"):
        dt.save_checkpoint(tmp_path / "x.dmx", extra={"cfg": [1, Thing()]})
    with pytest.raises(dmx.UsageError, match="defaultdict"):
        dt.save_state(tmp_path / "x.dmx", collections.defaultdict(int))
    assert not (tmp_path / "x.dmx").exists()


def test_save_state_plain_values_and_safetensors(tmp_path: pathlib.Path) -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    obj = collections.OrderedDict(
        a=t, b=t, view=t[:, 1], p=torch.nn.Parameter(torch.ones(2)),
        meta=(torch.float16, torch.device("cpu"), torch.Size([2, 3]), b"\x00\xff", None),
        nums={1: 2**70, (1, 2): -0.0, 2.5: float("inf"), "c": complex(1, -2)},
        s={1, 2}, np=(np.float32(1.5), np.arange(4, dtype=np.uint16), np.int64(-3)),
        empty=torch.empty(0, 5), scalar=torch.tensor(7, dtype=torch.int64),
    )
    path = tmp_path / "state.dmx"
    dt.save_state(path, obj)
    got = dt.load_state(path)
    same(obj, got)
    assert got["a"] is got["b"]
    assert isinstance(got["p"], torch.nn.Parameter) and got["p"].requires_grad


# Hypothesis: nested plain values survive exactly.
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
    st.binary(), st.complex_numbers(allow_nan=False),
)
keys = st.one_of(st.text(), st.integers(), st.booleans(), st.tuples(st.integers(), st.text()))
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.tuples(kids, kids),
        st.dictionaries(keys, kids, max_size=4),
        st.builds(lambda d: collections.OrderedDict(d), st.dictionaries(st.text(), kids, max_size=3)),
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_nested_values_round_trip(value) -> None:
    tensors, meta = encode({"v": value})
    assert tensors == {}
    same({"v": value}, decode(tensors, meta, "cpu"))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=20),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]))
def test_tensors_in_nested_values_round_trip(tmp_path_factory, vals, dtype) -> None:
    path = tmp_path_factory.mktemp("h") / "s.dmx"
    obj = {"x": [torch.tensor(vals).to(dtype), {"y": (torch.tensor(vals, dtype=torch.float64),)}]}
    dt.save_state(path, obj)
    same(obj, dt.load_state(path))

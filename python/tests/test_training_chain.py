"""CheckpointChain: in-loop chains of full training states; chain_prune."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import dmx
import dmx.torch as dt
from dmx.torch import CheckpointChain


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def equal_states(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(bits(a[k]), bits(b[k])) for k in a)


def make(seed: int = 0, width: int = 64):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def step(model, opt, sched, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, model[0].in_features, generator=g)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


@pytest.mark.parametrize("background", [False, True])
def test_append_and_load_every_step_exactly(tmp_path: pathlib.Path, background: bool) -> None:
    model, opt, sched = make()
    saved = {}
    with CheckpointChain(tmp_path / "chain") as chain:
        for s in range(6):
            step(model, opt, sched, s)
            chain.append(s * 10, model=model, optimizer=opt, scheduler=sched,
                         extra={"step": s * 10}, background=background)
            # The snapshot is taken at append: later training must not leak into it.
            saved[s * 10] = ({k: v.clone() for k, v in model.state_dict().items()},
                             json.dumps(opt.state_dict()["param_groups"]),
                             sched.state_dict())
    assert chain.steps() == [0, 10, 20, 30, 40, 50]
    info = chain.info().to_dict()
    assert [e["kind"] for e in info["entries"]][:2] == ["anchor", "delta"]
    assert chain.verify().ok
    for s, (sd, groups, sch) in saved.items():
        m2, o2, s2 = make(seed=99)
        extra = chain.load(s, model=m2, optimizer=o2, scheduler=s2)
        assert extra == {"step": s}
        assert equal_states(sd, m2.state_dict())
        assert json.dumps(o2.state_dict()["param_groups"]) == groups
        assert s2.state_dict() == sch
    # The last state: optimizer moments too.
    m2, o2, s2 = make(seed=99)
    chain.load(model=m2, optimizer=o2, scheduler=s2)
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(v, o2.state_dict()["state"][i][k])
    # The folder is an ordinary chain.
    assert dmx.verify(tmp_path / "chain").ok


def test_background_error_raised_at_next_call(tmp_path: pathlib.Path) -> None:
    model, opt, sched = make()
    chain = CheckpointChain(tmp_path / "chain")
    chain.append(1, model=model)
    # Make the next write fail: the chain folder's manifest becomes unreadable garbage.
    chain.append(2, model=model, background=True)
    chain.wait()
    (tmp_path / "chain" / "manifest.json").write_text("{not json")
    chain._manifest = lambda: {"precision": "lossless", "entries": []}  # type: ignore
    chain.append(3, model=model, background=True)
    with pytest.raises(dmx.DmxError):
        chain.wait()
    chain.wait()  # the error is raised once


def test_steps_must_increase(tmp_path: pathlib.Path) -> None:
    model, _, _ = make()
    chain = CheckpointChain(tmp_path / "c")
    chain.append(5, model=model)
    with pytest.raises(dmx.UsageError, match="not after"):
        chain.append(5, model=model)
    with pytest.raises(dmx.UsageError, match="precision"):
        CheckpointChain(tmp_path / "c", precision="int16")


def test_int16_chain_loads_close(tmp_path: pathlib.Path) -> None:
    model, opt, sched = make()
    with CheckpointChain(tmp_path / "q", precision="int16") as chain:
        for s in range(3):
            step(model, opt, sched, s)
            chain.append(s, model=model, optimizer=opt, scheduler=sched)
    m2, o2, s2 = make(seed=5)
    chain.load(2, model=m2, optimizer=o2, scheduler=s2)
    for k, v in model.state_dict().items():
        assert (v - m2.state_dict()[k]).abs().max() <= v.abs().max() / 30000 + 1e-12
    assert o2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert chain.verify().ok


CHILD = r"""
import sys, torch
sys.path.insert(0, {tests!r})
from test_training_chain import make, step
from dmx.torch import CheckpointChain
model, opt, sched = make(width={width})
chain = CheckpointChain({dir!r})
for s in range(4):
    step(model, opt, sched, s)
    if s == 3:
        print("appending", flush=True)
    chain.append(s, model=model, optimizer=opt, scheduler=sched)
    print("done", s, flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_killed_writer_leaves_a_valid_chain(tmp_path: pathlib.Path, delay: float) -> None:
    d = tmp_path / "chain"
    width = 300
    code = CHILD.format(tests=str(pathlib.Path(__file__).parent), width=width, dir=str(d))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("appending"):
            break
    time.sleep(delay)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert dmx.chain_verify(d).ok
    chain = CheckpointChain(d)
    steps = chain.steps()
    assert steps[:3] == [0, 1, 2] and len(steps) in (3, 4)
    model, opt, sched = make(width=width)
    for s in steps:
        step(model, opt, sched, s)
        m2, o2, s2 = make(seed=7, width=width)
        chain.load(s, model=m2, optimizer=o2, scheduler=s2)
        assert equal_states(model.state_dict(), m2.state_dict())
    # No staging leftovers once the chain is opened again, and appending goes on.
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".dmx-staging-")]
    chain.append(10, model=model)
    assert chain.verify().ok


def test_prune_reanchors_and_keeps_unrelated_files(tmp_path: pathlib.Path) -> None:
    model, opt, sched = make()
    d = tmp_path / "chain"
    states = {}
    with CheckpointChain(d) as chain:
        for s in range(6):
            step(model, opt, sched, s)
            chain.append(s, model=model, optimizer=opt)
            states[s] = {k: v.clone() for k, v in model.state_dict().items()}
    (d / "notes.txt").write_text("mine")
    (d / "sub").mkdir()
    before = [e["kind"] for e in chain.info().to_dict()["entries"]]
    assert before[3] == "delta"
    r = chain.prune(keep=3).to_dict()  # steps 3, 4, 5; 3 was a delta
    assert r["entries"] == 3 and [k["old_index"] for k in r["kept"]] == [3, 4, 5]
    assert r["kept"][0]["reanchored"] and r["kept"][0]["kind"] == "anchor"
    assert chain.steps() == [3, 4, 5]
    assert (d / "notes.txt").read_text() == "mine" and (d / "sub").is_dir()
    assert sorted(n for n in os.listdir(d) if n.endswith((".dmx", ".dmxd"))) == sorted(
        e["file"] for e in chain.info().to_dict()["entries"])
    assert chain.verify().ok
    for s in (3, 4, 5):
        m2, _, _ = make(seed=3)
        chain.load(s, model=m2)
        assert equal_states(states[s], m2.state_dict())
    # Appending continues from the pruned chain.
    chain.append(6, model=model)
    assert chain.verify().ok


def test_failed_prune_deletes_nothing(tmp_path: pathlib.Path) -> None:
    model, opt, sched = make()
    d = tmp_path / "chain"
    with CheckpointChain(d) as chain:
        for s in range(4):
            step(model, opt, sched, s)
            chain.append(s, model=model, optimizer=opt)
    files = sorted(os.listdir(d))
    manifest = (d / "manifest.json").read_bytes()
    entries = chain.info().to_dict()["entries"]
    # Damage entry 1, which re-anchoring entry 2 needs.
    victim = d / entries[1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(dmx.CorruptArchiveError):
        dmx.chain_prune(d, [2, 3])
    assert sorted(os.listdir(d)) == files
    assert (d / "manifest.json").read_bytes() == manifest


def test_prune_quantized_keeps_dependencies(tmp_path: pathlib.Path) -> None:
    model, opt, sched = make()
    d = tmp_path / "q"
    with CheckpointChain(d, precision="int32") as chain:
        for s in range(4):
            step(model, opt, sched, s)
            chain.append(s, model=model)
    kinds = [e["kind"] for e in chain.info().to_dict()["entries"]]
    r = chain.prune(keep=[3]).to_dict()
    first_anchor = max(i for i, k in enumerate(kinds[:4]) if k == "anchor")
    assert [k["old_index"] for k in r["kept"]] == list(range(first_anchor, 4))
    assert not any(k["reanchored"] for k in r["kept"])
    assert chain.verify().ok
    with pytest.raises(dmx.UsageError):
        dmx.chain_prune(d, [])

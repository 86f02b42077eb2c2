"""dmx.dcp: DCP saves by two gloo processes on the CPU, loaded by one (resharding), deltas
against a base checkpoint, damaged files and metadata refused."""

from __future__ import annotations

import json
import pathlib
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import dmx
from dmx.dcp import METADATA_FILE, DmxReader, DmxWriter

dist = pytest.importorskip("torch.distributed")
dcp = pytest.importorskip("torch.distributed.checkpoint")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROWS = 48


def full_state(step: int) -> dict[str, torch.Tensor]:
    """The unsharded weights and AdamW moments of a small model at ``step`` (deterministic;
    later steps move the weights a little, as training does)."""
    g = torch.Generator().manual_seed(0)
    w = {
        "model.embed.weight": torch.randn(ROWS, 32, generator=g),
        "model.block.attn.weight": torch.randn(ROWS, 48, generator=g).to(torch.bfloat16),
        "model.block.norm.weight": torch.ones(ROWS),
    }
    out = {}
    for name, t in w.items():
        drift = torch.randn(t.shape, generator=g) * 1e-3 * step
        out[name] = (t.float() + drift).to(t.dtype)
        short = name.removeprefix("model.")
        out[f"optim.state.{short}.exp_avg"] = torch.randn(t.shape, generator=g) * 1e-2 * step
        out[f"optim.state.{short}.exp_avg_sq"] = torch.rand(t.shape, generator=g) * 1e-4 * step
    return out


def sharded(step: int, mesh) -> dict:
    """The state of ``step`` as DTensors sharded by rows over ``mesh``, plus plain values."""
    from torch.distributed.tensor import Shard, distribute_tensor

    sd = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in full_state(step).items()}
    return {"state": sd, "meta": {"step": step, "lr": [1e-3, 0.9], "tag": "run"}}


def _rank_main(rank: int, world: int, init: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        root = pathlib.Path(out)
        dcp.save(sharded(1, mesh), storage_writer=DmxWriter(root / "step1"))
        dcp.save(sharded(2, mesh), storage_writer=DmxWriter(root / "step2", base=root / "step1"))
        # resharding the other way: a checkpoint saved by one process, loaded as shards
        sd = sharded(0, mesh)
        dcp.load(sd, storage_reader=DmxReader(root / "single"))
        for k, v in full_state(3).items():
            local = sd["state"][k].to_local()
            rows = ROWS // world
            assert torch.equal(local, v[rank * rows:(rank + 1) * rows]), k
        assert sd["meta"]["step"] == 3
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Checkpoints of steps 1 (full) and 2 (deltas from 1), saved by two gloo ranks, which
    also load (as shards) a checkpoint of step 3 saved by this single process."""
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("dcp")
    single = {"state": full_state(3), "meta": {"step": 3, "lr": [1e-3, 0.9], "tag": "run"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(single, storage_writer=DmxWriter(root / "single"))
    init = f"file://{root / 'pg'}"
    mp.spawn(_rank_main, args=(2, init, str(root)), nprocs=2, join=True)
    return root


@contextmanager
def fails_with(cls: type, match: str | None = None) -> Iterator[None]:
    """The block raises ``cls`` (matching ``match``), directly or (as DCP reports a rank's
    failure) inside a ``CheckpointException``."""
    with pytest.raises(BaseException) as info:
        yield
    errors = [info.value] + [e for e, _ in getattr(info.value, "failures", {}).values()]
    assert any(
        isinstance(e, cls) and (match is None or re.search(match, str(e))) for e in errors
    ), repr(info.value)


def empty_state() -> dict:
    return {
        "state": {k: torch.zeros_like(v) for k, v in full_state(0).items()},
        "meta": {"step": 0, "lr": [0.0, 0.0], "tag": ""},
    }


def load(path: pathlib.Path) -> dict:
    sd = empty_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming ... a single process"
        dcp.load(sd, storage_reader=DmxReader(path))
    return sd


def check_equal(sd: dict, step: int) -> None:
    want = full_state(step)
    assert sd["state"].keys() == want.keys()
    for k, v in want.items():
        assert sd["state"][k].dtype == v.dtype, k
        assert torch.equal(sd["state"][k], v), k
    assert sd["meta"] == {"step": step, "lr": [1e-3, 0.9], "tag": "run"}


def test_two_ranks_saved_one_loads(saved: pathlib.Path) -> None:
    files = sorted(p.name for p in (saved / "step1").iterdir())
    assert files == [METADATA_FILE, "__0_0.dmx", "__1_0.dmx"]
    doc = json.loads((saved / "step1" / METADATA_FILE).read_text())
    assert {f["kind"] for f in doc["files"].values()} == {"dmx"}
    # each rank holds its own rows of every tensor
    assert len(doc["state_dict_metadata"]["state.model.embed.weight"]["chunks"]) == 2
    check_equal(load(saved / "step1"), 1)


def test_delta_from_base(saved: pathlib.Path) -> None:
    doc = json.loads((saved / "step2" / METADATA_FILE).read_text())
    assert doc["base"] == "../step1"
    assert {f["kind"] for f in doc["files"].values()} == {"delta"}
    assert dmx.delta_info(saved / "step2" / "__0_0.dmx").to_dict()
    check_equal(load(saved / "step2"), 2)


def test_delta_needs_its_base(saved: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import shutil

    shutil.copytree(saved / "step2", tmp_path / "step2")
    with fails_with(dmx.UsageError, match="not a checkpoint written by"):
        load(tmp_path / "step2")
    # another checkpoint in the base's place is refused, never used
    shutil.copytree(saved / "step2", tmp_path / "step1")
    with fails_with(dmx.DmxError):
        load(tmp_path / "step2")


def test_damaged_rank_file_detected(saved: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import shutil

    ck = tmp_path / "step1"
    shutil.copytree(saved / "step1", ck)
    f = ck / "__1_0.dmx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    with fails_with(dmx.VerificationError, match="recorded SHA-256"):
        load(ck)
    # with the recorded hash forged to match, the archive's own checksums still refuse it
    doc = json.loads((ck / METADATA_FILE).read_text())
    from dmx.dcp import _sha256

    doc["files"]["__1_0.dmx"]["sha256"] = _sha256(f)[0]
    (ck / METADATA_FILE).write_text(json.dumps(doc))
    with fails_with(dmx.CorruptArchiveError):
        load(ck)


def test_unknown_metadata_refused(saved: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import shutil

    ck = tmp_path / "step1"
    shutil.copytree(saved / "step1", ck)
    doc = json.loads((ck / METADATA_FILE).read_text())
    for edit in (
        lambda d: d.update(extra=1),
        lambda d: d["state_dict_metadata"]["meta.tag"].update(type="pickle"),
        lambda d: d["items"][0].update(file="../etc"),
        lambda d: d.update(format_version=99),
    ):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        (ck / METADATA_FILE).write_text(json.dumps(bad))
        with pytest.raises(dmx.CorruptArchiveError):
            DmxReader(ck).read_metadata()
        with fails_with(BaseException, "DCP metadata"):  # DCP wraps the reader's error
            load(ck)
    (ck / METADATA_FILE).write_bytes(b"\x80\x04pickle")
    with pytest.raises(dmx.CorruptArchiveError):
        DmxReader(ck).read_metadata()


def test_single_process_odd_values(tmp_path: pathlib.Path) -> None:
    """No process group; dtypes safetensors lacks, scalars, empty tensors, nested values."""
    sd = {
        "c": torch.randn(5, dtype=torch.complex128),
        "b": torch.rand(7) > 0.5,
        "s": torch.tensor(3.5, dtype=torch.float64),
        "e": torch.empty(0, 4),
        "h": torch.randn(6, 6).half().t(),  # not contiguous
        "nested": {"list": [torch.arange(4), {"x": 1}], "none": None},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(sd, storage_writer=DmxWriter(tmp_path / "ck", threads=1))
        out = {
            "c": torch.zeros(5, dtype=torch.complex128), "b": torch.zeros(7, dtype=torch.bool),
            "s": torch.tensor(0.0, dtype=torch.float64), "e": torch.ones(0, 4),
            "h": torch.zeros(6, 6).half(),
            "nested": {"list": [torch.zeros(4, dtype=torch.int64), {"x": 0}], "none": 1},
        }
        dcp.load(out, storage_reader=DmxReader(tmp_path / "ck"))
    for k in ("c", "b", "s", "e", "h"):
        assert out[k].dtype == sd[k].dtype and torch.equal(out[k], sd[k]), k
    assert torch.equal(out["nested"]["list"][0], torch.arange(4))
    assert out["nested"]["list"][1] == {"x": 1} and out["nested"]["none"] is None
    assert DmxReader.validate_checkpoint_id(tmp_path / "ck")
    assert not DmxReader.validate_checkpoint_id(tmp_path)


def test_overwrite_false_and_bad_options(tmp_path: pathlib.Path) -> None:
    sd = {"w": torch.randn(8, 8)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(sd, storage_writer=DmxWriter(tmp_path / "ck"))
        with fails_with(dmx.UsageError, match="overwrite=False"):
            dcp.save(sd, storage_writer=DmxWriter(tmp_path / "ck", overwrite=False))
        with fails_with(dmx.UsageError, match="its own base"):
            dcp.save(sd, storage_writer=DmxWriter(tmp_path / "ck", base=tmp_path / "ck"))
    with pytest.raises(TypeError, match="bogus"):
        DmxWriter(tmp_path / "x", bogus=1)


def test_rank_files_are_plain_archives(saved: pathlib.Path) -> None:
    for f in ("__0_0.dmx", "__1_0.dmx"):
        assert dmx.verify(saved / "step1" / f).ok
    with dmx.safe_open(saved / "step1" / "__1_0.dmx") as f:
        assert "state.model.embed.weight@24,0" in f.keys()  # rank 1's rows start at 24
        want = full_state(1)["model.embed.weight"][24:]
        assert torch.equal(f.get_tensor("state.model.embed.weight@24,0"), want)


def test_lossy_mode_passes_through(tmp_path: pathlib.Path) -> None:
    w = torch.randn(256, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"w": w}, storage_writer=DmxWriter(tmp_path / "ck", mode="int16"))
        out = {"w": torch.zeros_like(w)}
        dcp.load(out, storage_reader=DmxReader(tmp_path / "ck"))
    assert not torch.equal(out["w"], w)
    assert torch.allclose(out["w"], w, atol=w.abs().max().item() / 2**14)

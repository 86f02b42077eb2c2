"""The CLI's operations as functions: results, reports and their JSON."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import dmx

from conftest import model_tensors


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs the pip-installed ``dmx`` command (``python -m dmx``)."""
    return subprocess.run(
        [sys.executable, "-m", "dmx", *args], capture_output=True, text=True, check=False
    )


def test_compress_decompress_round_trip(tmp_path, model):
    r = dmx.compress(model, tmp_path / "m.dmx", threads=2)
    assert isinstance(r, dmx.CompressReport)
    assert r.input_bytes == model.stat().st_size
    assert r.output_bytes == (tmp_path / "m.dmx").stat().st_size
    assert r.tensors == len(model_tensors()) and r.lossy is False
    assert r.stats.files[0].path == "model.safetensors"
    dmx.decompress(tmp_path / "m.dmx", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()


def test_reports_match_the_cli_json(tmp_path, model, archive):
    mine = dmx.info(archive).to_dict()
    out = cli("info", "--json", str(archive))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == mine
    v = dmx.verify(archive, model)
    assert v.ok and v.files[0].bit_exact is True
    out = cli("verify", "--json", str(model), str(archive))
    assert out.returncode == 0
    assert json.loads(out.stdout) == v.to_dict()
    c = dmx.compress(model, tmp_path / "again.dmx").to_dict()
    out = cli("compress", "--json", str(model), str(tmp_path / "cli.dmx"))
    theirs = json.loads(out.stdout)
    assert set(theirs) == set(c)
    assert (tmp_path / "cli.dmx").read_bytes() == (tmp_path / "again.dmx").read_bytes()


def test_the_dmx_command_exit_codes(tmp_path, archive):
    assert cli("--version").returncode == 0
    bad = cli("info", str(tmp_path / "missing.dmx"))
    assert bad.returncode == 2 and "dmx: error:" in bad.stderr
    corrupt = tmp_path / "c.dmx"
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert cli("verify", str(corrupt)).returncode == 1


def test_report_objects(archive):
    r = dmx.info(archive)
    assert "files" in r and r["tensors"] == r.tensors
    d = r.to_dict()
    d["tensors"] = -1
    assert r.tensors != -1, "to_dict returns a copy"
    with pytest.raises(AttributeError):
        r.no_such_field
    with pytest.raises(AttributeError):
        r.tensors = 3
    assert json.loads(r.to_json()) == r.to_dict()
    assert "InfoReport(" in repr(r)


def test_extract(tmp_path, archive):
    dmx.extract(archive, tmp_path / "part.safetensors", ["step", "mask"])
    got = load_file(str(tmp_path / "part.safetensors"))
    want = model_tensors()
    assert set(got) == {"step", "mask"}
    assert torch.equal(got["mask"], want["mask"]) and torch.equal(got["step"], want["step"])


def test_lossy_compress_options(tmp_path, model):
    r = dmx.compress(
        model, tmp_path / "l.dmx", mode="bfp", mantissa_bits=5, keep_lossless=["*norm*"]
    )
    assert r.lossy is True
    v = dmx.verify(tmp_path / "l.dmx", model)
    assert v.ok
    r = dmx.compress(model, tmp_path / "c.dmx", cast="bf16")
    assert r.lossy is True


def test_delta_and_diff(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    ta = model_tensors(0)
    tb = {k: (v + 1 if v.is_floating_point() else v) for k, v in ta.items()}
    tb["layers.0.norm.weight"] = ta["layers.0.norm.weight"]
    save_file(ta, str(a))
    save_file(tb, str(b))
    r = dmx.delta_compress(a, b, tmp_path / "d.dmxd")
    assert isinstance(r, dmx.DeltaReport) and r.precision == "lossless"
    info = dmx.delta_info(tmp_path / "d.dmxd")
    assert info.lossless is True
    dmx.delta_reconstruct(a, tmp_path / "d.dmxd", tmp_path / "b2.safetensors")
    assert (tmp_path / "b2.safetensors").read_bytes() == b.read_bytes()
    v = dmx.verify(tmp_path / "d.dmxd", b, base=a)
    assert v.ok
    d = dmx.diff(a, b, top=2)
    assert d.identical is False and len(d.top_tensors) == 2
    assert d.to_dict()["totals"]["tensors_a"] == len(ta)


def test_chains(tmp_path):
    ckpts = []
    t = model_tensors(1)
    for i in range(3):
        p = tmp_path / f"ckpt-{i}.safetensors"
        t = {k: (v * 1.01 if v.is_floating_point() else v) for k, v in t.items()}
        save_file(t, str(p))
        ckpts.append(p)
    r = dmx.chain_compress(ckpts[:2], tmp_path / "chain")
    assert isinstance(r, dmx.ChainReport)
    dmx.chain_append(tmp_path / "chain", ckpts[2:])
    info = dmx.chain_info(tmp_path / "chain")
    assert len(info.entries) == 3
    assert dmx.chain_verify(tmp_path / "chain").ok
    assert dmx.verify(tmp_path / "chain").ok
    rr = dmx.chain_reconstruct(tmp_path / "chain", tmp_path / "out", [1])
    assert rr.ok
    assert (tmp_path / "out" / "ckpt-1.safetensors").read_bytes() == ckpts[1].read_bytes()


def test_progress_callback(tmp_path, model):
    seen = []
    dmx.compress(model, tmp_path / "p.dmx", progress=lambda *a: seen.append(a))
    assert seen, "the callback was called"
    phase, done, total = seen[-1]
    assert isinstance(phase, str) and done == total and total > 0


def test_pathlike_and_str_paths(tmp_path, model):
    dmx.compress(str(model), os.fspath(tmp_path / "s.dmx"))
    dmx.compress(pathlib.Path(model), tmp_path / "p.dmx")
    assert (tmp_path / "s.dmx").read_bytes() == (tmp_path / "p.dmx").read_bytes()

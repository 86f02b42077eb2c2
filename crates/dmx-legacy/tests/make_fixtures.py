#!/usr/bin/env python3
"""Writes the dmx-legacy test fixtures with the real old tool (dmx-compress 0.4.0 and 1.2.0).

Usage: make_fixtures.py OLD04_PYTHON OLD12_PYTHON [CORPUS_DIR]
  OLD04_PYTHON / OLD12_PYTHON: pythons of venvs holding dmx-compress==0.4.0 / ==1.2.0 (with
  torch, numpy, safetensors, zstandard, brotli, soundfile).
  CORPUS_DIR: folder with step_00300/400/500.safetensors (default /work/shared/corpus/gpt/run).

Small models are cut from real corpus weights; every file is written by the old tool's CLI
(`python -m dmx_cli ...`, on CPU), and the old tool's own decompress / delta-reconstruct /
chain-reconstruct outputs are kept as expected/*.safetensors. The lossless DMXL delta cannot be
written by 1.2.0 (its sdist lacks dmx.delta_lossless), so `l12_delta_lossless.dmxd` and its
expected output are built here from the byte layout of reference.md §2.5 with zstandard, and
the expected output by wrapping addition in torch.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def cut(path, bf16=False, f16=False):
    full = load_file(path)
    t = {
        "blocks.0.attn_proj.weight": full["blocks.0.attn_proj.weight"][:64, :64].clone(),
        "blocks.1.attn_proj.weight": full["blocks.1.attn_proj.weight"][:64, :64].clone(),
        "blocks.0.ln1.weight": full["blocks.0.ln1.weight"][:100].clone(),
        "blocks.0.mlp_fc.bias": full["blocks.0.mlp_fc.bias"][:37].clone(),
        "zeros": torch.zeros(16),
        "scalar": full["blocks.0.ln2.bias"][3].clone(),
    }
    if f16:
        t = {k: v.half() for k, v in t.items()}
    if bf16:
        t = {k: v.bfloat16() for k, v in t.items()}
    if not (f16 or bf16):
        t["step"] = torch.arange(10, dtype=torch.int64)
        t["mask"] = torch.tensor([True, False, True])
    return t


def big(path):
    """A model with one tensor of >= 32 KiB as int16, so `--entropy lpc` uses FLAC."""
    full = load_file(path)
    return {"blocks.0.mlp_fc.weight": full["blocks.0.mlp_fc.weight"][:96, :192].clone(),
            "blocks.0.ln1.bias": full["blocks.0.ln1.bias"][:50].clone()}


def run(py, *args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([py, "-m", "dmx_cli", *args], capture_output=True, text=True, env=env, cwd=HERE)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def dmxl(base, target, out, expected):
    import zstandard
    codes = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
    ints = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}
    payload = bytearray(struct.pack("<I", len(target)))
    result = {}
    for k in sorted(target):
        b, t = base[k].contiguous(), target[k].contiguous()
        it = ints[t.dtype]
        d = (t.view(it).to(torch.int64) - b.view(it).to(torch.int64))
        width = 2 if it == torch.int16 else 4
        d = (d % (1 << (8 * width))).numpy().astype("<u%d" % width).tobytes()
        rec = bytearray(b"DMXL" + bytes([1, codes[t.dtype]]) + struct.pack("<H", t.dim()))
        rec += b"".join(struct.pack("<I", s) for s in t.shape)
        rec += bytes([width])
        for p in range(width):
            z = zstandard.ZstdCompressor(level=19).compress(d[p::width])
            rec += struct.pack("<I", len(z)) + z
        kb = k.encode()
        payload += struct.pack("<I", len(kb)) + kb + struct.pack("<I", len(rec)) + rec
        result[k] = t
    prov = json.dumps({"dmx_version": "1.0", "source_format": "torch.float32", "parent": None,
                       "delta_base": "sha256:" + "0" * 64}, separators=(",", ":")).encode()
    with open(out, "wb") as f:
        f.write(b"DMX\x00" + struct.pack("<I", len(prov)) + prov + payload)
    save_file(result, expected)


def main():
    py04, py12 = sys.argv[1], sys.argv[2]
    corpus = sys.argv[3] if len(sys.argv) > 3 else "/work/shared/corpus/gpt/run"
    shutil.rmtree(HERE, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "expected"))
    steps = [os.path.join(corpus, f"step_00{n}00.safetensors") for n in (3, 4, 5)]
    save_file(cut(steps[0]), os.path.join(HERE, "f32.safetensors"))
    save_file(cut(steps[0], f16=True), os.path.join(HERE, "f16.safetensors"))
    save_file(cut(steps[0], bf16=True), os.path.join(HERE, "bf16.safetensors"))
    save_file(big(steps[0]), os.path.join(HERE, "big.safetensors"))
    for i, s in enumerate(steps):
        m = cut(s)
        del m["step"], m["mask"]
        save_file(m, os.path.join(HERE, f"ckpt{i}.safetensors"))
    for tag, py in (("v04", py04), ("v12", py12)):
        jobs = [(f"{tag}_f32_{m}", "f32", ["--mode", m]) for m in ("bfp", "int16", "int32", "auto")]
        jobs += [(f"{tag}_f16_{m}", "f16", ["--mode", m]) for m in ("bfp", "int16", "auto")]
        jobs += [(f"{tag}_bf16_bfp", "bf16", ["--mode", "bfp"])]
        if tag == "v04":
            jobs += [("v04_big_int16_lpc", "big", ["--mode", "int16", "--entropy", "lpc"]),
                     ("v04_f16_int16_lpc", "big16", ["--mode", "int16", "--entropy", "lpc"])]
            save_file({k: v.half() for k, v in big(steps[0]).items()}, os.path.join(HERE, "big16.safetensors"))
        else:
            jobs += [(f"v12_big_{e}", "big", ["--mode", "int16", "--entropy", e]) for e in ("flac", "brotli", "auto")]
            jobs += [("v12_big_bfp_flac", "big", ["--mode", "bfp", "--entropy", "flac"]),
                     ("v12_big_bfp_brotli", "big", ["--mode", "bfp", "--entropy", "brotli"]),
                     ("v12_big_transpose", "big", ["--mode", "transpose"])]
        for name, src, flags in jobs:
            run(py, "compress", f"{src}.safetensors", f"{name}.dmx", *flags)
            run(py, "decompress", f"{name}.dmx", f"expected/{name}.safetensors")
        lossy = [] if tag == "v04" else ["--lossy-quantized"]
        for prec in ("int16", "int32"):
            name = f"{tag}_delta_{prec}"
            run(py, "delta-compress", "ckpt0.safetensors", "ckpt1.safetensors", f"{name}.dmxd",
                "--precision", prec, *lossy)
            run(py, "delta-reconstruct", "ckpt0.safetensors", f"{name}.dmxd", f"expected/{name}.safetensors")
        chain = f"{tag}_chain"
        run(py, "chain-compress", "ckpt0.safetensors", "ckpt1.safetensors", "ckpt2.safetensors",
            "--output-dir", chain, "--max-delta-ratio", "0.9")
        run(py, "chain-reconstruct", chain, "--output-dir", f"expected/{chain}")
    dmxl(load_file(os.path.join(HERE, "ckpt0.safetensors")), load_file(os.path.join(HERE, "ckpt1.safetensors")),
         os.path.join(HERE, "l12_delta_lossless.dmxd"), os.path.join(HERE, "expected", "l12_delta_lossless.safetensors"))


if __name__ == "__main__":
    main()

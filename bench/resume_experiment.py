#!/usr/bin/env python3
"""Resume experiment: train a small byte-level GPT on the CPU, checkpoint every N steps
through dmx.torch.CheckpointChain, and resume K times from states restored from the chain,
against the same run without interruptions.

Runs (same seed, same data order, dropout on, AdamW + warmup/cosine LambdaLR):
  reference   uninterrupted; at every checkpoint step the state is also written with
              torch.save (sizes, times) and appended to a lossless chain (sync, timed)
  lossless    checkpoints appended in the background; K times the model, optimizer and
              scheduler are thrown away, rebuilt from scratch and loaded from the chain
  int16/int32 the same with quantized chains (sync appends)

Reports: whether the lossless run's loss curve and final weights are bit-identical to the
reference (SHA-256 of the final weights of both), the final loss difference of the
quantized runs, the chain's bytes against the sum of the torch.save files and ZipNN on
them, and the time added per checkpoint.

    python bench/resume_experiment.py [--steps 300] [--every 20] [--resumes 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import dmx
from dmx.torch import CheckpointChain


def load_text(max_bytes: int) -> torch.Tensor:
    files = sorted(glob.glob("/usr/share/perl/**/*.pm", recursive=True))
    buf = bytearray()
    for f in files:
        with open(f, "rb") as fh:
            buf += fh.read()
        if len(buf) >= max_bytes:
            break
    if len(buf) < 100_000:
        raise SystemExit("not enough text under /usr/share/perl")
    return torch.from_numpy(np.frombuffer(bytes(buf[:max_bytes]), dtype=np.uint8).astype(np.int64))


class Block(nn.Module):
    def __init__(self, d: int, h: int, p: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(p)
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, ctx: int, p: float = 0.1):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(256, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, p) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


class Run:
    """Model, optimizer and scheduler of one run, built from scratch."""

    def __init__(self, a: argparse.Namespace, init_seed: int):
        torch.manual_seed(init_seed)
        self.model = GPT(a.d, a.layers, a.heads, a.ctx)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                      {"params": rest, "weight_decay": 0.0}],
                                     lr=a.lr, betas=(0.9, 0.95))
        warm, total = a.steps // 10, a.steps

        def lam(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lam)

    def state(self) -> dict:
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched}


def batch(data: torch.Tensor, a: argparse.Namespace, step: int):
    g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
    ix = torch.randint(0, len(data) - a.ctx - 1, (a.batch,), generator=g)
    x = torch.stack([data[i:i + a.ctx] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + a.ctx] for i in ix])
    return x, y


def train_step(r: Run, data: torch.Tensor, a: argparse.Namespace, step: int) -> float:
    r.model.train()
    x, y = batch(data, a, step)
    loss = F.cross_entropy(r.model(x).view(-1, 256), y.view(-1))
    r.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(r.model.parameters(), 1.0)
    r.opt.step()
    r.sched.step()
    return loss.item()


@torch.no_grad()
def val_loss(r: Run, val: torch.Tensor, a: argparse.Namespace) -> float:
    r.model.eval()
    losses = []
    for i in range(8):
        x, y = batch(val, a, 10_000_000 + i)
        losses.append(F.cross_entropy(r.model(x).view(-1, 256), y.view(-1)).item())
    return sum(losses) / len(losses)


def weights_sha(r: Run) -> str:
    h = hashlib.sha256()
    for k, v in r.model.state_dict().items():
        h.update(k.encode())
        h.update(v.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train(a, data, val, chain_dir, precision, resume_at, background, torch_dir=None) -> dict:
    """One run; returns losses, timings, final weights hash and validation loss."""
    torch.manual_seed(a.seed)
    r = Run(a, a.seed)
    losses, t_append, t_save = [], [], []
    chain = CheckpointChain(chain_dir, precision=precision)
    step = 0
    t0 = time.perf_counter()
    while step < a.steps:
        losses.append(train_step(r, data, a, step))
        step += 1
        if step % a.every:
            continue
        t = time.perf_counter()
        chain.append(step, **r.state(), background=background)
        t_append.append(time.perf_counter() - t)
        if torch_dir is not None:
            t = time.perf_counter()
            torch.save({"model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                        "scheduler": r.sched.state_dict(), "rng": torch.get_rng_state()},
                       os.path.join(torch_dir, f"step_{step:06d}.pt"))
            t_save.append(time.perf_counter() - t)
        if step in resume_at:
            # Interruption: everything in memory is lost; rebuild and restore from the chain.
            torch.manual_seed(12345 + step)
            torch.rand(1000)  # the RNG state moves on, as in a new process
            r = Run(a, a.seed + 1000 + step)
            chain.load(step, **r.state())
    chain.wait()
    return {"losses": losses, "sha": weights_sha(r), "val": val_loss(r, val, a),
            "t_append": t_append, "t_save": t_save, "seconds": time.perf_counter() - t0,
            "chain_bytes": sum(e["stored_size"] for e in chain.info().to_dict()["entries"])}


def zipnn_bytes(paths: list[str]) -> tuple[int, bool] | None:
    """ZipNN (byte input, float32 byte grouping) on each file, padded to a multiple of 4
    bytes (ZipNN crashes on other lengths): total bytes, and whether every file came back."""
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    z = ZipNN(input_format="byte", bytearray_dtype="float32", threads=1)
    total, ok = 0, True
    for p in paths:
        raw = open(p, "rb").read()
        packed = z.compress(raw + bytes(-len(raw) % 4))
        total += len(packed)
        ok = ok and bytes(z.decompress(packed))[: len(raw)] == raw
    return total, ok


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The model, batch and optimizer options of a run (also used by bfp_resume.py)."""
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--resumes", type=int, default=5)
    add_model_args(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the results here too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    text = load_text(4 << 20)
    n_val = len(text) // 50
    data, val = text[:-n_val], text[-n_val:]
    ckpts = list(range(a.every, a.steps + 1, a.every))
    stride = max(1, len(ckpts) // (a.resumes + 1))
    resume_at = set(ckpts[stride - 1::stride][: a.resumes])
    out = a.out or tempfile.mkdtemp(prefix="dmx-resume-")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "torch"))
    nparams = sum(p.numel() for p in Run(a, 0).model.parameters())
    print(f"GPT {nparams} params, {a.steps} steps, checkpoint every {a.every} "
          f"({len(ckpts)} checkpoints), resumes at {sorted(resume_at)}", flush=True)

    ref = train(a, data, val, os.path.join(out, "ref-chain"), "lossless", set(), False,
                torch_dir=os.path.join(out, "torch"))
    print(f"reference: {ref['seconds']:.1f}s, final loss {ref['losses'][-1]:.6f}", flush=True)
    runs = {}
    for precision, background in (("lossless", True), ("int16", False), ("int32", False)):
        runs[precision] = train(a, data, val, os.path.join(out, f"{precision}-chain"),
                                precision, resume_at, background)
        print(f"{precision}: {runs[precision]['seconds']:.1f}s", flush=True)

    pts = sorted(glob.glob(os.path.join(out, "torch", "*.pt")))
    torch_bytes = sum(os.path.getsize(p) for p in pts)
    zipnn = zipnn_bytes(pts)
    zbytes, zok = zipnn if zipnn else (None, None)
    lossless = runs["lossless"]
    identical = lossless["losses"] == ref["losses"] and lossless["sha"] == ref["sha"]
    res = {
        "params": nparams, "steps": a.steps, "every": a.every, "resumes": sorted(resume_at),
        "lossless_bit_identical": identical,
        "sha_reference": ref["sha"], "sha_lossless_resumed": lossless["sha"],
        "torch_save_bytes": torch_bytes, "zipnn_bytes": zbytes, "zipnn_round_trip": zok,
        "chain_bytes": {"lossless": ref["chain_bytes"],
                        **{p: runs[p]["chain_bytes"] for p in ("int16", "int32")}},
        "ms_per_checkpoint": {
            "torch.save": 1000 * mean(ref["t_save"]),
            "chain lossless sync": 1000 * mean(ref["t_append"]),
            "chain lossless background (blocking part)": 1000 * mean(lossless["t_append"]),
            "chain int16 sync": 1000 * mean(runs["int16"]["t_append"]),
            "chain int32 sync": 1000 * mean(runs["int32"]["t_append"]),
        },
        "final_train_loss": {"reference": ref["losses"][-1],
                             **{p: runs[p]["losses"][-1] for p in runs}},
        "val_loss": {"reference": ref["val"], **{p: runs[p]["val"] for p in runs}},
        "step_ms": 1000 * (ref["seconds"] - sum(ref["t_append"]) - sum(ref["t_save"])) / a.steps,
    }
    report(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    if a.out is None:
        shutil.rmtree(out, ignore_errors=True)


def report(r: dict) -> None:
    print()
    print(f"lossless resumed run bit-identical to the uninterrupted one: {r['lossless_bit_identical']}")
    print(f"  SHA-256 final weights, uninterrupted: {r['sha_reference']}")
    print(f"  SHA-256 final weights, {len(r['resumes'])} resumes:      {r['sha_lossless_resumed']}")
    ref_val = r["val_loss"]["reference"]
    print("\nrun         final train loss   val loss    val diff vs reference")
    for k in ("reference", "lossless", "int16", "int32"):
        v = r["val_loss"][k]
        print(f"{k:<11} {r['final_train_loss'][k]:>16.6f} {v:>10.6f}  "
              f"{100 * (v - ref_val) / ref_val:+.4f} %")
    tb = r["torch_save_bytes"]
    print(f"\nstorage of {r['steps'] // r['every']} checkpoints (weights + AdamW + scheduler + RNG)")
    print(f"  torch.save files      {tb:>12,} B  1.000x")
    if r["zipnn_bytes"]:
        print(f"  ZipNN on them         {r['zipnn_bytes']:>12,} B  {r['zipnn_bytes'] / tb:.3f}x"
              f"  (round trip {'ok' if r['zipnn_round_trip'] else 'FAILED'})")
    for p, b in r["chain_bytes"].items():
        print(f"  dmx chain {p:<10}  {b:>12,} B  {b / tb:.3f}x")
    print(f"\ntime per checkpoint (a training step takes {r['step_ms']:.0f} ms)")
    for k, v in r["ms_per_checkpoint"].items():
        print(f"  {k:<42} {v:>8.1f} ms")


if __name__ == "__main__":
    main()

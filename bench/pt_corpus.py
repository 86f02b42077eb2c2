#!/usr/bin/env python3
"""Write the corpus GPT's full training checkpoints in the forms `torch.save` users have.

From `corpus/gpt/run_full/step_NNNNN.safetensors` (weights `model.*`, AdamW moments
`optim.exp_avg.*` / `optim.exp_avg_sq.*`, hyper-parameters in the `optim` metadata) this
writes, for each step, into OUT:

- `step_NNNNN.pt`: `torch.save({"model": state_dict, "optimizer": optimizer_state_dict,
  "step": N})`, the optimizer state exactly as `torch.optim.AdamW.state_dict()` lays it out
  (`state.<i>.step / exp_avg / exp_avg_sq`, `param_groups`), parameters numbered in model order;
- `step_NNNNN.safetensors`: the same tensors as one safetensors file (`model.<name>`,
  `optimizer.state.<i>.exp_avg`, ...), for the size comparison (issue 14);
- `checkpoint-NNNNN/`: a Hugging Face Trainer-style folder: `model.safetensors`,
  `optimizer.pt` (the optimizer state dict alone), `scheduler.pt`, `rng_state.pth`,
  `trainer_state.json`.

Usage: python bench/pt_corpus.py [--corpus ../shared/corpus] [--out /tmp/ptcorpus]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def load_full(path: Path) -> tuple[OrderedDict, dict, dict, int]:
    """Model weights, the optimizer state dict and the file's metadata."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        model = OrderedDict(
            (k[len("model.") :], f.get_tensor(k)) for k in keys if k.startswith("model.")
        )
        optim = json.loads(meta["optim"])
        step = float(optim.get("step", [int(meta.get("step", 0))])[0])
        state = {}
        for i, name in enumerate(model):
            state[i] = {
                "step": torch.tensor(step),
                "exp_avg": f.get_tensor(f"optim.exp_avg.{name}"),
                "exp_avg_sq": f.get_tensor(f"optim.exp_avg_sq.{name}"),
            }
    group = {
        "lr": optim["lr"],
        "betas": tuple(optim["betas"]),
        "eps": optim["eps"],
        "weight_decay": optim["weight_decay"],
        "amsgrad": False,
        "foreach": None,
        "maximize": False,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "params": list(range(len(model))),
    }
    return model, {"state": state, "param_groups": [group]}, meta, int(step)


def flat(model: OrderedDict, opt: dict) -> dict[str, torch.Tensor]:
    """The same tensors under safetensors names."""
    out = {f"model.{k}": v for k, v in model.items()}
    for i, s in opt["state"].items():
        for k, v in s.items():
            out[f"optimizer.state.{i}.{k}"] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--corpus", type=Path, default=here.parent / "shared" / "corpus")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ptcorpus"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for src in sorted((args.corpus / "gpt" / "run_full").glob("step_*.safetensors")):
        model, opt, meta, step = load_full(src)
        stem = src.stem
        torch.save({"model": model, "optimizer": opt, "step": step}, args.out / f"{stem}.pt")
        save_file(flat(model, opt), str(args.out / f"{stem}.safetensors"))
        folder = args.out / f"checkpoint-{step}"
        folder.mkdir(exist_ok=True)
        save_file(dict(model), str(folder / "model.safetensors"))
        torch.save(opt, folder / "optimizer.pt")
        torch.save({"base_lrs": [6e-4], "last_epoch": step, "_step_count": step + 1},
                   folder / "scheduler.pt")
        g = torch.Generator().manual_seed(step)
        torch.save({"cpu": g.get_state(), "python": None}, folder / "rng_state.pth")
        (folder / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": [{"loss": float(meta.get("loss", 0))}]},
                       indent=2) + "\n")
        for p in sorted(args.out.glob(f"{stem}.*")) + sorted(folder.iterdir()):
            print(f"{os.path.getsize(p):>12,}  {p}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""BFP on a full training checkpoint: does training resume from it?

Trains the small byte-level GPT of bench/resume_experiment.py (same model, data, AdamW and
schedule) for --at steps, writes the full state (weights, Adam's exp_avg and exp_avg_sq) as
one safetensors file, compresses it with `dmx compress --mode bfp --mantissa-bits M`
(optionally also with the old tool, `--seed-dmx PATH`), restores it, loads the weights and
moments back into a fresh run and trains on to --steps. Reports, per writer: archive bytes,
non-zero second moments restored as 0, and the validation loss at the end against the
uninterrupted run (and against resuming from the exact state, which must match it).

    python bench/bfp_resume.py [--dmx target/release/dmx] [--seed-dmx PATH] [--m 6]
        [--at 150] [--steps 300] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("resume_experiment", HERE / "resume_experiment.py")
rx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rx)


def state_tensors(r) -> dict:
    """Weights and both Adam moments, under names dmx reads as checkpoint components."""
    out = {f"model.{k}": v.detach().clone() for k, v in r.model.state_dict().items()}
    names = {id(p): n for n, p in r.model.named_parameters()}
    for p, st in r.opt.state.items():
        n = names[id(p)]
        out[f"optim.exp_avg.{n}"] = st["exp_avg"].clone()
        out[f"optim.exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
    return out


def load_state(r, t: dict) -> None:
    r.model.load_state_dict({k[len("model."):]: v for k, v in t.items() if k.startswith("model.")})
    names = {id(p): n for n, p in r.model.named_parameters()}
    for p, st in r.opt.state.items():
        n = names[id(p)]
        st["exp_avg"].copy_(t[f"optim.exp_avg.{n}"])
        st["exp_avg_sq"].copy_(t[f"optim.exp_avg_sq.{n}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dmx", default=str(HERE.parent / "target/release/dmx"))
    ap.add_argument("--seed-dmx", default=None, help="the old tool's `dmx` (dmx-compress 1.2.0)")
    ap.add_argument("--m", type=int, action="append", help="mantissa bits (repeatable; default 6)")
    ap.add_argument("--at", type=int, default=150)
    ap.add_argument("--steps", type=int, default=300)
    rx.add_model_args(ap)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    ms = a.m or [6]
    torch.set_num_threads(1)
    out = Path(a.out or tempfile.mkdtemp(prefix="bfp-resume-"))
    out.mkdir(parents=True, exist_ok=True)
    text = rx.load_text(4 << 20)
    data, val = text[: len(text) * 9 // 10], text[len(text) * 9 // 10:]

    torch.manual_seed(a.seed)
    r = rx.Run(a, a.seed)
    for s in range(a.at):
        rx.train_step(r, data, a, s)
    full = out / "state.safetensors"
    save_file(state_tensors(r), str(full))
    # Everything else a resumed run needs (step counts, schedule, random state).
    snapshot = copy.deepcopy({k: v.state_dict() for k, v in r.state().items()})
    rng = torch.get_rng_state()
    for s in range(a.at, a.steps):
        rx.train_step(r, data, a, s)
    reference = rx.val_loss(r, val, a)
    print(f"uninterrupted: val loss {reference:.5f} after {a.steps} steps "
          f"(checkpoint at {a.at}: {full.stat().st_size:,} bytes)")

    writers = [("exact", None, None)]
    for m in ms:
        writers.append((f"dmx bfp M={m}", [a.dmx, "compress", "--quiet", "--force", "--mode",
                                           "bfp", "--mantissa-bits", str(m)],
                        [a.dmx, "decompress", "--quiet", "--force"]))
        if a.seed_dmx:
            writers.append((f"old tool bfp M={m}", [a.seed_dmx, "compress", "--mode", "bfp",
                                                    "--mantissa-bits", str(m)],
                            [a.seed_dmx, "decompress"]))
    orig = load_file(str(full))
    sq_nonzero = sum(int((v != 0).sum()) for k, v in orig.items() if ".exp_avg_sq." in k)
    rows = []
    for label, comp, decomp in writers:
        tag = label.replace(" ", "_").replace("=", "")
        if comp is None:
            restored, size = full, full.stat().st_size
        else:
            packed, restored = out / f"{tag}.dmx", out / f"{tag}.safetensors"
            subprocess.run(comp + [str(full), str(packed)], check=True, capture_output=True)
            subprocess.run(decomp + [str(packed), str(restored)], check=True, capture_output=True)
            size = packed.stat().st_size
        t = load_file(str(restored))
        zeroed = sum(int(((orig[k] != 0) & (t[k] == 0)).sum()) for k in orig if ".exp_avg_sq." in k)
        q = rx.Run(a, a.seed)
        for k, v in q.state().items():
            v.load_state_dict(copy.deepcopy(snapshot[k]))
        load_state(q, t)
        torch.set_rng_state(rng)
        finite = True
        for s in range(a.at, a.steps):
            finite &= bool(torch.isfinite(torch.tensor(rx.train_step(q, data, a, s))))
        loss = rx.val_loss(q, val, a)
        rows.append((label, size, zeroed, loss))
        print(f"{label:>22}: {size:>9,} bytes, exp_avg_sq zeroed {zeroed:,}/{sq_nonzero:,}, "
              f"val loss {loss:.5f} ({loss - reference:+.5f})"
              + ("" if finite else ", a training loss was not finite"))
    exact = rows[0]
    if abs(exact[3] - reference) > 0:
        print("resuming from the exact state did not reproduce the run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""int16 against the old tool, file by file: archive bits per weight, rel L2, worst tensor
rel L2 and the share of non-zero values restored as 0, for dmx and `dmx-compress` 1.2.0 in
the same run (BENCHMARKS.md §27).

    python bench/int16_vs_old.py --dmx target/release/dmx --seed12 PATH/TO/1.2.0/bin/dmx \
        [--only-prefix model_state.] [--out DIR] FILE.safetensors ...

`--only-prefix P` first writes a copy of each file holding only the tensors whose names
start with P (the Resemblyzer checkpoint's weights alone: `model_state.`). Needs numpy and
safetensors. Every restored file is compared with the original in float64.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def errors(orig: dict, restored: dict) -> tuple[float, float, float]:
    num = den = worst = 0.0
    zeroed = nonzero = 0
    for name, a in orig.items():
        a = a.astype(np.float64)
        b = restored[name].astype(np.float64)
        d = float(((a - b) ** 2).sum())
        n = float((a**2).sum())
        num, den = num + d, den + n
        if n > 0:
            worst = max(worst, (d / n) ** 0.5)
        zeroed += int(((a != 0) & (b == 0)).sum())
        nonzero += int((a != 0).sum())
    return (num / den) ** 0.5 if den else 0.0, worst, 100.0 * zeroed / max(nonzero, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--dmx", type=Path, default=Path("target/release/dmx"))
    ap.add_argument("--seed12", type=Path, default=Path("/work/seedvenv12/bin/dmx"))
    ap.add_argument("--only-prefix", default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/out-int16"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| file | tool | bits/w | rel L2 | worst tensor rel L2 | % x≠0 → 0 |")
    print("|---|---|---:|---:|---:|---:|")
    for src in args.files:
        tensors = load_file(str(src))
        if args.only_prefix:
            tensors = {k: v for k, v in tensors.items() if k.startswith(args.only_prefix)}
            src = args.out / f"{src.stem}.only.safetensors"
            save_file(tensors, str(src))
        floats = {k: v for k, v in tensors.items() if v.dtype.kind == "f"}
        params = sum(v.size for v in tensors.values())
        runs = {
            "dmx": (
                [str(args.dmx), "compress", "{i}", "{a}", "--mode", "int16", "--force", "--quiet"],
                [str(args.dmx), "decompress", "{a}", "{r}", "--force", "--quiet"],
            ),
            "old tool": (
                [str(args.seed12), "compress", "{i}", "{a}", "--mode", "int16"],
                [str(args.seed12), "decompress", "{a}", "{r}"],
            ),
        }
        for tool, (comp, decomp) in runs.items():
            tag = "dmx" if tool == "dmx" else "old"
            a = args.out / f"{src.stem}.{tag}.dmx"
            r = args.out / f"{src.stem}.{tag}.restored.safetensors"
            for p in (a, r):
                if p.exists():
                    p.unlink()
            fill = {"i": str(src), "a": str(a), "r": str(r)}
            for cmd in (comp, decomp):
                done = subprocess.run([c.format(**fill) for c in cmd], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{src.name}: {tool} failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
                    break
            else:
                back = load_file(str(r))
                rel, worst, zeroed = errors(floats, back)
                bits = os.path.getsize(a) * 8 / params
                print(f"| {src.stem} | {tool} | {bits:.4f} | {rel:.4e} | {worst:.4e} | {zeroed:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

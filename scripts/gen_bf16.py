#!/usr/bin/env python3
"""Writes a large synthetic BF16 safetensors file for memory (peak RSS) measurements.

Usage: python3 scripts/gen_bf16.py OUT.safetensors [--gib 4]

Tensors are 4096 x 4096 BF16 (32 MiB each) of normally distributed values with a
per-tensor scale, written one at a time so the generator itself needs little memory.
Requires numpy.
"""
import argparse
import json
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gib", type=float, default=4.0)
    args = ap.parse_args()
    rows = cols = 4096
    tensor_bytes = rows * cols * 2
    count = max(1, int(args.gib * (1 << 30)) // tensor_bytes)
    header = {"__metadata__": {"format": "pt", "generator": "dmx scripts/gen_bf16.py"}}
    for i in range(count):
        header[f"layers.{i}.weight"] = {
            "dtype": "BF16",
            "shape": [rows, cols],
            "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(7)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for i in range(count):
            scale = 0.02 * (1.0 + (i % 7) / 7.0)
            x = rng.standard_normal(rows * cols, dtype=np.float32) * np.float32(scale)
            bits = x.view(np.uint32)
            # Round to nearest even into the top 16 bits.
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            f.write(bits.astype("<u2").tobytes())


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/) with small valid inputs: the golden vectors,
# and small safetensors files and their archives (file and folder archives; BF16, F16, F32
# and I64 tensors, so raw, zstd, float-huff and float-huff-rows payloads all appear).
# Needs python3 and a dmx binary (default: build one with cargo into target/seed).
#
#   fuzz/seed.sh [path/to/dmx]
set -euo pipefail
cd "$(dirname "$0")"
root=..
dmx=${1:-}
if [ -z "$dmx" ]; then
    (cd "$root" && CARGO_TARGET_DIR=fuzz/target/seed cargo build -q -p dmx-cli)
    dmx=target/seed/debug/dmx
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p corpus/index corpus/archive corpus/safetensors corpus/decode corpus/roundtrip

python3 - "$work" <<'PY'
import json, random, struct, sys
out = sys.argv[1]
rng = random.Random(7)

def bf16(x):
    return struct.pack("<f", x)[2:]

def tensor(dtype, shape, row_scaled=False):
    n = 1
    for d in shape:
        n *= d
    vals = []
    for i in range(n):
        scale = 2.0 ** (-(i // shape[-1]) % 9) if row_scaled and shape else 1.0
        vals.append(rng.gauss(0, 0.05) * scale)
    if dtype == "BF16":
        return b"".join(bf16(v) for v in vals)
    if dtype == "F16":
        return b"".join(struct.pack("<e", v) for v in vals)
    if dtype == "F32":
        return b"".join(struct.pack("<f", v) for v in vals)
    if dtype == "I64":
        return b"".join(struct.pack("<q", rng.randrange(-40, 40)) for _ in vals)
    raise ValueError(dtype)

def safetensors(path, tensors, metadata=True):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    for name, dtype, shape, rows in tensors:
        t = tensor(dtype, shape, rows)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(t)]}
        data += t
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)

safetensors(f"{out}/a.safetensors", [("w", "BF16", [16, 40], True), ("n", "F32", [33], False), ("ids", "I64", [5], False)])
safetensors(f"{out}/b.safetensors", [("h", "F16", [8, 24], False), ("e", "F32", [0], False)], metadata=False)
safetensors(f"{out}/c.safetensors", [("r", "BF16", [24, 64], True)])
PY

mkdir -p "$work/folder/sub"
cp "$work/b.safetensors" "$work/folder/"
printf '{"hidden_size": 8}\n' > "$work/folder/config.json"
printf 'tokenizer\n' > "$work/folder/sub/tok.txt"
"$dmx" compress -q "$work/a.safetensors" "$work/a.dmx"
"$dmx" compress -q "$work/b.safetensors" "$work/b.dmx"
"$dmx" compress -q "$work/c.safetensors" "$work/c.dmx"
"$dmx" compress -q "$work/folder" "$work/folder.dmx"

for f in "$root"/tests/vectors/*.dmx "$work"/*.dmx; do
    cp "$f" corpus/archive/
    cp "$f" corpus/index/
done
for f in "$root"/tests/vectors/*.safetensors "$work"/*.safetensors; do
    cp "$f" corpus/safetensors/
done
ls corpus/* | head -50

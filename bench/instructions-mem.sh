#!/usr/bin/env bash
# Instructions per value of the in-memory codec (`dmx bench`: encode and decode of every
# chunk, no file IO, no hashing), counted with valgrind --tool=callgrind.
#
#   bash bench/instructions-mem.sh [--dmx PATH]... [--out DIR] [--corpus DIR]
#
# For each binary and each input (BF16: MiniLM layers 0-1; F16: WordLlama rows; F32: the GPT
# step 600 checkpoint), one `dmx bench --threads 1 --reps 1` run under callgrind. Prints the
# total, the decode part (inclusive Ir of dmx_codec::decode_with_base) and the rest (encode
# plus the harness: reading the file, comparing the round trip), per float value. See
# bench/README.md §6.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/bench/out-instr-mem"
CORPUS="$ROOT/../shared/corpus"
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dmx) BINS+=("$2"); shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --corpus) CORPUS=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "instructions-mem.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/target/release/dmx")
for tool in valgrind callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "instructions-mem.sh: needs $tool" >&2; exit 2; }
done
mkdir -p "$OUT"
PY="python3 $ROOT/bench/instructions.py"
$PY slice "$CORPUS/models/minilm_l6_bf16.safetensors" "$OUT/bf16.safetensors" \
    --include '^encoder\.layer\.[01]\.' --max-values 4000000 >/dev/null
$PY slice "$CORPUS/models/wordllama_l2_256_fp16.safetensors" "$OUT/f16.safetensors" \
    --max-values 3000000 >/dev/null
cp -f "$CORPUS/gpt/run/step_00600.safetensors" "$OUT/f32.safetensors"
values() {
    python3 -c "import json,struct,math,sys
f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; h=json.loads(f.read(n))
print(sum(math.prod(v['shape']) for k,v in h.items() if k!='__metadata__'))" "$1"
}
printf '%-40s %-5s %10s %10s %10s\n' binary input total decode rest
for i in "${!BINS[@]}"; do
    bin=${BINS[$i]}
    for f in bf16 f16 f32; do
        cg="$OUT/bin$i.$f.cg"
        valgrind --tool=callgrind --dump-instr=no --collect-jumps=no --callgrind-out-file="$cg" \
            "$bin" bench --threads 1 --reps 1 "$OUT/$f.safetensors" >/dev/null 2>&1
        n=$(values "$OUT/$f.safetensors")
        tot=$(callgrind_annotate "$cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
        dec=$(callgrind_annotate --inclusive=yes "$cg" 2>/dev/null \
            | awk '/:dmx_codec::decode_with_base \[/ && !done {gsub(",","",$1); print $1; done=1}')
        python3 -c "import sys; n,t,d=map(float,sys.argv[1:4]); print(f'{sys.argv[4]:<40} {sys.argv[5]:<5} {t/n:10.1f} {d/n:10.1f} {(t-d)/n:10.1f}')" \
            "$n" "$tot" "${dec:-0}" "$bin" "$f"
    done
done

#!/usr/bin/env bash
# Instructions per value of every dmx codec, encode and decode, counted with
# valgrind --tool=callgrind (deterministic, unlike seconds on a shared machine).
#
#   bash bench/instructions.sh [--dmx PATH] [--out DIR] [--corpus DIR] [--max-values N]
#
# Each case runs the dmx CLI once under callgrind with --threads 1 on a slice of the real
# corpus, and once more with the same flags on a one-tensor, <=256-value file of the same
# dtype (the baseline: process start, argument parsing, planning, archive framing, IO).
# The table gives the total Ir, Ir minus that baseline, and that per float value, plus the
# share of hashing and zstd and the top 5 functions by self Ir. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DMX="$ROOT/target/release/dmx"
OUT="$ROOT/bench/out-instr"
CORPUS="$ROOT/../shared/corpus"
MAXV=3000000
while [ $# -gt 0 ]; do
    case "$1" in
        --dmx) DMX=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --corpus) CORPUS=$2; shift 2 ;;
        --max-values) MAXV=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for tool in valgrind callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: needs $tool" >&2; exit 2; }
done
[ -x "$DMX" ] || { echo "instructions.sh: no dmx binary at $DMX (cargo build --release -p dmx-cli, or --dmx PATH)" >&2; exit 2; }
DMX=$(cd "$(dirname "$DMX")" && pwd)/$(basename "$DMX")
for f in models/minilm_l6_bf16.safetensors models/wordllama_l2_256_fp16.safetensors \
         gpt/run/step_00500.safetensors gpt/run/step_00600.safetensors; do
    [ -f "$CORPUS/$f" ] || { echo "instructions.sh: missing $CORPUS/$f (--corpus DIR)" >&2; exit 2; }
done

PY="python3 $ROOT/bench/instructions.py"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA="$OUT/data"
WORK="$OUT/work"
mkdir -p "$DATA" "$WORK"
rm -f "$OUT"/*.cg "$OUT"/*.top.txt "$WORK"/*

# ---- inputs: whole tensors of the corpus, ~MAXV values each --------------------------------
$PY slice "$CORPUS/models/minilm_l6_bf16.safetensors" "$DATA/minilm_bf16.safetensors" \
    --include '^encoder\.layer\.[01]\.' --max-values $((MAXV * 4 / 3)) >/dev/null
$PY slice "$CORPUS/models/wordllama_l2_256_fp16.safetensors" "$DATA/wordllama_f16.safetensors" \
    --max-values "$MAXV" >/dev/null
cp -f "$CORPUS/gpt/run/step_00500.safetensors" "$DATA/gpt500_f32.safetensors"
cp -f "$CORPUS/gpt/run/step_00600.safetensors" "$DATA/gpt600_f32.safetensors"
cp -f "$ROOT/samples/minilm_l1_bf16.safetensors" "$DATA/sample_bf16.safetensors"
for f in minilm_bf16 wordllama_f16 gpt500_f32 gpt600_f32 sample_bf16; do
    $PY tiny "$DATA/$f.safetensors" "$DATA/$f.tiny.safetensors"
done

CG=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no)
FLAGS=(--force --quiet --no-sync)
CASES="$OUT/cases.tsv"
: >"$CASES"

# cg NAME ARGS...: run dmx ARGS under callgrind into $OUT/NAME.cg
cg() {
    local name=$1; shift
    if ! "${CG[@]}" --callgrind-out-file="$OUT/$name.cg" "$DMX" --threads 1 "$@" \
            >"$OUT/$name.log" 2>&1; then
        echo "instructions.sh: FAILED: dmx $*  (see $OUT/$name.log)" >&2
        exit 1
    fi
}

# codec CASE INPUT DTYPE COMPRESS_FLAGS...: compress + decompress, each with its baseline
codec() {
    local case=$1 in=$2 dtype=$3; shift 3
    local src="$DATA/$in.safetensors" tiny="$DATA/$in.tiny.safetensors"
    local values
    values=$($PY values "$src")
    echo "  $case: $in ($values values) encode, decode" >&2
    cg "$case.enc" compress "$@" "$src" "$WORK/$case.dmx" "${FLAGS[@]}"
    cg "$case.enc.base" compress "$@" "$tiny" "$WORK/$case.tiny.dmx" "${FLAGS[@]}"
    cg "$case.dec" decompress "$WORK/$case.dmx" "$WORK/$case.out" "${FLAGS[@]}"
    cg "$case.dec.base" decompress "$WORK/$case.tiny.dmx" "$WORK/$case.tiny.out" "${FLAGS[@]}"
    local flags="lossless"
    [ $# -gt 0 ] && flags="$*"
    if [ "$flags" = lossless ] && ! cmp -s "$src" "$WORK/$case.out"; then
        echo "instructions.sh: $case: decompressed file differs from the input" >&2; exit 1
    fi
    printf '%s\t%s\t%s\tenc\t%s\t%s\n' "$case" "$in" "$dtype" "$values" "$flags" >>"$CASES"
    printf '%s\t%s\t%s\tdec\t%s\t%s\n' "$case" "$in" "$dtype" "$values" "$flags" >>"$CASES"
}

# delta CASE BASE TARGET DTYPE DELTA_FLAGS...: delta-compress + delta-reconstruct
delta() {
    local case=$1 base=$2 target=$3 dtype=$4; shift 4
    local b="$DATA/$base.safetensors" t="$DATA/$target.safetensors"
    local bt="$DATA/$base.tiny.safetensors" tt="$DATA/$target.tiny.safetensors"
    local values
    values=$($PY values "$t")
    echo "  $case: $base -> $target ($values values) encode, decode" >&2
    cg "$case.enc" delta-compress "$@" "$b" "$t" "$WORK/$case.dmxd" "${FLAGS[@]}"
    cg "$case.enc.base" delta-compress "$@" "$bt" "$tt" "$WORK/$case.tiny.dmxd" "${FLAGS[@]}"
    cg "$case.dec" delta-reconstruct "$b" "$WORK/$case.dmxd" "$WORK/$case.out" "${FLAGS[@]}"
    cg "$case.dec.base" delta-reconstruct "$bt" "$WORK/$case.tiny.dmxd" "$WORK/$case.tiny.out" "${FLAGS[@]}"
    local flags="delta lossless"
    [ $# -gt 0 ] && flags="delta $*"
    if [ $# -eq 0 ] && ! cmp -s "$t" "$WORK/$case.out"; then
        echo "instructions.sh: $case: reconstructed file differs from the target" >&2; exit 1
    fi
    printf '%s\t%s\t%s\tenc\t%s\t%s\n' "$case" "$base→$target" "$dtype" "$values" "$flags" >>"$CASES"
    printf '%s\t%s\t%s\tdec\t%s\t%s\n' "$case" "$base→$target" "$dtype" "$values" "$flags" >>"$CASES"
}

start=$(date +%s)
echo "instructions.sh: callgrind runs into $OUT" >&2
codec lossless-bf16  minilm_bf16   BF16
codec lossless-f16   wordllama_f16 F16
codec lossless-f32   gpt600_f32    F32
codec sample-bf16    sample_bf16   BF16
codec bfp7-bf16      minilm_bf16   BF16 --mode bfp --mantissa-bits 7
codec bfp7-f32       gpt600_f32    F32  --mode bfp --mantissa-bits 7
codec int16-f32      gpt600_f32    F32  --mode int16
codec cast-bf16-f32  gpt600_f32    F32  --cast bf16
delta delta-lossless gpt500_f32 gpt600_f32 F32
delta delta-int16    gpt500_f32 gpt600_f32 F32 --precision int16

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" (working tree modified)"
{
    echo "# dmx instructions per value (callgrind)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(uname -m), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "- dmx: $("$DMX" --version 2>/dev/null | head -1), binary $DMX; repo commit $commit$dirty"
    echo "- $(valgrind --version); every run \`dmx --threads 1 ... --force --quiet --no-sync\`"
    echo "- baseline: the same command on a one-tensor, <=256-value file of the same dtype;"
    echo "  Ir/value = (Ir − baseline) / float values of the input (of the target, for deltas)"
    echo "- hash and zstd columns: self Ir of sha2/blake3/xxhash and of zstd functions, minus the baseline's, per value"
    echo "- note: under valgrind, CPU feature detection sees no SHA-NI and no AVX-512, so SHA-256 runs its"
    echo "  software rounds and BLAKE3 its AVX2 code: the hash share is larger than on the native CPU"
    echo
    echo "| case | codec flags |"
    echo "|---|---|"
    awk -F'\t' '$4=="enc"{print "| " $1 " | " $6 " |"}' "$CASES"
    echo
    $PY report "$CASES" "$OUT"
    echo
    echo "Run time: $(( $(date +%s) - start )) s. Per-case logs, callgrind outputs (*.cg: open with"
    echo "callgrind_annotate or kcachegrind) and the top 40 functions (*.top.txt) are in $OUT."
} | tee "$OUT/instructions.md"

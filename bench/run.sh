#!/usr/bin/env bash
# Side-by-side benchmark of dmx against zstd, ZipNN and the seed (see bench/README.md):
# lossless, deltas, lossy modes (with model quality) and training-run chains, in one run.
#
#   bash bench/run.sh [--corpus DIR] [--reps N] [--out DIR] [--with-seed] [--no-build]
#                     [--with-arch] [--arch-only] [--arch-out DIR]
#                     [-- EXTRA bench.py ARGS, e.g. --sections delta,lossy --slow-reps 1]
#
# Run from anywhere; paths are taken relative to the repository root. The dmx binary is
# $CARGO_TARGET_DIR/release/dmx (default target/release/dmx). --with-arch adds
# bench/arch_quality.py (lossy modes on real pretrained models against dmx-compress 1.2.0,
# output in bench/out-arch/); --arch-only runs only that.
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="$repo_root/bench"
venv="$bench_dir/.venv"

corpus="$repo_root/../shared/corpus"
reps=3
out="$bench_dir/out"
with_seed=0
with_arch=0
arch_only=0
arch_out="$bench_dir/out-arch"
build=1
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --corpus) corpus="$2"; shift 2 ;;
        --reps) reps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --with-seed) with_seed=1; shift ;;
        --with-arch) with_arch=1; shift ;;
        --arch-only) with_arch=1; arch_only=1; shift ;;
        --arch-out) arch_out="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "[bench] $*" >&2; }
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

# 1. Python venv with the pinned peers.
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    python3 -m venv "$venv"
fi
requirements=(-r "$bench_dir/requirements.txt")
if [[ $with_seed -eq 1 ]]; then
    requirements+=(-r "$bench_dir/requirements-seed.txt")
fi
log "installing pinned peers into $venv (the first time is large: zipnn pulls torch)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
seed12_venv="$bench_dir/.venv-seed12"
if [[ $with_arch -eq 1 ]]; then
    # arch_quality.py runs MiniLM through transformers' BertModel (offline).
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        transformers==5.24.0 tokenizers==0.23.3
    # The old tool 1.2.0 in a venv of its own (it pins nothing; keep it away from the peers).
    if [[ ! -x "$seed12_venv/bin/python" ]]; then
        log "creating $seed12_venv"
        python3 -m venv "$seed12_venv"
    fi
    "$seed12_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$bench_dir/requirements-seed12.txt"
fi

# 2. dmx itself.
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
if [[ $build -eq 1 ]]; then
    log "cargo build --release"
    (cd "$repo_root" && cargo build --release)
fi

# 3. The benchmark.
args=(--corpus "$corpus" --reps "$reps" --out "$out" --dmx "$target_dir/release/dmx")
if [[ $with_seed -eq 1 ]]; then
    args+=(--seed "$venv/bin/dmx")
fi
cd "$repo_root"
if [[ $arch_only -eq 0 ]]; then
    "$venv/bin/python" "$bench_dir/bench.py" "${args[@]}" "${extra[@]}"
fi
if [[ $with_arch -eq 1 ]]; then
    log "arch_quality.py (real pretrained models, dmx vs dmx-compress 1.2.0)"
    exec "$venv/bin/python" "$bench_dir/arch_quality.py" --dmx "$target_dir/release/dmx" \
        --out "$arch_out" --corpus "$corpus" --seed12 "$seed12_venv/bin/dmx"
fi

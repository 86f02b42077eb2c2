#!/usr/bin/env bash
# Side-by-side benchmark of dmx against zstd, ZipNN and the seed (see bench/README.md):
# lossless, deltas, lossy modes (with model quality) and training-run chains, in one run.
#
#   bash bench/run.sh [--corpus DIR] [--reps N] [--out DIR] [--with-seed] [--no-build]
#                     [-- EXTRA bench.py ARGS, e.g. --sections delta,lossy --slow-reps 1]
#
# Run from anywhere; paths are taken relative to the repository root. The dmx binary is
# $CARGO_TARGET_DIR/release/dmx (default target/release/dmx).
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="$repo_root/bench"
venv="$bench_dir/.venv"

corpus="$repo_root/../shared/corpus"
reps=3
out="$bench_dir/out"
with_seed=0
build=1
extra=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --corpus) corpus="$2"; shift 2 ;;
        --reps) reps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --with-seed) with_seed=1; shift ;;
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
exec "$venv/bin/python" "$bench_dir/bench.py" "${args[@]}" "${extra[@]}"

#!/usr/bin/env bash
# Wall time of one dmx operation for one or more dmx binaries measured in the same run, the
# binaries alternated run by run (docs: bench/README.md §8). The output is removed before
# every run, so the kernel's freeing of a replaced file (inside `rename`, BENCHMARKS.md §30.3)
# is not timed; `--no-sync` is passed. Prints the median and minimum per binary, in ms.
#
#   bench/wall.sh [-n RUNS] [-t THREADS] BIN[,BIN...] compress FILE [DMX ARGS...]
#   bench/wall.sh [-n RUNS] [-t THREADS] BIN[,BIN...] decompress ARCHIVE [DMX ARGS...]
#   bench/wall.sh [-n RUNS] [-t THREADS] BIN[,BIN...] delta-compress BASE TARGET [DMX ARGS...]
#
# RUNS defaults to 9, THREADS to 2. Outputs go to a temporary directory.
set -euo pipefail
runs=9 threads=2
while getopts "n:t:" o; do
    case $o in
        n) runs=$OPTARG ;;
        t) threads=$OPTARG ;;
        *) sed -n 2,11p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -lt 3 ]; then sed -n 2,11p "$0"; exit 2; fi
IFS=, read -r -a bins <<< "$1"
op=$2
shift 2
case $op in
    compress | decompress) inputs=("$1"); shift ;;
    delta-compress) inputs=("$1" "$2"); shift 2 ;;
    *) echo "wall.sh: unknown operation $op" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A times
for _ in $(seq "$runs"); do
    for b in "${bins[@]}"; do
        rm -f "$tmp/out"
        start=$(date +%s%N)
        "$b" "$op" "${inputs[@]}" "$tmp/out" --quiet --no-sync --threads "$threads" "$@" > /dev/null
        end=$(date +%s%N)
        times[$b]="${times[$b]:-} $(((end - start) / 1000))"
    done
done
for b in "${bins[@]}"; do
    echo "${times[$b]}" | tr ' ' '\n' | grep . | sort -n |
        awk -v b="$b" '{v[NR] = $1} END {printf "%-40s median %8.1f ms  min %8.1f ms  (%d runs)\n", b, v[int((NR + 1) / 2)] / 1000, v[1] / 1000, NR}'
done

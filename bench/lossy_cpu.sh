#!/usr/bin/env bash
# CPU time of `dmx compress` per mode, for one or more dmx binaries measured in the same run
# (docs: bench/README.md §7). For each file and mode: `perf stat -r REPS -e task-clock` of
# `compress --threads 1 --no-sync`, in ROUNDS rounds that alternate the binaries; prints the
# median of the rounds per binary, in ms, and each lossy mode's ratio to lossless.
#
#   bench/lossy_cpu.sh [-r REPS] [-n ROUNDS] [-m MODES] BIN[,BIN...] FILE...
#
# MODES: comma-separated, from lossless, bfp, int16, int32, cast-bf16 (default
# lossless,int16,bfp). Needs Linux `perf`. Outputs go to a temporary directory.
set -euo pipefail
reps=5 rounds=3 modes=lossless,int16,bfp
while getopts "r:n:m:" o; do
    case $o in
        r) reps=$OPTARG ;;
        n) rounds=$OPTARG ;;
        m) modes=$OPTARG ;;
        *) sed -n 2,10p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
IFS=, read -r -a bins <<< "$1"
shift
command -v perf > /dev/null || { echo "lossy_cpu.sh: needs perf" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args_of() {
    case $1 in
        lossless) ;;
        cast-bf16) echo "--cast bf16" ;;
        *) echo "--mode $1" ;;
    esac
}
ms() { # binary file mode -> task-clock ms of one perf stat -r run
    # shellcheck disable=SC2046
    perf stat -r "$reps" -x, -e task-clock "$1" compress "$2" "$work/out.dmx" --force --quiet \
        --no-sync --threads 1 $(args_of "$3") 2>&1 > /dev/null | awk -F, '/task-clock/ {print $1; exit}'
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '%-40s %-10s' file mode
for b in "${bins[@]}"; do printf ' %14s %7s' "$(basename "$b")" ratio; done
echo
IFS=, read -r -a mlist <<< "$modes"
for f in "$@"; do
    declare -A base=()
    for m in "${mlist[@]}"; do
        for b in "${!bins[@]}"; do : > "$work/t$b"; done
        for _ in $(seq "$rounds"); do
            for b in "${!bins[@]}"; do
                t=$(ms "${bins[$b]}" "$f" "$m") || t=""
                [ -n "$t" ] || { echo "lossy_cpu.sh: ${bins[$b]} compress $f ($m) failed" >&2; exit 2; }
                echo "$t" >> "$work/t$b"
            done
        done
        printf '%-40s %-10s' "$(basename "$f")" "$m"
        for b in "${!bins[@]}"; do
            t=$(median < "$work/t$b")
            [ "$m" = lossless ] && base[$b]=$t
            r=$(awk -v t="$t" -v l="${base[$b]:-}" 'BEGIN {print (l == "") ? "-" : sprintf("%.2f", t / l)}')
            printf ' %14.2f %7s' "$t" "$r"
        done
        echo
    done
    unset base
done

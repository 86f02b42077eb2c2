"""Helpers shared by the bench sections: measured processes, file comparison, formatting."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEER_WORKER = BENCH_DIR / "peers.py"
PROCESS_TIMEOUT_S = 1800
GNU_TIME = "/usr/bin/time"  # Debian package "time"

# safetensors dtype -> ZipNN bytearray_dtype (ZipNN has no mode for the others).
ZIPNN_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


# --------------------------------------------------------------------------- processes

@dataclass
class Run:
    """One finished process: its time, peak RSS, and an error text when it failed."""
    seconds: float
    peak_rss_bytes: int
    error: str | None = None
    input_mutated: bool = False  # a Python peer wrote into the buffer it was given
    report: dict | None = None  # what a self-timed process printed (its JSON line)


def run_measured(cmd: list[str], self_timed: bool) -> Run:
    """Run cmd and return its wall time (or the time it reports itself) and peak RSS.

    The peak RSS comes from GNU time's %M, i.e. ru_maxrss of the child. Reading
    ru_maxrss here instead would be wrong: a child forked from this (numpy-sized)
    process starts out with this process's RSS as its high-water mark.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss_file:
        start = time.perf_counter()
        try:
            proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Run(PROCESS_TIMEOUT_S, 0, f"timed out after {PROCESS_TIMEOUT_S} s")
        wall = time.perf_counter() - start
        rss_lines = rss_file.read().split()
        rss = int(rss_lines[-1]) * 1024 if rss_lines and rss_lines[-1].isdigit() else 0
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            return Run(wall, rss, f"exit {proc.returncode}: {' | '.join(tail) or 'no stderr'}")
        if not self_timed:
            return Run(wall, rss)
        try:
            report = json.loads(out.read().decode().strip().splitlines()[-1])
            return Run(report["seconds"], rss, input_mutated=report.get("input_mutated", False),
                       report=report)
        except (ValueError, IndexError, KeyError) as e:
            return Run(wall, rss, f"worker printed no timing ({e})")


def compare_files(original: Path, restored: Path, chunk: int = 1 << 24) -> str | None:
    """None when the files are byte-for-byte equal, else a short description."""
    a_size, b_size = original.stat().st_size, restored.stat().st_size
    if a_size != b_size:
        return f"size {b_size} != {a_size}"
    differing = 0
    with open(original, "rb") as fa, open(restored, "rb") as fb:
        while block := fa.read(chunk):
            other = fb.read(len(block))
            if block != other:
                differing += int(np.count_nonzero(
                    np.frombuffer(block, np.uint8) != np.frombuffer(other, np.uint8)))
    if differing == 0:
        return None
    return f"{differing} of {a_size} bytes differ ({100 * differing / a_size:.1f}%)"


def eval_losses(stdout: str) -> dict[str, float]:
    """The `PATH LOSS` lines that ../shared/corpus/tools/eval_gpt.py prints, as {path: loss};
    other lines are ignored."""
    losses = {}
    for line in stdout.splitlines():
        parts = line.rsplit(" ", 1)
        if len(parts) == 2:
            try:
                losses[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return losses


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.0f}" if nbytes else "-"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def md_table(columns: list[str], lines: list[list[str]], right: set[int]) -> str:
    """A Markdown table; columns whose index is in right are right-aligned."""
    out = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(columns))) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def python_cmd(tool: str, op: str, *paths: Path, **opts) -> list[str]:
    """argv of one bench/peers.py operation (a Python peer in its own process)."""
    return [sys.executable, str(PEER_WORKER), tool, op, *map(str, paths),
            *(f"--{k.replace('_', '-')}={v}" for k, v in opts.items())]

"""Side-by-side benchmark: dmx against zstd and ZipNN on a corpus of safetensors files.

Usually started by bench/run.sh; see bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from common import (BENCH_DIR, GNU_TIME, PEER_WORKER, REPO_ROOT, ZIPNN_DTYPES, compare_files,
                    fmt, mb, run_measured)
from stinfo import EntropyBound, SafetensorsFile, order0_entropy_bound, read_safetensors

import chains
import deltas
import lossy


# --------------------------------------------------------------------------- tools

CommandBuilder = Callable[[Path, Path, int], list[str]]  # (input, output, threads) -> argv


@dataclass
class Tool:
    """A compressor under test: how to build its compress and decompress commands."""
    name: str  # label in the table
    kind: str  # "dmx", "zstd", "zipnn", "seed"
    compress: CommandBuilder
    decompress: CommandBuilder
    self_timed: bool  # the process prints its own timing (Python peers)
    baseline: CommandBuilder | None = None  # same process, imports only
    lossless_peer: bool = True  # may be the "best peer"
    slow: bool = False  # measured with --slow-reps repetitions (sizes are deterministic)


def python_peer(kind: str, label: str, **opts) -> Tool:
    """A codec run by peers.py; opts become its --key=value options."""
    extra = [f"--{k}={v}" for k, v in opts.items()]

    def cmd(op):
        return lambda src, dst, threads: [
            sys.executable, str(PEER_WORKER), kind, op, str(src), str(dst),
            f"--threads={threads}", *extra]

    return Tool(label, kind, cmd("compress"), cmd("decompress"), self_timed=True,
                baseline=cmd("baseline"))


def dmx_tool(binary: Path) -> Tool:
    def cmd(op):
        return lambda src, dst, threads: [
            str(binary), op, str(src), str(dst), "--threads", str(threads), "--force", "--quiet",
            # The Python peers do not fsync what they write; neither does dmx here, for parity.
            "--no-sync"]

    return Tool("dmx", "dmx", cmd("compress"), cmd("decompress"), self_timed=False)


def zipnn_dtype(st: SafetensorsFile) -> str | None:
    """ZipNN's bytearray_dtype for a whole file: its only dtype, or else the float dtype
    that holds the most bytes (the file is still compressed as one byte buffer)."""
    for dtype, _ in st.bytes_by_dtype().most_common():
        if dtype in ZIPNN_DTYPES:
            return ZIPNN_DTYPES[dtype]
    return None


def tools_for(st: SafetensorsFile, args) -> list[Tool]:
    zstd19 = python_peer("zstd", "zstd -19", level=19)
    zstd19.slow = True  # about 1.5 MB/s here: --slow-reps repetitions
    tools = [python_peer("zstd", "zstd -3", level=3), zstd19]
    dtype = zipnn_dtype(st)
    if dtype:
        tools.append(python_peer("zipnn", f"ZipNN 0.5.4 byte/{dtype}", dtype=dtype))
    # The seed (--with-seed) is lossy by design: it is measured in the lossy table, with
    # error metrics, not here (where every row must restore its input byte for byte).
    tools.append(dmx_tool(args.dmx))
    return [t for t in tools if not args.tools or t.kind in args.tools]


# --------------------------------------------------------------------------- measuring

@dataclass
class Row:
    """The measurements of one tool at one thread count on one file."""
    file: str
    dtype: str
    params: int
    original_bytes: int
    tool: Tool
    threads: int
    compressed_bytes: int | None = None
    compress_s: list[float] = field(default_factory=list)
    decompress_s: list[float] = field(default_factory=list)
    compress_rss: int = 0
    decompress_rss: int = 0
    failure: str | None = None
    input_mutated: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.compressed_bytes is not None

    @property
    def verdict(self) -> str:
        if self.ok:
            return "OK (mutates input)" if self.input_mutated else "OK"
        return f"FAIL ({self.failure.split(':')[0] if self.failure else 'not run'})"

    def mb_per_s(self, times: list[float]) -> float | None:
        return self.original_bytes / 1e6 / statistics.median(times) if times else None

    @property
    def compress_mbps(self) -> float | None:
        return self.mb_per_s(self.compress_s)

    @property
    def decompress_mbps(self) -> float | None:
        return self.mb_per_s(self.decompress_s)

    @property
    def bits_per_weight(self) -> float | None:
        return self.compressed_bytes * 8 / self.params if self.compressed_bytes else None

    @property
    def ratio(self) -> float | None:
        return self.original_bytes / self.compressed_bytes if self.compressed_bytes else None


def measure(st: SafetensorsFile, label: str, tool: Tool, threads: int, reps: int,
            workdir: Path) -> Row:
    row = Row(label, st.dtype_label, st.params, st.size, tool, threads)
    packed, restored = workdir / "packed", workdir / "restored"
    for _ in range(reps):
        for path in (packed, restored):
            path.unlink(missing_ok=True)
        c = run_measured(tool.compress(st.path, packed, threads), tool.self_timed)
        row.compress_rss = max(row.compress_rss, c.peak_rss_bytes)
        if c.error or not packed.exists():
            row.failure = f"compress: {c.error or 'wrote no output file'}"
            break
        row.compress_s.append(c.seconds)
        row.input_mutated |= c.input_mutated
        row.compressed_bytes = packed.stat().st_size
        d = run_measured(tool.decompress(packed, restored, threads), tool.self_timed)
        row.decompress_rss = max(row.decompress_rss, d.peak_rss_bytes)
        if d.error or not restored.exists():
            row.failure = f"decompress: {d.error or 'wrote no output file'}"
            break
        row.decompress_s.append(d.seconds)
        row.input_mutated |= d.input_mutated
        # Every repetition is checked: a codec may be nondeterministic.
        mismatch = compare_files(st.path, restored)
        if mismatch:
            row.failure = f"mismatch: {mismatch}"
    return row


def baseline_rss(tool: Tool, workdir: Path) -> int | None:
    """Peak RSS of a Python peer's worker that only imports its codec."""
    if tool.baseline is None:
        return None
    run = run_measured(tool.baseline(workdir / "none", workdir / "none", 1), self_timed=False)
    return None if run.error else run.peak_rss_bytes


# --------------------------------------------------------------------------- report

COLUMNS = ["file", "dtype", "params", "tool/mode", "threads", "bits/weight", "ratio",
           "compress MB/s", "decompress MB/s", "peak RSS MB (c / d)", "round trip"]


def table_cells(row: Row) -> list[str]:
    return [row.file, row.dtype, f"{row.params:,}", row.tool.name, str(row.threads),
            fmt(row.bits_per_weight, ".3f"), fmt(row.ratio, ".3f"),
            fmt(row.compress_mbps, ".1f"), fmt(row.decompress_mbps, ".1f"),
            f"{mb(row.compress_rss)} / {mb(row.decompress_rss)}", row.verdict]


def bound_cells(file: str, st: SafetensorsFile, bound: EntropyBound) -> list[str]:
    return [file, st.dtype_label, f"{st.params:,}", "order-0 bound (s+e+2m)", "-",
            f"{bound.bits_per_weight:.3f}", "-", "-", "-", "-", "-"]


def markdown_table(lines: list[list[str]]) -> str:
    right = {2, 4, 5, 6, 7, 8, 9}
    out = ["| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(COLUMNS))) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def comparison(file: str, rows: list[Row], bound: EntropyBound) -> str:
    """The "dmx vs best peer" line of one file."""
    dmx = {r.threads: r for r in rows if r.tool.kind == "dmx"}
    if not dmx:
        return f"- {file}: dmx not run"
    if not any(r.ok for r in dmx.values()):
        reason = next(r.failure for r in dmx.values() if r.failure)
        return f"- {file}: dmx FAIL ({reason})"
    dmx_bytes = min(r.compressed_bytes for r in dmx.values() if r.ok)
    peers = [r for r in rows if r.tool.kind != "dmx" and r.tool.lossless_peer and r.ok]
    parts = [f"{dmx_bytes * 8 / rows[0].params:.3f} bits/weight "
             f"(order-0 bound {bound.bits_per_weight:.3f})"]
    if peers:
        best = min(peers, key=lambda r: r.compressed_bytes)
        parts.append(f"size {dmx_bytes / best.compressed_bytes:.3f}× of {best.tool.name} "
                     f"({dmx_bytes:,} vs {best.compressed_bytes:,} B)")
    else:
        parts.append("no peer round-tripped OK")
    for threads, d in sorted(dmx.items()):
        z = next((r for r in rows if r.tool.kind == "zipnn" and r.threads == threads), None)
        if not (z and d.ok and z.compress_s and z.decompress_s):
            continue
        note = "" if z.ok else ", ZipNN round trip FAIL"
        parts.append(f"vs ZipNN @{threads}t: compress {d.compress_mbps / z.compress_mbps:.2f}×, "
                     f"decompress {d.decompress_mbps / z.decompress_mbps:.2f}×{note}")
    return f"- {file}: " + "; ".join(parts)


def machine_description(args) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                       if l.startswith("MemTotal"))
        memory = f"{mem_kib / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    versions = []
    packages = ("zstandard", "zipnn", "numpy", "torch", "safetensors")
    for pkg in packages + (("dmx-compress",) if args.seed else ()):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    dmx_version = "missing"
    if args.dmx.exists():
        try:
            dmx_version = subprocess.run([str(args.dmx), "--version"], capture_output=True,
                                         text=True, timeout=30).stdout.strip() or "no --version"
        except (OSError, subprocess.TimeoutExpired) as e:
            dmx_version = f"unusable ({e})"
        dmx_version += f", sha256 {hashlib.sha256(args.dmx.read_bytes()).hexdigest()[:12]}"
    git = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "no commit"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- date: {now}",
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable)"
        f"; memory {memory}; {platform.system()} {platform.release()}",
        f"- dmx: `{args.dmx_built}` ({dmx_version}), git {git}",
        f"- peers: Python {platform.python_version()}, {', '.join(versions)}",
        f"- corpus: `{args.corpus}`; {args.reps} repetitions, median times; load average "
        f"at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


METHOD_NOTES = """\
## How to read this

- bits/weight = compressed bytes × 8 / parameters (all tensors' elements, from the header);
  ratio = original / compressed bytes; MB/s = original bytes / 1e6 / median seconds.
- dmx is timed as a whole process (`dmx compress|decompress IN OUT --threads T --force --quiet
  --no-sync`); `--no-sync` skips the fsync before the atomic rename, because the peers do not
  fsync either (dmx syncs by default).
  Python peers run in a fresh process per measurement and time read input → codec → write
  output inside it, so interpreter start-up and imports are not charged to them.
- Peak RSS is GNU time's %M (max resident set) of that one process, compress / decompress.
  For Python peers it includes the interpreter and imports (see baselines below).
- Round trip: every repetition's restored file is compared byte-for-byte with the input;
  one mismatch makes the row FAIL. "Best peer" counts only lossless peers whose round trip was OK.
- zstd: python-zstandard on the whole file; 1 thread = threads=0 (no worker threads),
  N threads = N workers. zstd decompression is single-threaded either way.
- ZipNN: `ZipNN(input_format="byte", bytearray_dtype=D, threads=T)` on the whole file's
  bytes, D = the file's only dtype, or for mixed files the float dtype holding most bytes
  (BF16+I64 → bfloat16).
- order-0 bound: per float tensor, sign + exponent + top 2 mantissa bits coded at their
  empirical order-0 entropy, the remaining mantissa bits raw; over float parameters only
  (header and non-float tensors left out)."""


def write_report(out_dir: Path, header: list[str], lines: list[list[str]], rows: list[Row],
                 comparisons: list[str], baselines: list[str], sections: list[str],
                 slow_reps: int) -> str:
    failures = [f"- {r.file} · {r.tool.name} · {r.threads}t: {r.failure}"
                for r in rows if r.failure]
    parts = ["# dmx benchmark", "", *header, ""]
    if rows:
        parts += ["## Lossless: every tool on every corpus file", "",
                  f"zstd -19 runs {slow_reps} repetition(s) (it compresses at about 1.5 MB/s "
                  "here; its sizes are deterministic), the others the full count.", "",
                  markdown_table(lines), "", "### dmx vs best peer", "", *comparisons, ""]
    if failures:
        parts += ["## Failures", "", *failures, ""]
    mutators = sorted({r.tool.name for r in rows if r.input_mutated})
    if mutators:
        files = sorted({r.file for r in rows if r.input_mutated})
        parts += ["## Input buffers modified", "",
                  f"{', '.join(mutators)} wrote into the immutable `bytes` object passed to it "
                  f"({', '.join(files)}). The restored files still equal the originals on disk, "
                  "so these round trips are OK; a caller that compares the output with the "
                  "buffer it passed in sees a spurious mismatch.", ""]
    for section in sections:
        parts += [section, ""]
    if rows:
        parts += [METHOD_NOTES, ""]
    if baselines:
        parts += ["Python peers' RSS after imports alone: " + "; ".join(baselines) + ".", ""]
    text = "\n".join(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(text)

    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "dtype", "params", "tool", "threads", "original_bytes",
                         "compressed_bytes", "bits_per_weight", "ratio", "compress_mb_s",
                         "decompress_mb_s", "compress_s", "decompress_s",
                         "compress_peak_rss_bytes", "decompress_peak_rss_bytes",
                         "round_trip", "failure", "input_mutated"])
        for r in rows:
            writer.writerow([r.file, r.dtype, r.params, r.tool.name, r.threads,
                             r.original_bytes, r.compressed_bytes or "",
                             fmt(r.bits_per_weight, ".4f", ""), fmt(r.ratio, ".4f", ""),
                             fmt(r.compress_mbps, ".2f", ""), fmt(r.decompress_mbps, ".2f", ""),
                             " ".join(f"{s:.4f}" for s in r.compress_s),
                             " ".join(f"{s:.4f}" for s in r.decompress_s),
                             r.compress_rss, r.decompress_rss,
                             "OK" if r.ok else "FAIL", r.failure or "", r.input_mutated])
    return text


# --------------------------------------------------------------------------- main

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT.parent / "shared" / "corpus")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--dmx", type=Path, default=REPO_ROOT / "target" / "release" / "dmx")
    parser.add_argument("--seed", type=Path, default=None,
                        help="also run the dmx-compress PyPI package (needs it installed)")
    parser.add_argument("--tools", type=lambda s: set(s.split(",")), default=None,
                        help="comma-separated subset of dmx,zstd,zipnn,seed")
    parser.add_argument("--files", default="**/*.safetensors",
                        help="glob under the corpus (default: every *.safetensors)")
    parser.add_argument("--sections", type=lambda s: s.split(","),
                        default=list(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--slow-reps", type=int, default=1,
                        help="repetitions of the slow peers: zstd -19, XOR + zstd -19, seed")
    parser.add_argument("--eval-batches", type=int, default=16,
                        help="validation batches for eval_gpt.py (0: no model-quality run)")
    parser.add_argument("--delta-methods", type=lambda s: s.split(","), default=None,
                        help="only the delta methods whose names contain one of these")
    args = parser.parse_args()
    args.corpus = args.corpus.resolve()
    args.dmx_built = args.dmx  # args.dmx becomes a private copy of it in main()
    if args.reps < 1 or args.slow_reps < 1:
        parser.error("--reps and --slow-reps must be at least 1")
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


SECTIONS = ("lossless", "delta", "lossy", "chain")


def main() -> int:
    run_started = time.perf_counter()
    args = parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        print(f"{GNU_TIME} (GNU time) is needed to measure peak RSS: apt-get install time",
              file=sys.stderr)
        return 1
    files = sorted(args.corpus.glob(args.files)) if "lossless" in args.sections else []
    if not files and "lossless" in args.sections:
        print(f"no files match {args.files} under {args.corpus}", file=sys.stderr)
        return 1
    thread_counts = sorted({1, len(os.sched_getaffinity(0))})

    rows: list[Row] = []
    lines: list[list[str]] = []
    comparisons: list[str] = []
    baselines: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dmx-bench-") as tmp:
        workdir = Path(tmp)
        # Run a private copy, so that a rebuild during the run cannot mix two versions.
        if args.dmx.exists():
            args.dmx_built = args.dmx
            args.dmx = Path(shutil.copy2(args.dmx, workdir / "dmx"))
        header = machine_description(args)
        for path in files:
            st = read_safetensors(path)
            label = str(path.relative_to(args.corpus)).removesuffix(".safetensors")
            file_rows = []
            for tool in tools_for(st, args):
                if tool.baseline and tool.kind not in baselines:
                    rss = baseline_rss(tool, workdir)
                    baselines[tool.kind] = f"{tool.kind} {fmt(rss and rss / 1e6, '.0f')} MB"
                for threads in thread_counts:
                    print(f"[bench] {label}: {tool.name}, {threads} thread(s)",
                          file=sys.stderr, flush=True)
                    reps = args.slow_reps if tool.slow else args.reps
                    row = measure(st, label, tool, threads, reps, workdir)
                    file_rows.append(row)
                    lines.append(table_cells(row))
            bound = order0_entropy_bound(st)
            lines.append(bound_cells(label, st, bound))
            rows += file_rows
            comparisons.append(comparison(label, file_rows, bound))

        threads = max(thread_counts)
        sections = []
        args.out.mkdir(parents=True, exist_ok=True)
        for name, module in (("delta", deltas), ("lossy", lossy), ("chain", chains)):
            if name not in args.sections:
                continue
            started = time.perf_counter()
            text, _ = module.run(args, workdir, threads, log)
            log(f"{name} section took {time.perf_counter() - started:.0f} s")
            (args.out / f"{name}.md").write_text(text + "\n")
            sections.append(text)

    text = write_report(args.out, header, lines, rows, comparisons, list(baselines.values()),
                        sections, args.slow_reps)
    print(text)
    log(f"whole run took {time.perf_counter() - run_started:.0f} s; report in {args.out}")
    return 0


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

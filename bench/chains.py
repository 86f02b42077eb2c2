"""Chain table: `dmx chain-compress` of the corpus training runs against compressing every
checkpoint on its own, with every entry reconstructed and checked.

Part of bench.py (see bench/README.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common import compare_files, fmt, md_table, median, run_measured
from stinfo import compare_values

RUNS = [("gpt/run", "step_*.safetensors", "weights only"),
        ("gpt/run_full", "step_*.safetensors", "weights + AdamW states")]
PRECISIONS = ["lossless", "int16"]


@dataclass
class ChainRow:
    run: str
    kind: str
    precision: str
    files: list
    raw_bytes: int
    chain_bytes: int | None = None
    independent: dict = field(default_factory=dict)  # precision -> Σ dmx compress bytes
    entries: list = field(default_factory=list)  # (kind, stored, standalone) from the manifest
    compress_s: list = field(default_factory=list)
    full_s: list = field(default_factory=list)
    one_s: list = field(default_factory=list)
    first_s: list = field(default_factory=list)
    failure: str | None = None
    max_rel_l2: float | None = None
    same_route: bool | None = None  # single-index restore == full restore, byte for byte

    @property
    def ok(self) -> bool:
        return self.failure is None and self.chain_bytes is not None

    @property
    def verdict(self) -> str:
        if not self.ok:
            return f"FAIL ({self.failure or 'not run'})"
        if self.precision == "lossless":
            return f"OK (all {len(self.files)} byte-exact)"
        route = "" if self.same_route is None else (
            ", late index alone = full restore" if self.same_route
            else ", late index alone DIFFERS from full restore")
        return f"OK (max rel L2 {self.max_rel_l2:.2e}{route})"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def independent_size(args, files: list[Path], precision: str, workdir: Path,
                     threads: int) -> int | None:
    total = 0
    out = workdir / "indep.dmx"
    for f in files:
        mode = [] if precision == "lossless" else ["--mode", precision]
        r = run_measured([str(args.dmx), "compress", str(f), str(out), *mode, "--threads",
                          str(threads), "--force", "--quiet", "--no-sync"], self_timed=False)
        if r.error or not out.exists():
            return None
        total += out.stat().st_size
        out.unlink()
    return total


def measure(args, files: list[Path], run: str, kind: str, precision: str, workdir: Path,
            threads: int, indep_cache: dict) -> ChainRow:
    row = ChainRow(run, kind, precision, files, sum(f.stat().st_size for f in files))
    for p in {"lossless", precision}:
        key = (run, p)
        if key not in indep_cache:
            indep_cache[key] = independent_size(args, files, p, workdir, threads)
        row.independent[p] = indep_cache[key]
    chain, full, one = workdir / "chain", workdir / "chain-out", workdir / "chain-one"
    first = workdir / "chain-first"
    dmx = str(args.dmx)
    common = ["--threads", str(threads), "--quiet", "--no-sync"]
    last = len(files) - 1
    for _ in range(args.reps):
        for p in (chain, full, one, first):
            shutil.rmtree(p, ignore_errors=True)
        c = run_measured([dmx, "chain-compress", *map(str, files), "--output-dir", str(chain),
                          "--precision", precision, "--force", *common], self_timed=False)
        if c.error:
            row.failure = f"chain-compress: {c.error}"
            return row
        row.compress_s.append(c.seconds)
        row.chain_bytes = dir_bytes(chain)
        f = run_measured([dmx, "chain-reconstruct", str(chain), "--output-dir", str(full),
                          "--force", *common], self_timed=False)
        if f.error:
            row.failure = f"chain-reconstruct: {f.error}"
            return row
        row.full_s.append(f.seconds)
        o = run_measured([dmx, "chain-reconstruct", str(chain), "--output-dir", str(one),
                          "--indices", str(last), "--force", *common], self_timed=False)
        if o.error:
            row.failure = f"chain-reconstruct --indices {last}: {o.error}"
            return row
        row.one_s.append(o.seconds)
        a = run_measured([dmx, "chain-reconstruct", str(chain), "--output-dir", str(first),
                          "--indices", "0", "--force", *common], self_timed=False)
        if a.error:
            row.failure = f"chain-reconstruct --indices 0: {a.error}"
            return row
        row.first_s.append(a.seconds)
    try:
        manifest = json.loads((chain / "manifest.json").read_text())
        row.entries = [(e["kind"], e["stored_size"], e.get("standalone_size"))
                       for e in manifest["entries"]]
    except (OSError, ValueError, KeyError) as e:
        row.failure = f"manifest.json unreadable: {e}"
        return row
    # Every entry, from the full reconstruction.
    worst = 0.0
    for f in files:
        restored = full / f.name
        if not restored.exists():
            row.failure = f"{f.name} not restored"
            return row
        if precision == "lossless":
            mismatch = compare_files(f, restored)
            if mismatch:
                row.failure = f"{f.name}: {mismatch}"
                return row
        else:
            cmp = compare_values(f, restored)
            if cmp.problems:
                row.failure = f"{f.name}: {'; '.join(cmp.problems[:2])}"
                return row
            worst = max(worst, cmp.total.rel_l2)
    row.max_rel_l2 = worst
    late = one / files[-1].name
    if not late.exists():
        row.failure = f"--indices {last} did not restore {files[-1].name}"
        return row
    mismatch = compare_files(full / files[-1].name, late)
    row.same_route = mismatch is None
    if mismatch and precision == "lossless":
        row.failure = f"--indices {last}: {mismatch}"
    early = first / files[0].name
    if not early.exists() or compare_files(full / files[0].name, early):
        row.failure = f"--indices 0 did not restore {files[0].name} as the full restore did"
        return row
    others = [p.name for p in one.iterdir() if p.name != files[-1].name]
    if others:
        print(f"[bench] chain --indices {last} also wrote {others}")
    return row


def run(args, workdir: Path, threads: int, log) -> tuple[str, list[ChainRow]]:
    rows = []
    cache: dict = {}
    help_ok = subprocess.run([str(args.dmx), "chain-compress", "--help"],
                             capture_output=True).returncode == 0
    for run_dir, pattern, kind in RUNS:
        files = sorted((args.corpus / run_dir).glob(pattern))
        if len(files) < 2:
            log(f"chain {run_dir}: fewer than 2 checkpoints, skipped")
            continue
        for precision in PRECISIONS:
            log(f"chain {run_dir} ({len(files)} checkpoints), {precision}")
            if not help_ok:
                row = ChainRow(run_dir, kind, precision, files,
                               sum(f.stat().st_size for f in files),
                               failure="this dmx has no chain-compress")
            else:
                row = measure(args, files, run_dir, kind, precision, workdir, threads, cache)
            rows.append(row)
    return report(rows, threads, args), rows


COLUMNS = ["run", "checkpoints", "precision", "raw bytes", "chain bytes", "entries (A/D)",
           "Σ independent (same precision)", "chain / independent", "Σ independent lossless",
           "chain / raw", "compress s", "restore all s", "restore last s", "restore first s",
           "round trip"]


def report(rows: list[ChainRow], threads: int, args) -> str:
    lines = []
    for r in rows:
        same = r.independent.get(r.precision)
        lossless = r.independent.get("lossless")
        kinds = "".join("A" if k == "anchor" else "D" for k, _, _ in r.entries) or "-"
        lines.append([
            f"{r.run}/{'step_*'} ({r.kind})", str(len(r.files)), r.precision,
            f"{r.raw_bytes:,}", fmt(r.chain_bytes, ",d"), kinds, fmt(same, ",d"),
            fmt(r.chain_bytes and same and r.chain_bytes / same, ".3f"),
            fmt(lossless, ",d"),
            fmt(r.chain_bytes and r.chain_bytes / r.raw_bytes, ".3f"),
            fmt(median(r.compress_s), ".2f"), fmt(median(r.full_s), ".2f"),
            fmt(median(r.one_s), ".2f"), fmt(median(r.first_s), ".2f"), r.verdict])
    out = ["## Training-run chains", "",
           f"`dmx chain-compress CKPT... --output-dir DIR --precision P`, {threads} threads, "
           f"medians of {args.reps} runs. chain bytes = every file in DIR (entries and "
           "manifest); entries: A = anchor (standalone archive), D = delta from the previous "
           "checkpoint, in order. Σ independent = the sum of `dmx compress` of each checkpoint "
           "alone (`--mode int16` for int16 chains; lossless beside it). restore all = "
           "`dmx chain-reconstruct DIR --output-dir OUT`; restore last = the same with "
           "`--indices N` for the last entry (reads its anchor and the deltas up to it), "
           "restore first = `--indices 0` (the first anchor alone). "
           "Every restored checkpoint is compared with its original: byte for byte for "
           "lossless chains; relative L2 error for int16 chains, whose last entry restored "
           "alone must also equal its full-chain restore byte for byte.", "",
           md_table(COLUMNS, lines, {1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13})]
    detail = []
    for r in rows:
        for i, (k, stored, standalone) in enumerate(r.entries):
            detail.append([f"{r.run} {r.precision}", str(i), r.files[i].name, k, f"{stored:,}",
                           fmt(standalone, ",d"),
                           fmt(standalone and stored / standalone, ".3f")])
    if detail:
        out += ["", "### Entries (from the chain's manifest.json)", "",
                md_table(["chain", "index", "checkpoint", "kind", "stored bytes",
                          "standalone bytes", "stored / standalone"], detail, {1, 4, 5, 6})]
    return "\n".join(out)

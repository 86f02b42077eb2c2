"""Lossy table: dmx BFP (M = 4..8), int16 and int32 against the seed tool, and what each costs
in model quality on the corpus GPT.

Part of bench.py (see bench/README.md). Every archive is decompressed and the restored file
compared with the original value by value (relative L2 error over all float values, largest
absolute error), and dmx archives are checked with `dmx verify ORIGINAL FILE.dmx`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import eval_losses, fmt, md_table, median, python_cmd, run_measured
from stinfo import compare_values, read_safetensors

FILES = ["models/minilm_l6_bf16", "models/wordllama_l2_256_fp16", "gpt/run/step_00600"]
EVAL_FILE = "gpt/run/step_00600"  # the corpus GPT: model-quality cost measured on it
EVAL_TOOL = "tools/eval_gpt.py"  # under the corpus
TEXT_GLOB = "/usr/share/perl/**/*.pm"  # the GPT's training text (corpus README)


@dataclass
class Mode:
    label: str  # e.g. "bfp M=6"
    tool: str  # "dmx" or "seed"
    flags: list  # dmx: compress flags; seed: ["bfp"] etc.

    @property
    def name(self) -> str:
        return f"dmx {self.label}" if self.tool == "dmx" else f"seed 0.4.0 {self.label}"


def modes(args) -> list[Mode]:
    out = [Mode(f"bfp M={m}", "dmx", ["--mode", "bfp", "--mantissa-bits", str(m)])
           for m in range(4, 9)]
    out += [Mode("int16", "dmx", ["--mode", "int16"]), Mode("int32", "dmx", ["--mode", "int32"])]
    if args.seed:
        # 0.4.0 has no --mantissa-bits: its BFP is M = 6 (counting the leading bit, as dmx's M).
        out += [Mode("bfp (M=6)", "seed", ["bfp"]), Mode("int16", "seed", ["int16"]),
                Mode("int32", "seed", ["int32"])]
    return out


@dataclass
class LossyRow:
    file: str
    dtype: str
    params: int
    original_bytes: int
    mode: Mode
    size: int | None = None
    compress_s: list = field(default_factory=list)
    decompress_s: list = field(default_factory=list)
    failure: str | None = None
    rel_l2: float | None = None
    max_abs: float | None = None
    coded_bits: float | None = None  # stored bits/weight of the tensors with a bound
    entropy: float | None = None  # order-0 bound of the stored symbols, bits/weight
    verify: str | None = None  # dmx verify's verdict
    restored: Path | None = None  # kept for the model-quality evaluation
    val_loss: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.size is not None

    @property
    def bits(self) -> float | None:
        return self.size * 8 / self.params if self.size else None

    def mbps(self, times) -> float | None:
        m = median(times)
        return self.original_bytes / 1e6 / m if m else None

    @property
    def verdict(self) -> str:
        if not self.ok:
            return f"FAIL ({self.failure or 'not run'})"
        return "OK" + (f", {self.verify}" if self.verify else "")


def dmx_info(dmx: Path, archive: Path) -> tuple[float | None, float | None]:
    """(stored bits/weight, order-0 bound) over the tensors that report a bound."""
    info = json.loads(subprocess.run([str(dmx), "info", str(archive), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    params = stored = bound = 0.0
    for f in info.get("files", []):
        for t in f.get("tensors", []):
            e = t.get("entropy_bits_per_weight")
            if e is None or not t.get("params"):
                continue
            params += t["params"]
            stored += t["stored_bytes"] * 8
            bound += e * t["params"]
    return (stored / params, bound / params) if params else (None, None)


def measure(args, path: Path, label: str, mode: Mode, workdir: Path, threads: int,
            keep_dir: Path | None) -> LossyRow:
    st = read_safetensors(path)
    row = LossyRow(label, st.dtype_label, st.params, st.size, mode)
    packed, restored = workdir / "lossy.pack", workdir / "lossy.safetensors"
    dmx = str(args.dmx)
    flags = ["--threads", str(threads), "--force", "--quiet", "--no-sync"]
    if mode.tool == "dmx":
        compress = [dmx, "compress", str(path), str(packed), *mode.flags, *flags]
        decompress = [dmx, "decompress", str(packed), str(restored), *flags]
    else:
        compress = python_cmd("seed", "compress", path, packed, threads=threads,
                              mode=mode.flags[0])
        decompress = python_cmd("seed", "decompress", packed, restored, threads=threads)
    self_timed = mode.tool != "dmx"
    reps = args.slow_reps if mode.tool == "seed" else args.reps
    for _ in range(reps):
        for p in (packed, restored):
            p.unlink(missing_ok=True)
        c = run_measured(compress, self_timed)
        if c.error or not packed.exists():
            row.failure = f"compress: {c.error or 'wrote no output'}"
            return row
        row.compress_s.append(c.seconds)
        row.size = packed.stat().st_size
        d = run_measured(decompress, self_timed)
        if d.error or not restored.exists():
            row.failure = f"decompress: {d.error or 'wrote no output'}"
            return row
        row.decompress_s.append(d.seconds)
    try:
        cmp = compare_values(path, restored)
    except (ValueError, KeyError, OSError) as e:
        row.failure = f"restored file unreadable: {e}"
        return row
    row.rel_l2, row.max_abs = cmp.total.rel_l2, cmp.total.max_abs
    if cmp.problems:
        row.failure = "; ".join(cmp.problems[:2]) + (
            f" (+{len(cmp.problems) - 2} more)" if len(cmp.problems) > 2 else "")
    elif cmp.total.nonfinite_changed:
        row.failure = f"{cmp.total.nonfinite_changed} values became or stopped being NaN/Inf"
    if mode.tool == "dmx":
        try:
            row.coded_bits, row.entropy = dmx_info(args.dmx, packed)
        except (subprocess.CalledProcessError, ValueError) as e:
            print(f"[bench] {label} {mode.name}: dmx info failed ({e})", file=sys.stderr)
        v = subprocess.run([dmx, "verify", str(path), str(packed), "--quiet"],
                           capture_output=True, text=True)
        row.verify = "verify pass" if v.returncode == 0 else f"verify FAIL (exit {v.returncode})"
        if v.returncode != 0 and not row.failure:
            row.failure = f"dmx verify exit {v.returncode}: " + " | ".join(
                (v.stderr or v.stdout).strip().splitlines()[-2:])
    if keep_dir is not None and row.failure is None:
        row.restored = keep_dir / f"{mode.tool}-{mode.label.replace(' ', '_')}.safetensors"
        shutil.copyfile(restored, row.restored)
    return row


def evaluate(args, original: Path, rows: list[LossyRow], log) -> tuple[float | None, str | None]:
    """Validation loss of the original and of every kept restored checkpoint (one process)."""
    tool = args.corpus / EVAL_TOOL
    todo = [r for r in rows if r.restored]
    if not tool.exists():
        return None, f"{tool} missing"
    env = dict(os.environ)
    env.setdefault("TEXT_GLOB", TEXT_GLOB)
    cmd = [sys.executable, str(tool), str(original), *(str(r.restored) for r in todo),
           "--batches", str(args.eval_batches)]
    log(f"eval_gpt.py on {len(todo) + 1} checkpoints ({args.eval_batches} batches)")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log(f"eval_gpt.py took {time.perf_counter() - started:.0f} s")
    losses = eval_losses(proc.stdout)
    if proc.returncode != 0 or str(original) not in losses:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        return None, f"eval_gpt.py exit {proc.returncode}: {tail}"
    for r in todo:
        r.val_loss = losses.get(str(r.restored))
    return losses[str(original)], None


def run(args, workdir: Path, threads: int, log) -> tuple[str, list[LossyRow]]:
    rows: list[LossyRow] = []
    keep = workdir / "eval"
    keep.mkdir(exist_ok=True)
    eval_path = None
    for label in FILES:
        path = args.corpus / f"{label}.safetensors"
        if not path.exists():
            log(f"lossy: {label} missing, skipped")
            continue
        is_eval = label == EVAL_FILE and args.eval_batches > 0
        eval_path = path if is_eval else eval_path
        for mode in modes(args):
            log(f"lossy {label}: {mode.name}")
            rows.append(measure(args, path, label, mode, workdir, threads,
                                keep if is_eval else None))
    base_loss, eval_error = (evaluate(args, eval_path, [r for r in rows if r.file == EVAL_FILE],
                                      log) if eval_path else (None, "not run"))
    return report(rows, threads, args, base_loss, eval_error), rows


COLUMNS = ["file", "dtype", "tool/mode", "bits/weight", "coded bits/w", "entropy bound",
           "rel L2", "max abs err", "compress MB/s", "decompress MB/s", "round trip"]


def report(rows: list[LossyRow], threads: int, args, base_loss, eval_error) -> str:
    lines = [[r.file, r.dtype, r.mode.name, fmt(r.bits, ".3f"), fmt(r.coded_bits, ".3f"),
              fmt(r.entropy, ".3f"), fmt(r.rel_l2, ".2e"), fmt(r.max_abs, ".2e"),
              fmt(r.mbps(r.compress_s), ".1f"), fmt(r.mbps(r.decompress_s), ".1f"), r.verdict]
             for r in rows]
    out = ["## Lossy modes", "",
           f"`dmx compress --mode bfp --mantissa-bits M` (group 32), `--mode int16`, "
           f"`--mode int32`, {threads} threads, medians of {args.reps} runs"
           + (f"; the seed (`dmx-compress` 0.4.0, `compress --mode bfp|int16|int32`, entropy "
              f"zstd, CPU) {args.slow_reps} run(s), timed in-process" if args.seed else "")
           + ". bits/weight = archive bytes × 8 / all parameters; coded bits/w = stored bits "
           "of the tensors that report an entropy bound (the float tensors) per their "
           "parameters; entropy bound = order-0 entropy of the stored symbols from "
           "`dmx info --json` (per tensor `entropy_bits_per_weight`, weighted by parameters). "
           "rel L2 = ‖x−x̂‖/‖x‖ over all float values of the decompressed file, computed in "
           "numpy; max abs err = largest |x−x̂|. Round trip: the restored file must have every "
           "tensor with its name, dtype and shape, non-float tensors unchanged, and, for dmx, "
           "pass `dmx verify ORIGINAL FILE.dmx` (error within what the archive records).", "",
           md_table(COLUMNS, lines, {3, 4, 5, 6, 7, 8, 9})]

    q = [r for r in rows if r.file == EVAL_FILE and r.ok]
    out += ["", "### Model quality on the corpus GPT (validation loss)", ""]
    if base_loss is None:
        out.append(f"Not measured: {eval_error}.")
    else:
        out.append(f"`{EVAL_TOOL}` (held-out Perl text, fixed batches, {args.eval_batches} "
                   f"batches of 16 × 128 bytes) on `{EVAL_FILE}` original and after each mode's "
                   "round trip.")
        out.append("")
        qlines = [["original", "-", "0", f"{base_loss:.5f}", "-"]]
        for r in q:
            qlines.append([r.mode.name, fmt(r.bits, ".3f"), fmt(r.rel_l2, ".2e"),
                           fmt(r.val_loss, ".5f"),
                           fmt(r.val_loss and r.val_loss - base_loss, "+.5f")])
        out.append(md_table(["mode", "bits/weight", "rel L2", "val loss", "Δ loss"], qlines,
                            {1, 2, 3, 4}))

    # Targets of issue 3.
    summary = []
    for file in dict.fromkeys(r.file for r in rows):
        fr = {r.mode.name: r for r in rows if r.file == file}
        parts = []
        m7 = fr.get("dmx bfp M=7")
        if m7 and m7.ok:
            parts.append(f"BFP M=7 {m7.bits:.3f} bits/weight ({m7.coded_bits or 0:.3f} on the "
                         f"float tensors), rel L2 {m7.rel_l2:.2e}")
        for mine, seed in (("dmx bfp M=6", "seed 0.4.0 bfp (M=6)"),
                           ("dmx int16", "seed 0.4.0 int16"), ("dmx int32", "seed 0.4.0 int32")):
            a, b = fr.get(mine), fr.get(seed)
            if not (a and b):
                continue
            if not b.ok:
                parts.append(f"{seed} FAIL ({b.failure})")
            elif a.ok:
                saving = 100 * (1 - a.size / b.size)
                parts.append(f"{mine} {a.bits:.3f} b/w at rel L2 {a.rel_l2:.2e} vs {seed} "
                             f"{b.bits:.3f} at {b.rel_l2:.2e} ("
                             + (f"{saving:.1f} % fewer bits" if saving >= 0 else
                                f"{-saving:.1f} % MORE bits") + ")")
        seed_bfp = fr.get("seed 0.4.0 bfp (M=6)")
        if seed_bfp and seed_bfp.ok:
            # At equal error: the smallest dmx BFP whose error is no larger than the seed's.
            fits = [r for name, r in fr.items() if name.startswith("dmx bfp") and r.ok
                    and r.rel_l2 <= seed_bfp.rel_l2]
            if fits:
                best = min(fits, key=lambda r: r.size)
                parts.append(f"at no more error than the seed's BFP: {best.mode.name} "
                             f"{best.bits:.3f} b/w ({100 * (1 - best.size / seed_bfp.size):.1f} % "
                             f"fewer bits, rel L2 {best.rel_l2:.2e})")
        if parts:
            summary.append(f"- {file}: " + "; ".join(parts))
    if summary:
        out += ["", "### dmx against the targets", "", *summary]
    return "\n".join(out)

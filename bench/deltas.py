"""Delta table: dmx delta-compress against XOR + zstd, ZipNN's delta and plain dmx compress.

Part of bench.py (see bench/README.md). Every method codes TARGET given BASE; every result is
reconstructed and checked: byte for byte for the lossless methods, relative L2 error of the
restored values for the quantized ones.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common import ZIPNN_DTYPES, compare_files, fmt, md_table, median, python_cmd, run_measured
from stinfo import COMPONENT_ORDER, component, compare_values, delta_bound, read_safetensors

# (base, target, kind) under the corpus.
PAIRS = [
    ("gpt/run/step_00300", "gpt/run/step_00400", "weights, 100 steps"),
    ("gpt/run/step_00400", "gpt/run/step_00500", "weights, 100 steps"),
    ("gpt/run/step_00500", "gpt/run/step_00600", "weights, 100 steps"),
    ("gpt/run/step_00600", "gpt/run/tuned_from_00600", "weights, fine-tune"),
    ("gpt/run_full/step_00500", "gpt/run_full/step_00600", "full (weights + AdamW), 100 steps"),
]


@dataclass
class Method:
    name: str
    compress: callable  # (base, target, out, threads) -> argv
    reconstruct: callable  # (base, delta, out, threads) -> argv
    self_timed: bool
    lossless: bool
    parts: callable  # (delta path, run report, target) -> {component: bytes}
    slow: bool = False  # measured with --slow-reps


@dataclass
class DeltaRow:
    pair: str
    kind: str
    method: Method
    target_bytes: int
    params: int
    component_params: dict
    component_bytes: dict
    size: int | None = None
    parts: dict = field(default_factory=dict)
    compress_s: list = field(default_factory=list)
    reconstruct_s: list = field(default_factory=list)
    failure: str | None = None
    rel_l2: dict = field(default_factory=dict)  # component -> rel L2 (quantized methods)
    zeroed: dict = field(default_factory=dict)  # component -> fraction of non-zeros restored as 0
    max_abs: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.size is not None

    def bits(self, nbytes: int | None, params: int) -> float | None:
        return nbytes * 8 / params if nbytes is not None and params else None

    @property
    def verdict(self) -> str:
        if not self.ok:
            return f"FAIL ({self.failure or 'not run'})"
        if self.method.lossless:
            return "OK (byte-exact)"
        return f"OK (rel L2 {self.rel_l2.get('all', float('nan')):.2e})"


def dmx_parts_delta(dmx: Path):
    def parts(delta: Path, _report, _target) -> dict:
        info = json.loads(subprocess.run([str(dmx), "delta-info", str(delta), "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        return {c: g["stored_bytes"] for c, g in info.get("components", {}).items()}
    return parts


def dmx_parts_archive(dmx: Path):
    def parts(archive: Path, _report, _target) -> dict:
        info = json.loads(subprocess.run([str(dmx), "info", str(archive), "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        out: dict = {}
        for f in info.get("files", []):
            for t in f.get("tensors", []):
                c = component(t["name"])
                out[c] = out.get(c, 0) + t["stored_bytes"]
        return out
    return parts


def peer_parts(_delta, report, _target) -> dict:
    return {c: n for c, n in (report or {}).get("parts", {}).items() if c != "header"}


def methods(args, dtype: str) -> list[Method]:
    dmx = str(args.dmx)
    flags = ["--force", "--quiet", "--no-sync"]

    def dmx_delta(precision):
        return Method(
            f"dmx delta-compress ({precision})",
            lambda b, t, o, n: [dmx, "delta-compress", str(b), str(t), str(o), "--precision",
                                precision, "--threads", str(n), *flags],
            lambda b, d, o, n: [dmx, "delta-reconstruct", str(b), str(d), str(o),
                                "--threads", str(n), *flags],
            self_timed=False, lossless=precision == "lossless", parts=dmx_parts_delta(args.dmx))

    zipnn_dtype = ZIPNN_DTYPES.get(dtype, "float32")
    out = [
        dmx_delta("lossless"),
        dmx_delta("int16"),
        Method("XOR + zstd -19",
               lambda b, t, o, n: python_cmd("xor-zstd", "delta-compress", b, t, o, threads=n,
                                             level=19),
               lambda b, d, o, n: python_cmd("xor-zstd", "delta-reconstruct", b, d, o,
                                             threads=n),
               self_timed=True, lossless=True, parts=peer_parts, slow=True),
        Method(f"ZipNN 0.5.4 delta (XOR, byte/{zipnn_dtype})",
               lambda b, t, o, n: python_cmd("zipnn-delta", "delta-compress", b, t, o,
                                             threads=n, dtype=zipnn_dtype),
               lambda b, d, o, n: python_cmd("zipnn-delta", "delta-reconstruct", b, d, o,
                                             threads=n, dtype=zipnn_dtype),
               self_timed=True, lossless=True, parts=peer_parts),
        Method("dmx compress TARGET (no base)",
               lambda b, t, o, n: [dmx, "compress", str(t), str(o), "--threads", str(n), *flags],
               lambda b, d, o, n: [dmx, "decompress", str(d), str(o), "--threads", str(n),
                                   *flags],
               self_timed=False, lossless=True, parts=dmx_parts_archive(args.dmx)),
    ]
    if args.seed:
        out.append(Method(
            "dmx-compress 0.4.0 (seed) delta int16",
            lambda b, t, o, n: python_cmd("seed-delta", "delta-compress", b, t, o, threads=n,
                                          precision="int16"),
            lambda b, d, o, n: python_cmd("seed-delta", "delta-reconstruct", b, d, o,
                                          threads=n),
            self_timed=True, lossless=False, parts=lambda *_: {}, slow=True))
    return [m for m in out if not args.delta_methods or any(k in m.name for k in args.delta_methods)]


def measure_pair(args, base: Path, target: Path, label: str, kind: str, method: Method,
                 workdir: Path, threads: int) -> DeltaRow:
    st = read_safetensors(target)
    comp_params: dict = {}
    comp_bytes: dict = {}
    for t in st.tensors:
        c = component(t.name)
        comp_params[c] = comp_params.get(c, 0) + t.numel
        comp_bytes[c] = comp_bytes.get(c, 0) + t.nbytes
    row = DeltaRow(label, kind, method, st.size, st.params, comp_params, comp_bytes)
    delta, restored = workdir / "delta", workdir / "restored.safetensors"
    reps = args.slow_reps if method.slow else args.reps
    for _ in range(reps):
        for p in (delta, restored):
            p.unlink(missing_ok=True)
        c = run_measured(method.compress(base, target, delta, threads), method.self_timed)
        if c.error or not delta.exists():
            row.failure = f"compress: {c.error or 'wrote no output'}"
            return row
        row.compress_s.append(c.seconds)
        row.size = delta.stat().st_size
        if not row.parts:
            try:
                row.parts = method.parts(delta, c.report, target)
            except (subprocess.CalledProcessError, ValueError, KeyError) as e:
                row.parts = {}
                print(f"[bench] {label}: {method.name}: no per-component sizes ({e})",
                      flush=True)
        r = run_measured(method.reconstruct(base, delta, restored, threads), method.self_timed)
        if r.error or not restored.exists():
            row.failure = f"reconstruct: {r.error or 'wrote no output'}"
            return row
        row.reconstruct_s.append(r.seconds)
        if method.lossless:
            mismatch = compare_files(target, restored)
            if mismatch:
                row.failure = f"mismatch: {mismatch}"
                return row
        else:
            cmp = compare_values(target, restored)
            if cmp.problems:
                row.failure = "; ".join(cmp.problems[:3]) + (
                    f" (+{len(cmp.problems) - 3} more)" if len(cmp.problems) > 3 else "")
                return row
            row.rel_l2 = {c: e.rel_l2 for c, e in cmp.errors.items()}
            row.zeroed = {c: e.zeroed / e.params for c, e in cmp.errors.items() if e.params}
            row.max_abs = cmp.total.max_abs
            if cmp.total.nonfinite_changed:
                row.failure = f"{cmp.total.nonfinite_changed} non-finite values changed"
    return row


def run(args, workdir: Path, threads: int, log) -> tuple[str, list[DeltaRow]]:
    rows: list[DeltaRow] = []
    bounds: dict = {}
    for base_label, target_label, kind in PAIRS:
        base = args.corpus / f"{base_label}.safetensors"
        target = args.corpus / f"{target_label}.safetensors"
        if not (base.exists() and target.exists()):
            log(f"delta pair {base_label} -> {target_label}: missing, skipped")
            continue
        label = f"{base_label} → {Path(target_label).name}"
        dtype = read_safetensors(target).bytes_by_dtype().most_common(1)[0][0]
        for m in methods(args, dtype):
            log(f"delta {label}: {m.name}")
            rows.append(measure_pair(args, base, target, label, kind, m, workdir, threads))
        bounds[label] = delta_bound(base, target)
    return report(rows, threads, args, bounds), rows


COLUMNS = ["pair", "kind", "method", "bytes", "bits/param", "% of target", "vs ZipNN delta",
           "compress s", "reconstruct s", "round trip"]


BOUND_NAME = "order-0 bound (order-preserving difference, bit length)"


def report(rows: list[DeltaRow], threads: int, args, bounds: dict) -> str:
    lines = []
    for i, r in enumerate(rows):
        zipnn = next((z for z in rows if z.pair == r.pair and z.method.name.startswith("ZipNN")
                      and z.ok), None)
        vs = (f"{r.size / zipnn.size:.3f}×" if zipnn and r.size and r is not zipnn
              else "-")
        lines.append([r.pair, r.kind, r.method.name, fmt(r.size, ",d"),
                      fmt(r.bits(r.size, r.params), ".3f"),
                      fmt(r.size and 100 * r.size / r.target_bytes, ".2f"), vs,
                      fmt(median(r.compress_s), ".2f"), fmt(median(r.reconstruct_s), ".2f"),
                      r.verdict])
        if r.pair in bounds and (i + 1 == len(rows) or rows[i + 1].pair != r.pair):
            b = bounds[r.pair]["all"]
            lines.append([r.pair, r.kind, BOUND_NAME, "-", f"{b:.3f}",
                          f"{100 * b * r.params / 8 / r.target_bytes:.2f}",
                          f"{b * r.params / 8 / zipnn.size:.3f}×" if zipnn else "-",
                          "-", "-", "-"])
    out = ["## Deltas between checkpoints", "",
           f"Each method stores TARGET given BASE, {threads} threads; times are medians of "
           f"{args.reps} runs ({args.slow_reps} for XOR + zstd -19 and the seed), whole "
           "process for dmx, in-process (read → code → write) for the Python peers. "
           "bits/param = stored bytes × 8 / target parameters; % of target = of the target "
           "file's bytes. Lossless rows are reconstructed and compared byte for byte; int16 "
           "rows report the relative L2 error ‖x−x̂‖/‖x‖ of the reconstruction against the "
           "target over all float values. The bound row: per float tensor, both bit patterns "
           "mapped to order-preserving integers, their difference zigzagged, its bit length "
           "coded at its empirical per-tensor order-0 entropy and the bits below the leading "
           "one raw (header excluded): what a context-free coder of that difference needs.",
           "",
           md_table(COLUMNS, lines, {3, 4, 5, 6, 7, 8})]

    # Per component, for pairs with more than one component.
    comp_lines = []
    for i, r in enumerate(rows):
        comps = [c for c in COMPONENT_ORDER if c in r.component_params]
        if len(comps) < 2:
            continue
        last_of_pair = i + 1 == len(rows) or rows[i + 1].pair != r.pair
        for c in comps:
            nbytes = r.parts.get(c)
            comp_lines.append([
                r.pair, r.method.name, c, f"{r.component_params[c]:,}", fmt(nbytes, ",d"),
                fmt(r.bits(nbytes, r.component_params[c]), ".3f"),
                fmt(nbytes and 100 * nbytes / r.component_bytes[c], ".2f"),
                fmt(r.rel_l2.get(c), ".2e") if not r.method.lossless else
                ("exact" if r.ok else "-"),
                fmt(r.zeroed.get(c) and 100 * r.zeroed[c], ".2f")
                if not r.method.lossless else "0",
                "OK" if r.ok else "FAIL"])
        if last_of_pair and r.pair in bounds:
            for c in comps:
                b = bounds[r.pair].get(c)
                comp_lines.append([r.pair, BOUND_NAME, c, f"{r.component_params[c]:,}", "-",
                                   fmt(b, ".3f"),
                                   fmt(b and 100 * b * r.component_params[c] / 8
                                       / r.component_bytes[c], ".2f"), "-", "-", "-"])
    if comp_lines:
        out += ["", "### Per component (full checkpoints)", "",
                "Sizes per checkpoint component: dmx from `dmx delta-info --json` (and "
                "`dmx info --json` for the plain compress), the XOR peers from the size of "
                "each component's separately compressed stream. Header and index bytes are "
                "counted only in the totals above.", "",
                md_table(["pair", "method", "component", "params", "bytes", "bits/param",
                          "% of raw", "rel L2", "% restored as 0", "round trip"], comp_lines,
                         {3, 4, 5, 6, 7, 8})]

    # Summary lines: the targets of issue 4.
    summary = []
    for pair in dict.fromkeys(r.pair for r in rows):
        pr = [r for r in rows if r.pair == pair]
        get = lambda prefix: next((r for r in pr if r.method.name.startswith(prefix)), None)  # noqa: E731
        d, z, x, c = (get("dmx delta-compress (lossless)"), get("ZipNN"), get("XOR"),
                      get("dmx compress TARGET"))
        q, s = get("dmx delta-compress (int16)"), get("dmx-compress 0.4.0")
        parts = []
        if d and d.ok:
            parts.append(f"{d.bits(d.size, d.params):.3f} bits/param")
            for other, name in ((z, "ZipNN delta"), (x, "XOR + zstd -19")):
                if other and other.ok:
                    parts.append(f"{100 * (1 - d.size / other.size):.1f} % smaller than {name}"
                                 if d.size <= other.size else
                                 f"{100 * (d.size / other.size - 1):.1f} % LARGER than {name}")
                elif other:
                    parts.append(f"{name} failed its round trip")
            if c and c.ok:
                parts.append(f"{d.size - c.size:+,} B against dmx compress TARGET")
        elif d:
            parts.append(f"dmx lossless delta FAIL ({d.failure})")
        if q and q.ok and s and s.ok:
            parts.append(f"int16: dmx {q.size:,} B at rel L2 {q.rel_l2['all']:.2e} vs seed "
                         f"{s.size:,} B at {s.rel_l2['all']:.2e}")
        summary.append(f"- {pair}: " + "; ".join(parts))
    out += ["", "### dmx lossless delta against the others", "", *summary]
    return "\n".join(out)

"""Size benchmark for PyTorch checkpoints (issue 14): dmx on `.pt` files and Trainer folders,
beside zstd -3 / -19 and ZipNN on the same bytes, all measured in one run.

Run from the repository root, after `cargo build --release -p dmx-cli` (and
`python bench/pt_corpus.py` for the corpus):

    python bench/pt_bench.py [--corpus /work/ptcorpus] [--dmx target/release/dmx]

For each input (`step_00600.pt`, `step_00600.safetensors`, `checkpoint-600/optimizer.pt` and
the whole `checkpoint-600/` folder) it prints bytes, bits per parameter (parameters as
`dmx info` counts them: elements of the tensors of known dtypes), ratio, compress and
decompress MB/s and peak RSS; every restore is compared byte for byte with the input. Then
the judge of issue 14: the tensors of the `.pt` checkpoint cost at most 1.01x the bits per
parameter of the same tensors saved as `.safetensors` and compressed by dmx, both lossless.
zstd runs through the `zstd` CLI (multi-threaded like dmx: `-T0`) and ZipNN through the
`zipnn` package on the whole file (float32 mode; a folder is tarred first) in a child
process, so that every tool's time and peak RSS are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, run_measured  # noqa: E402

ZIPNN_WORKER = r"""
import sys, time, json, zipnn
op, src, dst = sys.argv[1:4]
data = open(src, "rb").read()
z = zipnn.ZipNN(bytearray_dtype="float32", input_format="byte", threads=0)
t = time.perf_counter()
out = z.compress(data) if op == "c" else z.decompress(data)
dt = time.perf_counter() - t
open(dst, "wb").write(out)
print(json.dumps({"seconds": dt}))
"""


def same_tree(a: Path, b: Path) -> bool:
    """Whether files (or folders, file by file) `a` and `b` hold identical bytes."""
    if a.is_file():
        return b.is_file() and a.read_bytes() == b.read_bytes()
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def size_of(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def dmx_info(dmx: Path, archive: Path) -> dict:
    out = subprocess.run([str(dmx), "info", "--json", str(archive)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def tensor_cost(info: dict, suffixes: tuple[str, ...]) -> tuple[int, int]:
    """(stored bytes, params) of the tensors of the archive's files ending in `suffixes`."""
    stored = params = 0
    for f in info["files"]:
        if f["path"].endswith(suffixes):
            for t in f["tensors"]:
                stored += t["stored_bytes"]
                params += t["params"]
    return stored, params


def measure(name: str, src: Path, tmp: Path, dmx: Path, params: int) -> list[dict]:
    """Every tool on `src`: rows of the table."""
    rows = []
    size = size_of(src)
    # A folder goes to zstd and ZipNN as one tar stream (what a user would do).
    flat = src
    if src.is_dir():
        flat = tmp / f"{name}.tar"
        with tarfile.open(flat, "w") as t:
            t.add(src, arcname=src.name)

    def row(tool, packed, c, d, ok):
        stored = size_of(packed)
        rows.append({
            "input": name, "tool": tool, "bytes": stored,
            "bits_per_param": stored * 8 / params if params else float("nan"),
            "ratio": size / stored, "comp_mb_s": size / 1e6 / c.seconds,
            "decomp_mb_s": size / 1e6 / d.seconds,
            "rss_mb": max(c.peak_rss_bytes, d.peak_rss_bytes) / 2**20,
            "exact": ok, "error": c.error or d.error,
        })

    packed, back = tmp / f"{name}.dmx", tmp / f"{name}.dmx.out"
    c = run_measured([str(dmx), "compress", "--quiet", "--force", str(src), str(packed)], False)
    d = run_measured([str(dmx), "decompress", "--quiet", "--force", str(packed), str(back)], False)
    row("dmx", packed, c, d, same_tree(src, back))
    for level in (3, 19):
        packed, back = tmp / f"{name}.zst{level}", tmp / f"{name}.zst{level}.out"
        c = run_measured(["zstd", "-q", "-f", "-T0", f"-{level}", str(flat), "-o", str(packed)], False)
        d = run_measured(["zstd", "-q", "-f", "-d", str(packed), "-o", str(back)], False)
        row(f"zstd -{level}", packed, c, d, same_tree(flat, back))
    packed, back = tmp / f"{name}.znn", tmp / f"{name}.znn.out"
    c = run_measured([sys.executable, "-c", ZIPNN_WORKER, "c", str(flat), str(packed)], True)
    d = run_measured([sys.executable, "-c", ZIPNN_WORKER, "d", str(packed), str(back)], True)
    row("ZipNN", packed, c, d, same_tree(flat, back))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/ptcorpus"))
    ap.add_argument("--dmx", type=Path, default=REPO_ROOT / "target" / "release" / "dmx")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = ap.parse_args()
    if not args.dmx.is_file():
        print(f"{args.dmx}: build it with cargo build --release -p dmx-cli", file=sys.stderr)
        return 2
    inputs = [
        ("step_00600.pt", args.corpus / "step_00600.pt"),
        ("step_00600.safetensors", args.corpus / "step_00600.safetensors"),
        ("checkpoint-600/optimizer.pt", args.corpus / "checkpoint-600" / "optimizer.pt"),
        ("checkpoint-600/", args.corpus / "checkpoint-600"),
    ]
    rows, infos = [], {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        for name, src in inputs:
            key = name.replace("/", "_")
            subprocess.run([str(args.dmx), "compress", "--quiet", "--force", str(src),
                            str(tmp / "probe.dmx")], check=True)
            info = dmx_info(args.dmx, tmp / "probe.dmx")
            infos[name] = info
            params = sum(t["params"] for f in info["files"] for t in f["tensors"])
            rows.extend(measure(key, src, tmp, args.dmx, params))
    print(f"{'input':30} {'tool':9} {'bytes':>11} {'bits/param':>10} {'ratio':>6} "
          f"{'comp MB/s':>9} {'dec MB/s':>9} {'RSS MB':>7} exact")
    for r in rows:
        print(f"{r['input']:30} {r['tool']:9} {r['bytes']:>11} {r['bits_per_param']:>10.3f} "
              f"{r['ratio']:>6.3f} {r['comp_mb_s']:>9.1f} {r['decomp_mb_s']:>9.1f} "
              f"{r['rss_mb']:>7.0f} {'yes' if r['exact'] else 'NO'}"
              + (f"  ({r['error']})" if r["error"] else ""))
    pt_b, pt_p = tensor_cost(infos["step_00600.pt"], (".pt",))
    st_b, st_p = tensor_cost(infos["step_00600.safetensors"], (".safetensors",))
    pt_bits, st_bits = pt_b * 8 / pt_p, st_b * 8 / st_p
    verdict = "PASS" if pt_bits <= 1.01 * st_bits else "FAIL"
    print(f"\njudge: tensors of step_00600.pt {pt_bits:.4f} bits/param ({pt_p} params) vs "
          f"step_00600.safetensors {st_bits:.4f} ({st_p} params): "
          f"{pt_bits / st_bits:.4f}x (limit 1.01x) {verdict}")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if verdict == "PASS" and all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

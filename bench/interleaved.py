"""dmx against ZipNN through files, with the repetitions of the two tools interleaved.

    python bench/interleaved.py --dmx target/release/dmx --reps 9 FILE [FILE ...]

On a shared host whose load drifts within minutes, running all repetitions of one tool and
then all of the other (as bench.py does) can put the tools under different loads; here every
repetition runs dmx, then ZipNN, for compress and then for decompress, and the table gives
the medians and their ratio. Both are timed as bench.py times them: dmx as a whole process
(`--threads T --no-sync`, reading and writing files), ZipNN by `bench/peers.py` from reading
the input to writing the output (interpreter start-up and imports excluded). Outputs go to a
temporary folder next to nothing else; the inputs are safetensors files of one float dtype.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZIPNN_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def zipnn_dtype(path: Path) -> str:
    """The ZipNN dtype of a safetensors file whose tensors share one float dtype."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    floats = [d for d in dtypes if d in ZIPNN_DTYPES]
    if len(floats) != 1:
        sys.exit(f"{path}: needs one float dtype, has {sorted(dtypes)}")
    return ZIPNN_DTYPES[floats[0]]


def time_dmx(dmx: str, op: str, src: Path, dst: Path, threads: int) -> float:
    start = time.perf_counter()
    subprocess.run([dmx, op, "--quiet", "--force", "--no-sync", "--threads", str(threads),
                    str(src), str(dst)], check=True)
    return time.perf_counter() - start


def time_zipnn(op: str, src: Path, dst: Path, threads: int, dtype: str) -> float:
    out = subprocess.run([sys.executable, str(HERE / "peers.py"), "zipnn", op, str(src), str(dst),
                          "--threads", str(threads), "--dtype", dtype],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--dmx", default="target/release/dmx")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.reps} interleaved "
          f"repetitions, {args.threads} threads, medians")
    print("| file | MB | dmx compress MB/s | ZipNN | ratio | dmx decompress MB/s | ZipNN | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for f in args.files:
            dtype = zipnn_dtype(f)
            mb = f.stat().st_size / 1e6
            times: dict[str, list[float]] = {k: [] for k in ("dc", "zc", "dd", "zd")}
            for _ in range(args.reps):
                times["dc"].append(time_dmx(args.dmx, "compress", f, t / "a.dmx", args.threads))
                times["zc"].append(time_zipnn("compress", f, t / "a.znn", args.threads, dtype))
                times["dd"].append(time_dmx(args.dmx, "decompress", t / "a.dmx", t / "a.st",
                                            args.threads))
                times["zd"].append(time_zipnn("decompress", t / "a.znn", t / "b.st",
                                              args.threads, dtype))
            if (t / "a.st").read_bytes() != f.read_bytes():
                sys.exit(f"{f}: dmx did not restore the file")
            rate = {k: mb / statistics.median(v) for k, v in times.items()}
            print(f"| {f.name} | {mb:.1f} | {rate['dc']:.1f} | {rate['zc']:.1f} | "
                  f"{rate['dc'] / rate['zc']:.2f}x | {rate['dd']:.1f} | {rate['zd']:.1f} | "
                  f"{rate['dd'] / rate['zd']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of the Python package against the CLI, safetensors and ZipNN.

    python python/bench/load_save.py MODEL.safetensors [--threads 2] [--reps 5] [--dmx PATH]

Measures, on one model and one thread count, each case in a fresh interpreter:
  - load: ``dmx.torch.load_file`` of the lossless archive; ``dmx decompress ARCHIVE -`` (the
    CLI, output to /dev/null); ``safetensors.torch.load_file`` of the uncompressed file (page
    cache warm); ZipNN 0.5.4 (byte mode, the model's dtype): read the ``.znn`` file,
    ``ZipNN.decompress``, ``safetensors.torch.load`` of the bytes.
  - save: ``dmx.torch.save_file`` of the state dict vs ``dmx compress`` of the file (both
    fsync the output, same threads); the archives must be identical.
Times are the median of ``--reps`` runs; throughput is the model's size over it. "Extra RSS" is
the peak resident set during the runs (VmHWM, reset before them) minus the resident set
once the modules are imported and, for save, the state dict loaded; for the CLI, the
command's whole peak RSS. Prints a Markdown table. ZipNN is optional
(``pip install zipnn==0.5.4``)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CASE = r"""
import json, os, resource, subprocess, sys, time
case, model, archive, znn, out, threads, reps, dmx_bin = sys.argv[1:9]
threads, reps = int(threads), int(reps)
if not case.startswith("cli"):  # the CLI runs from a bare interpreter (a fork copies RSS)
    import torch, safetensors.torch, dmx, dmx.torch
def status(key):  # kB fields of /proc/self/status
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024
state = None
if case == "dmx_save":
    state = safetensors.torch.load_file(model)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    if case == "dmx_load":
        r = dmx.torch.load_file(archive, threads=threads)
    elif case == "st_load":
        r = safetensors.torch.load_file(model)
    elif case == "st_load_read":  # the same, then every byte read once (the mapping paged in)
        r = safetensors.torch.load_file(model)
        for t in r.values():
            t.reshape(-1).view(torch.uint8).max() if t.numel() else None
    elif case == "zipnn_load":
        from zipnn import ZipNN
        with open(znn, "rb") as f:
            data = f.read()
        raw = ZipNN(input_format="byte", bytearray_dtype=os.environ["ZDTYPE"], threads=threads).decompress(data)
        r = safetensors.torch.load(bytes(raw))
        del data, raw
    elif case == "dmx_save":
        r = dmx.torch.save_file(state, out, threads=threads, force=True)
    elif case == "cli_load":
        subprocess.run([dmx_bin, "decompress", archive, "-", "-q", "-t", str(threads)], check=True, stdout=subprocess.DEVNULL)
    elif case == "cli_save":
        subprocess.run([dmx_bin, "compress", model, out, "-q", "-f", "-t", str(threads)], check=True)
    times.append(time.perf_counter() - t0)
    r = None
peak = status("VmHWM")
if case.startswith("cli"):
    peak, base = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 0.0
print(json.dumps({"times": times, "peak": peak, "base": base}))
"""


def run_case(case: str, args, paths: dict[str, str], env: dict[str, str]) -> dict:
    argv = [sys.executable, "-c", CASE, case, paths["model"], paths["archive"], paths["znn"],
            paths["out"], str(args.threads), str(args.reps), args.dmx]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{case} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dmx", default=shutil.which("dmx") or "dmx", help="the dmx binary")
    ap.add_argument("--zipnn-dtype", default="bfloat16")
    args = ap.parse_args()
    size = os.path.getsize(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        name = os.path.splitext(os.path.basename(args.model))[0]
        paths = {
            "model": args.model,
            "archive": os.path.join(tmp, name + ".dmx"),
            "znn": os.path.join(tmp, name + ".znn"),
            "out": os.path.join(tmp, "py", name + ".dmx"),
        }
        os.makedirs(os.path.dirname(paths["out"]))
        subprocess.run([args.dmx, "compress", args.model, paths["archive"], "-q"], check=True)
        env = dict(os.environ, ZDTYPE=args.zipnn_dtype)
        cases = ["dmx_load", "cli_load", "st_load", "st_load_read", "dmx_save", "cli_save"]
        try:
            from zipnn import ZipNN

            with open(args.model, "rb") as f:
                packed = ZipNN(input_format="byte", bytearray_dtype=args.zipnn_dtype,
                               threads=args.threads).compress(f.read())
            with open(paths["znn"], "wb") as f:
                f.write(packed)
            cases.insert(3, "zipnn_load")
        except ImportError:
            print("zipnn not installed: skipping ZipNN", file=sys.stderr)
        res = {c: run_case(c, args, paths, env) for c in cases}
        subprocess.run([args.dmx, "compress", args.model, paths["archive"], "-q", "-f"], check=True)
        same = open(paths["out"], "rb").read() == open(paths["archive"], "rb").read()
    print(f"model: {args.model} ({size / 1e6:.1f} MB), threads {args.threads}, "
          f"median of {args.reps}; save_file archive identical to `dmx compress`: {same}\n")
    print("| what | median s | MB/s | extra RSS MiB |")
    print("|---|---:|---:|---:|")
    label = {
        "dmx_load": "`dmx.torch.load_file` (archive)",
        "cli_load": "`dmx decompress ARCHIVE -` (CLI)",
        "st_load": "`safetensors.torch.load_file` (uncompressed)",
        "st_load_read": "`safetensors.torch.load_file`, then every byte read (uncompressed)",
        "zipnn_load": "ZipNN 0.5.4 decompress + `safetensors.torch.load`",
        "dmx_save": "`dmx.torch.save_file` (state dict)",
        "cli_save": "`dmx compress` (CLI, file)",
    }
    for c, r in res.items():
        t = statistics.median(r["times"])
        extra = r["peak"] - r["base"]
        print(f"| {label[c]} | {t:.3f} | {size / t / 1e6:.0f} | {extra:.0f} |")
    ratio = lambda a, b: statistics.median(res[b]["times"]) / statistics.median(res[a]["times"])  # noqa: E731
    print(f"\nload_file / CLI decompress throughput: {ratio('dmx_load', 'cli_load'):.2f}x; "
          f"save_file / CLI compress: {ratio('dmx_save', 'cli_save'):.2f}x")


if __name__ == "__main__":
    main()

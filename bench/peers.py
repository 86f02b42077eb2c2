"""One file-to-file operation of a Python peer codec, run in its own process by bench.py.

    python peers.py TOOL OP INPUT OUTPUT --threads T [--level L] [--dtype D] [--mode M]
    python peers.py TOOL delta-compress BASE TARGET OUT --threads T [...]
    python peers.py TOOL delta-reconstruct BASE DELTA OUT --threads T [...]

TOOL is zstd, zipnn or seed (the dmx-compress PyPI package); OP is compress, decompress,
or baseline (import the codec and exit: the process's RSS before any data is touched).
Delta tools: xor-zstd (XOR of the raw bits, then zstd), zipnn-delta (ZipNN 0.5.4's own
delta API: `ZipNN(delta_compressed_type="byte")`, which XORs the two byte streams and
compresses the result with ZipNN) and seed-delta (`dmx_cli.delta_compress`, --precision).
Prints {"seconds": ...} on stdout: the time to read the inputs, run the codec and write the
output, so that interpreter start-up and imports (seconds, for torch) are not charged to it.
Byte codecs also report "input_mutated": whether the codec wrote into its input buffer;
delta tools report "parts": the stored bytes per component (header first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time
from pathlib import Path


def zstd_codec(args):
    import zstandard

    # python-zstandard: threads=0 compresses on the calling thread; N > 0 uses N workers.
    threads = 0 if args.threads == 1 else args.threads
    compressor = zstandard.ZstdCompressor(level=args.level, threads=threads)
    decompressor = zstandard.ZstdDecompressor()  # zstd decompression is single-threaded
    return compressor.compress, decompressor.decompress


def zipnn_codec(args):
    from zipnn import ZipNN

    def make():
        return ZipNN(input_format="byte", bytearray_dtype=args.dtype, threads=args.threads)

    return (lambda data: make().compress(data)), (lambda data: make().decompress(data))


def seed_codec(args):
    import dmx_cli  # from the dmx-compress package; works on files, not bytes

    def compress(src: Path, dst: Path):
        # entropy="zstd" is the CLI's default (the Python function defaults to "lpc").
        dmx_cli.compress_file(str(src), str(dst), mode=args.mode, entropy="zstd",
                              use_gpu=False, parallel_workers=args.threads)

    def decompress(src: Path, dst: Path):
        dmx_cli.decompress_file(str(src), str(dst), use_gpu=False)

    return compress, decompress


def file_digest(path: Path) -> bytes:
    """blake2b of a file, read in chunks so that it adds nothing to the peak RSS."""
    digest = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


BYTE_CODECS = {"zstd": zstd_codec, "zipnn": zipnn_codec}
FILE_CODECS = {"seed": seed_codec}


# --------------------------------------------------------------------------- deltas
#
# xor-zstd and zipnn-delta store: magic, the number of parts, then per part its length and
# bytes. Part 0 is the target's safetensors header (length prefix + JSON), zstd-19; then one
# part per checkpoint component (weights, exp_avg, exp_avg_sq, other_state, in that order,
# those present): the target's tensor bytes of that component, in file order, XORed with the
# base's bytes of the same-named tensors (zeros where the base has no such tensor or it has
# another size), then compressed. The files need not have equal headers or lengths (the
# fine-tune pair's headers differ in metadata): tensors are matched by name, as a delta tool
# must, instead of XORing two files whose data sections start at different offsets.

XOR_MAGIC = b"XDLT"


def _layout(raw: bytes):
    """(header bytes incl. length prefix, [(name, begin, end)] absolute offsets, in file order)."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    spans = sorted((v["data_offsets"][0] + 8 + n, v["data_offsets"][1] + 8 + n, k)
                   for k, v in header.items())
    return raw[:8 + n], [(k, b, e) for b, e, k in spans]


def _components(target: bytes, base: bytes):
    """Per component (in order): (target bytes, aligned base bytes, [(begin, end)])."""
    from stinfo import COMPONENT_ORDER, component

    _, t_spans = _layout(target)
    _, b_spans = _layout(base)
    b_by_name = {k: (b, e) for k, b, e in b_spans}
    parts = {}
    for name, begin, end in t_spans:
        t_part, b_part, spans = parts.setdefault(component(name), ([], [], []))
        t_part.append(target[begin:end])
        bb = b_by_name.get(name)
        b_part.append(base[bb[0]:bb[1]] if bb and bb[1] - bb[0] == end - begin
                      else bytes(end - begin))
        spans.append((begin, end))
    return [(c, b"".join(parts[c][0]), b"".join(parts[c][1]), parts[c][2])
            for c in COMPONENT_ORDER if c in parts]


def _xor(a: bytes, b: bytes) -> bytes:
    import numpy as np
    return np.bitwise_xor(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)).tobytes()


def xor_delta_codec(args):
    """(compress(target, base) -> bytes, decompress(blob, base) -> bytes) of one component."""
    import zstandard

    if args.tool == "xor-zstd":
        threads = 0 if args.threads == 1 else args.threads
        cctx = zstandard.ZstdCompressor(level=args.level, threads=threads)
        dctx = zstandard.ZstdDecompressor()
        return (lambda t, b: cctx.compress(_xor(t, b))), (lambda blob, b: _xor(dctx.decompress(blob), b))
    from zipnn import ZipNN

    def make():
        return ZipNN(input_format="byte", bytearray_dtype=args.dtype, threads=args.threads,
                     delta_compressed_type="byte")

    return (lambda t, b: bytes(make().compress(t, delta_second_data=b))), \
        (lambda blob, b: bytes(make().decompress(blob, delta_second_data=b)))


def xor_delta_compress(args, base_path: Path, target_path: Path, out_path: Path) -> dict:
    import zstandard

    compress, _ = xor_delta_codec(args)
    base, target = base_path.read_bytes(), target_path.read_bytes()
    header, _ = _layout(target)
    parts = [("header", zstandard.ZstdCompressor(level=19).compress(header))]
    parts += [(c, compress(t, b)) for c, t, b, _ in _components(target, base)]
    with open(out_path, "wb") as f:
        f.write(XOR_MAGIC + struct.pack("<I", len(parts)))
        for _, blob in parts:
            f.write(struct.pack("<Q", len(blob)) + blob)
    return {"parts": {c: len(blob) for c, blob in parts}}


def xor_delta_reconstruct(args, base_path: Path, delta_path: Path, out_path: Path) -> dict:
    import zstandard

    _, decompress = xor_delta_codec(args)
    base, blob = base_path.read_bytes(), delta_path.read_bytes()
    if blob[:4] != XOR_MAGIC:
        raise ValueError("not an XOR delta")
    (count,), pos, parts = struct.unpack("<I", blob[4:8]), 8, []
    for _ in range(count):
        (n,) = struct.unpack("<Q", blob[pos:pos + 8])
        parts.append(blob[pos + 8:pos + 8 + n])
        pos += 8 + n
    header = zstandard.ZstdDecompressor().decompress(parts[0])
    # Lay the target out from its header, with zeros as the placeholder for its data.
    (n,) = struct.unpack("<Q", header[:8])
    spec = json.loads(header[8:])
    spec.pop("__metadata__", None)
    data_len = max((v["data_offsets"][1] for v in spec.values()), default=0)
    skeleton = header + bytes(data_len)
    out = bytearray(skeleton)
    comps = _components(skeleton, base)
    if len(comps) != len(parts) - 1:
        raise ValueError("component count differs from the delta's")
    for (_, _, aligned_base, spans), part in zip(comps, parts[1:]):
        data = decompress(part, aligned_base)
        pos = 0
        for begin, end in spans:
            out[begin:end] = data[pos:pos + end - begin]
            pos += end - begin
    out_path.write_bytes(out)
    return {}


def seed_delta(args, op: str, a: Path, b: Path, out: Path) -> dict:
    import dmx_cli

    if op == "delta-compress":
        dmx_cli.delta_compress(str(a), str(b), str(out), precision=args.precision)
    else:
        dmx_cli.delta_reconstruct(str(a), str(b), str(out))
    return {}


DELTA_TOOLS = ("xor-zstd", "zipnn-delta", "seed-delta")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tool", choices=[*BYTE_CODECS, *FILE_CODECS, *DELTA_TOOLS])
    parser.add_argument("op", choices=["compress", "decompress", "baseline",
                                       "delta-compress", "delta-reconstruct"])
    parser.add_argument("paths", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--mode", default="auto", help="seed: compress --mode")
    parser.add_argument("--precision", default="int16", help="seed-delta: --precision")
    args = parser.parse_args()
    delta_op = args.op.startswith("delta-")
    if delta_op != (args.tool in DELTA_TOOLS) and args.op != "baseline":
        parser.error(f"{args.tool} does not do {args.op}")
    if len(args.paths) != (3 if delta_op else 2):
        parser.error("compress/decompress take INPUT OUTPUT; deltas take BASE X OUTPUT")
    if delta_op:
        real_stdout, sys.stdout = sys.stdout, sys.stderr  # the seed prints progress
        if args.tool == "seed-delta":
            import dmx_cli  # noqa: F401  (import outside the timed part)
        else:
            xor_delta_codec(args)
        start = time.perf_counter()
        if args.tool == "seed-delta":
            report = seed_delta(args, args.op, *args.paths)
        elif args.op == "delta-compress":
            report = xor_delta_compress(args, *args.paths)
        else:
            report = xor_delta_reconstruct(args, *args.paths)
        seconds = time.perf_counter() - start
        sys.stdout = real_stdout
        print(json.dumps({"seconds": seconds, **report}))
        return 0
    args.input, args.output = args.paths

    report = {}
    if args.tool in BYTE_CODECS:
        compress, decompress = BYTE_CODECS[args.tool](args)
        if args.op == "baseline":
            return 0
        codec = compress if args.op == "compress" else decompress
        input_digest = file_digest(args.input)
        start = time.perf_counter()
        data = args.input.read_bytes()
        args.output.write_bytes(codec(data))
        seconds = time.perf_counter() - start
        # A codec must not write into the (immutable) bytes it was handed.
        report["input_mutated"] = hashlib.blake2b(data).digest() != input_digest
    else:
        compress, decompress = FILE_CODECS[args.tool](args)
        if args.op == "baseline":
            return 0
        # The seed prints progress; keep stdout for our JSON line.
        real_stdout, sys.stdout = sys.stdout, sys.stderr
        start = time.perf_counter()
        (compress if args.op == "compress" else decompress)(args.input, args.output)
        seconds = time.perf_counter() - start
        sys.stdout = real_stdout
    print(json.dumps({"seconds": seconds, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One file-to-file operation of a Python peer codec, run in its own process by bench.py.

    python peers.py TOOL OP INPUT OUTPUT --threads T [--level L] [--dtype D]

TOOL is zstd, zipnn or seed (the dmx-compress PyPI package); OP is compress, decompress,
or baseline (import the codec and exit: the process's RSS before any data is touched).
Prints {"seconds": ...} on stdout: the time to read INPUT, run the codec and write OUTPUT,
so that interpreter start-up and imports (seconds, for torch) are not charged to the codec.
Byte codecs also report "input_mutated": whether the codec wrote into its input buffer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
        dmx_cli.compress_file(str(src), str(dst), mode="auto", entropy="zstd",
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tool", choices=[*BYTE_CODECS, *FILE_CODECS])
    parser.add_argument("op", choices=["compress", "decompress", "baseline"])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

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

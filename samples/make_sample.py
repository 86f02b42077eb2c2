#!/usr/bin/env python3
"""Cut samples/minilm_l1_bf16.safetensors out of the all-MiniLM-L6-v2 BF16 weights.

Standard library only. Keeps `__metadata__`, the I64 `embeddings.position_ids` buffer, the
small embedding tensors (LayerNorm, position and token-type embeddings; not the 23 MB word
embeddings) and every tensor of encoder layer 0. Tensors keep their original order and bytes;
the header is compact JSON padded with spaces to a multiple of 8, like the source file.

    python3 samples/make_sample.py [SOURCE] [OUTPUT]

SOURCE defaults to /work/shared/corpus/models/minilm_l6_bf16.safetensors, OUTPUT to
samples/minilm_l1_bf16.safetensors next to this script.
"""

import json
import os
import struct
import sys

DEFAULT_SOURCE = "/work/shared/corpus/models/minilm_l6_bf16.safetensors"
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "minilm_l1_bf16.safetensors")
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}
KEEP_EXACT = {
    "embeddings.position_ids",
    "embeddings.LayerNorm.bias",
    "embeddings.LayerNorm.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
}
KEEP_PREFIX = "encoder.layer.0."


def keep(name):
    return name in KEEP_EXACT or name.startswith(KEEP_PREFIX)


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SOURCE
    output = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUTPUT
    with open(source, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data_start = 8 + n
        tensors = sorted(
            ((v["data_offsets"], k, v) for k, v in header.items()
             if k != "__metadata__" and keep(k)),
            key=lambda t: t[0],
        )
        out_header = {}
        if "__metadata__" in header:
            out_header["__metadata__"] = header["__metadata__"]
        blobs = []
        offset = 0
        for (start, end), name, info in tensors:
            count = 1
            for d in info["shape"]:
                count *= d
            size = end - start
            if size != count * DTYPE_BYTES[info["dtype"]]:
                raise SystemExit(f"{name}: size {size} disagrees with dtype and shape")
            f.seek(data_start + start)
            blob = f.read(size)
            if len(blob) != size:
                raise SystemExit(f"{name}: source file is truncated")
            out_header[name] = {
                "dtype": info["dtype"],
                "shape": info["shape"],
                "data_offsets": [offset, offset + size],
            }
            blobs.append(blob)
            offset += size
    text = json.dumps(out_header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(output, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    print(f"{output}: {len(tensors)} tensors, {8 + len(text) + offset} bytes")


if __name__ == "__main__":
    main()

"""Safetensors header parsing and the order-0 entropy bound used by bench.py."""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Float layouts: dtype -> (total bits, exponent bits).
FLOAT_LAYOUTS = {"BF16": (16, 8), "F16": (16, 5), "F32": (32, 8), "F64": (64, 11)}

# Bytes per element for every safetensors dtype we may meet.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}

# The bound codes sign + exponent + this many top mantissa bits as one symbol.
BOUND_MANTISSA_BITS = 2


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    numel: int
    begin: int  # byte offset from the start of the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsFile:
    path: Path
    size: int
    data_offset: int  # 8-byte length prefix + JSON header
    tensors: tuple[Tensor, ...]

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    def bytes_by_dtype(self) -> Counter:
        """Bytes of tensor data per dtype, largest first when iterated via most_common()."""
        counts: Counter = Counter()
        for t in self.tensors:
            counts[t.dtype] += t.nbytes
        return counts

    @property
    def dtype_label(self) -> str:
        """E.g. "BF16+I64": dtypes ordered by how many bytes they hold."""
        return "+".join(d for d, _ in self.bytes_by_dtype().most_common()) or "-"


def read_safetensors(path: Path) -> SafetensorsFile:
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
    tensors = []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors.append(Tensor(name, entry["dtype"], math.prod(entry["shape"]), begin, end))
    tensors.sort(key=lambda t: t.begin)
    return SafetensorsFile(path, path.stat().st_size, 8 + header_len, tuple(tensors))


@dataclass(frozen=True)
class EntropyBound:
    bits: float  # total bound over the float tensors
    float_params: int

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.float_params if self.float_params else float("nan")


def order0_entropy_bound(st: SafetensorsFile) -> EntropyBound:
    """Order-0 bound for the float tensors of a file.

    Each value is split into a symbol (sign, exponent and the top BOUND_MANTISSA_BITS
    mantissa bits) coded at its empirical per-tensor order-0 entropy, and the remaining
    low mantissa bits, counted raw. Non-float tensors and the JSON header are left out.
    """
    data = np.memmap(st.path, dtype=np.uint8, mode="r", offset=st.data_offset)
    total_bits = 0.0
    float_params = 0
    for t in st.tensors:
        layout = FLOAT_LAYOUTS.get(t.dtype)
        if layout is None or t.numel == 0:
            continue
        width, exp_bits = layout
        raw_bits = width - (1 + exp_bits + BOUND_MANTISSA_BITS)
        words = data[t.begin:t.end].view(np.dtype(f"<u{width // 8}"))
        symbols = (words >> words.dtype.type(raw_bits)).astype(np.intp)
        counts = np.bincount(symbols)
        p = counts[counts > 0] / t.numel
        entropy = float(-(p * np.log2(p)).sum())
        total_bits += t.numel * (entropy + raw_bits)
        float_params += t.numel
    return EntropyBound(total_bits, float_params)

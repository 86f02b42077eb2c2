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


# --------------------------------------------------------------------------- values

def component(name: str) -> str:
    """Checkpoint component of a tensor name, as the corpus spells it (and dmx reports it)."""
    if name.startswith(("optim.exp_avg_sq.", "optimizer.exp_avg_sq.")) or name.endswith(".exp_avg_sq"):
        return "exp_avg_sq"
    if name.startswith(("optim.exp_avg.", "optimizer.exp_avg.")) or name.endswith(".exp_avg"):
        return "exp_avg"
    if name.startswith(("optim.", "optimizer.")):
        return "other_state"
    return "weights"


COMPONENT_ORDER = ("weights", "exp_avg", "exp_avg_sq", "other_state")


def float_values(raw: np.ndarray, dtype: str) -> np.ndarray | None:
    """The values of a float tensor's raw little-endian bytes as float64 (None: not a float)."""
    if dtype == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype == "F16":
        return raw.view("<f2").astype(np.float64)
    if dtype == "F32":
        return raw.view("<f4").astype(np.float64)
    if dtype == "F64":
        return raw.view("<f8").astype(np.float64)
    return None


@dataclass
class ErrorStats:
    """Accumulated error of restored float values against the originals."""
    params: int = 0
    sq_err: float = 0.0
    sq_ref: float = 0.0
    max_abs: float = 0.0
    nonfinite_changed: int = 0  # NaN/Inf in the original not restored as such, or new ones
    zeroed: int = 0  # non-zero values restored as zero

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        fx, fy = np.isfinite(x), np.isfinite(y)
        both = fx & fy
        self.nonfinite_changed += int(np.count_nonzero(fx != fy))
        nf = ~fx & ~fy  # both non-finite: same class?
        if nf.any():
            self.nonfinite_changed += int(np.count_nonzero(
                (np.isnan(x[nf]) != np.isnan(y[nf])) | (~np.isnan(x[nf]) & (x[nf] != y[nf]))))
        d = x[both] - y[both]
        self.zeroed += int(np.count_nonzero((x != 0) & (y == 0)))
        self.params += x.size
        self.sq_err += float(np.dot(d, d))
        r = x[both]
        self.sq_ref += float(np.dot(r, r))
        if d.size:
            self.max_abs = max(self.max_abs, float(np.abs(d).max()))

    @property
    def rel_l2(self) -> float:
        if self.sq_err == 0:
            return 0.0
        return math.sqrt(self.sq_err / self.sq_ref) if self.sq_ref else math.inf


@dataclass
class Comparison:
    """How a restored safetensors file differs from its original, per component."""
    errors: dict  # component -> ErrorStats, plus "all"
    problems: list  # missing/extra/retyped/reshaped tensors, non-float tensors changed

    @property
    def total(self) -> ErrorStats:
        return self.errors["all"]


def compare_values(original: Path, restored: Path) -> Comparison:
    """Compare every tensor of two safetensors files by name (layouts may differ)."""
    a, b = read_safetensors(original), read_safetensors(restored)
    da = np.memmap(a.path, dtype=np.uint8, mode="r", offset=a.data_offset)
    db = np.memmap(b.path, dtype=np.uint8, mode="r", offset=b.data_offset)
    by_name = {t.name: t for t in b.tensors}
    with open(original, "rb") as f:
        shapes_a = _shapes(f)
    with open(restored, "rb") as f:
        shapes_b = _shapes(f)
    errors = {"all": ErrorStats()}
    problems = []
    for t in a.tensors:
        u = by_name.pop(t.name, None)
        if u is None:
            problems.append(f"{t.name} missing")
            continue
        if u.dtype != t.dtype or shapes_a[t.name] != shapes_b[t.name]:
            problems.append(f"{t.name} {t.dtype}{shapes_a[t.name]} restored as "
                            f"{u.dtype}{shapes_b[u.name]}")
            continue
        ra, rb = da[t.begin:t.end], db[u.begin:u.end]
        x = float_values(ra, t.dtype)
        if x is None:
            if not np.array_equal(ra, rb):
                problems.append(f"{t.name} ({t.dtype}) changed")
            continue
        y = float_values(rb, u.dtype)
        errors["all"].add(x, y)
        errors.setdefault(component(t.name), ErrorStats()).add(x, y)
    problems += [f"{name} added" for name in by_name]
    return Comparison(errors, problems)


def _shapes(f) -> dict:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: tuple(v["shape"]) for k, v in header.items()}


def delta_bound(base: Path, target: Path) -> dict:
    """Order-0 bound of a lossless delta, in bits per parameter, per component and "all".

    Per float tensor present in both files with the same dtype and size: map both bit
    patterns to order-preserving integers (sign-magnitude to two's complement, so that
    nearby floats are nearby integers), take the difference, zigzag it, and code its bit
    length at its empirical per-tensor entropy plus the bits below the leading one raw.
    Other tensors count at their raw size. Header bytes are left out.
    """
    a, b = read_safetensors(base), read_safetensors(target)
    da = np.memmap(a.path, dtype=np.uint8, mode="r", offset=a.data_offset)
    db = np.memmap(b.path, dtype=np.uint8, mode="r", offset=b.data_offset)
    by_name = {t.name: t for t in a.tensors}
    bits: dict = {}
    params: dict = {}
    for t in b.tensors:
        u = by_name.get(t.name)
        c = component(t.name)
        params[c] = params.get(c, 0) + t.numel
        layout = FLOAT_LAYOUTS.get(t.dtype)
        if layout is None or u is None or u.dtype != t.dtype or u.nbytes != t.nbytes \
                or t.numel == 0:
            bits[c] = bits.get(c, 0.0) + 8 * t.nbytes
            continue
        width = layout[0]
        word = np.dtype(f"<u{width // 8}")

        def ordered(raw):
            w = raw.view(word).astype(np.int64) if width < 64 else raw.view("<i8")
            sign = np.int64(1) << (width - 1)
            return np.where(w & sign, -(w & (sign - 1)), w)

        d = ordered(db[t.begin:t.end]) - ordered(da[u.begin:u.end])
        z = np.where(d >= 0, 2 * d, -2 * d - 1).astype(np.uint64)
        length = np.zeros(z.shape, np.int64)
        nz = z > 0
        length[nz] = np.floor(np.log2(z[nz].astype(np.float64))).astype(np.int64) + 1
        counts = np.bincount(length)
        p = counts[counts > 0] / length.size
        entropy = float(-(p * np.log2(p)).sum())
        bits[c] = bits.get(c, 0.0) + length.size * entropy + float(np.maximum(length - 1, 0).sum())
    out = {c: bits[c] / params[c] for c in bits if params[c]}
    total = sum(params.values())
    out["all"] = sum(bits.values()) / total if total else float("nan")
    return out

"""Safetensors dtype names and their torch / numpy counterparts."""

from __future__ import annotations

from typing import Any

from ._lazy import require

#: Bytes per element of each safetensors dtype dmx reads and writes.
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
    "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def torch_types() -> dict[str, Any]:
    """Safetensors dtype name -> torch dtype, for the dtypes this torch has."""
    torch = require("torch", "reading or writing torch tensors")
    names = {
        "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
        "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
        "BF16": "bfloat16", "F32": "float32", "F64": "float64", "C64": "complex64",
        "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
        "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
        "F8_E8M0": "float8_e8m0fnu",
    }
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


def numpy_types() -> dict[str, Any]:
    """Safetensors dtype name -> numpy dtype (numpy has no bfloat16 or float8)."""
    np = require("numpy", "reading or writing numpy arrays")
    return {
        "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
        "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "I32": np.dtype(np.int32),
        "U32": np.dtype(np.uint32), "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
        "F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
        "F64": np.dtype(np.float64), "C64": np.dtype(np.complex64),
    }

"""Save and load dicts of numpy arrays as ``.dmx`` archives, like ``safetensors.numpy``.

numpy has no bfloat16 or float8 types: archives holding those load with ``dmx.torch``."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any, Unpack

from . import _dmx
from ._dtypes import numpy_types
from ._lazy import LazyModule
from ._errors import UsageError, check_metadata
from ._options import CompressOptions, Progress, native
from ._reports import CompressReport

__all__ = ["save_file", "load_file"]

if TYPE_CHECKING:
    import numpy as np
else:
    np = LazyModule("numpy", "dmx.numpy", "numpy")


@cache
def _names() -> dict[Any, str]:
    """numpy dtype -> safetensors dtype name (imports numpy on first use)."""
    return {v: k for k, v in numpy_types().items()}


def save_file(
    tensor_dict: dict[str, np.ndarray],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    **options: Unpack[CompressOptions],
) -> CompressReport:
    """Compress ``tensor_dict`` into the archive ``filename``, reading each array's memory
    in place (arrays that are not C-contiguous are packed first, as
    ``safetensors.numpy.save_file`` does). An existing file is replaced atomically
    (``force=False`` refuses instead). The other options are
    those of :func:`dmx.compress` (:class:`dmx.CompressOptions`)."""
    args = native({"force": True, **options}, "save_file")
    prepared = []
    for name, a in tensor_dict.items():
        if not isinstance(name, str):
            raise UsageError(f"tensor names must be strings, got {name!r}")
        a = np.asarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        dt = a.dtype
        if dt not in _names():
            raise UsageError(f"{name!r} has dtype {a.dtype}, which safetensors cannot store")
        shape = list(a.shape)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        prepared.append((name, _names()[dt], shape, a.reshape(-1).view(np.uint8)))
    return CompressReport._from_json(
        _dmx.save_tensors(prepared, filename, check_metadata(metadata), args)
    )


def load_file(
    filename: str | os.PathLike[str],
    *,
    file: str | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """All tensors of the archive ``filename`` (or of a ``.safetensors`` file) as numpy
    arrays, each decoded straight into its own freshly allocated, writable array. For the
    archive of a model folder, ``file`` names the safetensors file to load."""
    reader = _dmx.Reader(filename, file)
    types = numpy_types()
    names, bufs, out = [], [], {}
    for name, dtype, shape, nbytes in reader.tensors():
        if dtype not in types:
            raise UsageError(f"{name!r}: numpy has no dtype for the safetensors dtype {dtype}")
        raw = np.empty(nbytes, dtype=np.uint8)
        names.append(name)
        bufs.append(raw)
        out[name] = raw.view(types[dtype]).reshape(shape)
    reader.read_into(names, bufs, threads=threads, progress=progress)
    return out

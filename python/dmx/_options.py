"""The keyword arguments shared by :func:`dmx.compress` and the ``save_file`` functions of
``dmx.torch`` and ``dmx.numpy``, declared once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from . import _dmx

Progress = Callable[[str, int, int], object]


class CompressOptions(TypedDict, total=False):
    """Keyword arguments of :func:`dmx.compress` (defaults in brackets).

    ``mode``: ``"lossless"`` (default, byte-identical), ``"bfp"``, ``"int16"``, ``"int32"`` or
    ``"auto"``; ``mantissa_bits``, ``group_size``, ``max_rel_error``: the lossy settings
    [``None``: the mode's defaults]; ``keep_lossless``: name globs kept exact [``()``];
    ``cast``: ``"bf16"`` or ``"f16"`` [``None``]; ``allow_cast_overflow`` [``False``];
    ``threads``: worker threads [``None``: all cores]; ``force``: replace an existing output
    [``False`` for ``compress``, ``True`` for ``save_file``]; ``progress``: a callable
    ``progress(phase, done_bytes, total_bytes)`` [``None``]."""

    mode: str
    mantissa_bits: int | None
    group_size: int | None
    max_rel_error: float | None
    keep_lossless: Sequence[str]
    cast: str | None
    allow_cast_overflow: bool
    threads: int | None
    force: bool
    progress: Progress | None


def native(options: CompressOptions, caller: str) -> Any:
    """``options`` of the function ``caller`` checked (an unknown name or a wrong type raises
    ``TypeError``) and packed for the extension's ``compress`` and ``save_tensors``."""
    for name in options:
        if name not in CompressOptions.__optional_keys__:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if "keep_lossless" in options:
        options = {**options, "keep_lossless": list(options["keep_lossless"])}
    return _dmx.CompressArgs(**options)

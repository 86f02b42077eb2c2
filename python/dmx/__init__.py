"""dmx: structure-aware lossless compression for neural-network weights.

The functions here mirror the ``dmx`` command (keyword arguments are named like its
flags and return report objects whose ``to_dict()`` is the command's ``--json``);
:func:`safe_open` reads tensors lazily like ``safetensors.safe_open``; ``dmx.torch`` and
``dmx.numpy`` save and load whole state dicts like ``safetensors.torch`` /
``safetensors.numpy``. Work runs in Rust with the GIL released; Ctrl-C stops it and leaves
no partial output; errors are :class:`DmxError` subclasses.

Every operation takes ``threads=`` (worker threads, default: all cores) and most take
``progress=``, a callable ``progress(phase, done_bytes, total_bytes)`` called on the
calling thread about ten times a second while the work runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Union, Unpack

from . import _dmx, _errors
from ._errors import (
    CancelledError,
    CorruptArchiveError,
    DmxError,
    DmxFileExistsError,
    DmxFileNotFoundError,
    DmxIsADirectoryError,
    DmxNotADirectoryError,
    DmxOSError,
    DmxPermissionError,
    TensorNotFoundError,
    UsageError,
    VerificationError,
)
from ._open import safe_open
from ._options import CompressOptions, Progress, native
from ._reports import (
    ChainInfo,
    ChainReport,
    ChainVerifyReport,
    CompressReport,
    DeltaInfo,
    DeltaReport,
    DiffReport,
    InfoReport,
    ReconstructReport,
    Report,
    VerifyReport,
)

__version__: str = _dmx.__version__

PathLike = Union[str, "os.PathLike[str]"]


def _warn(report: Report) -> None:
    import warnings

    for w in report.to_dict().get("warnings", []):
        warnings.warn(w, stacklevel=3)


def compress(
    src: PathLike, dst: PathLike, **options: Unpack[CompressOptions]
) -> CompressReport:
    """Compress a ``.safetensors`` file, any file, or a model folder into the archive
    ``dst`` (``dmx compress``). The keyword arguments are those of
    :class:`dmx.CompressOptions`: ``mode`` is ``"lossless"`` (default, byte-identical),
    ``"bfp"``, ``"int16"``, ``"int32"`` or ``"auto"``; ``cast`` is ``"bf16"`` or ``"f16"``;
    ``keep_lossless`` holds name globs kept exact; ``threads``, ``force`` (default ``False``)
    and ``progress`` as elsewhere. Warnings are issued as ``UserWarning``."""
    r = CompressReport._from_json(_dmx.compress(src, dst, native(options, "compress")))
    _warn(r)
    return r


def decompress(
    src: PathLike,
    dst: PathLike,
    *,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Restore the original file or folder from the archive ``src``, byte for byte
    (``dmx decompress``); every checksum is checked."""
    _dmx.decompress(src, dst, threads=threads, force=force, progress=progress)


def info(path: PathLike) -> InfoReport:
    """Tensors, codecs, sizes and bits per weight of an archive (``dmx info --json``)."""
    return InfoReport._from_json(_dmx.info(path))


def verify(
    archive: PathLike,
    original: PathLike | None = None,
    *,
    max_rel_error: float | None = None,
    base: PathLike | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    check: bool = False,
) -> VerifyReport | ChainVerifyReport:
    """Decode everything in ``archive`` and check every checksum; with ``original``, compare
    every byte (``dmx verify [ORIGINAL] ARCHIVE``). A delta needs the ``base`` it was made
    from; a chain folder is verified as a whole. Returns the report (``report.ok``); with
    ``check=True`` a failed check raises :class:`VerificationError` (carrying the report)."""
    text = _dmx.verify(
        archive, original, max_rel_error=max_rel_error, base=base, threads=threads,
        progress=progress,
    )
    cls = ChainVerifyReport if original is None and os.path.isdir(archive) else VerifyReport
    r = cls._from_json(text)
    if check and not r.ok:
        _fail(f"{os.fspath(archive)}: verification failed", r)
    return r


def _fail(message: str, report: Report) -> None:
    e = VerificationError(message)
    e.report = report
    raise e


def extract(
    archive: PathLike,
    dst: PathLike,
    tensors: Iterable[str],
    *,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Write a safetensors file ``dst`` holding only the named tensors of ``archive``
    (``dmx extract``; decodes only those)."""
    names = [tensors] if isinstance(tensors, str) else list(tensors)
    _dmx.extract(archive, dst, names, threads=threads, force=force, progress=progress)


def delta_compress(
    base: PathLike,
    target: PathLike,
    dst: PathLike,
    *,
    precision: str = "lossless",
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> DeltaReport:
    """Store ``target`` as a delta from ``base`` (``dmx delta-compress``); ``precision`` is
    ``"lossless"`` (default), ``"int16"`` or ``"int32"``."""
    return DeltaReport._from_json(
        _dmx.delta_compress(
            base, target, dst, precision=precision, threads=threads, force=force,
            progress=progress,
        )
    )


def delta_reconstruct(
    base: PathLike,
    delta: PathLike,
    dst: PathLike,
    *,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> None:
    """Rebuild the target of ``delta`` from its ``base`` (``dmx delta-reconstruct``); any
    other base is refused with :class:`VerificationError`."""
    _dmx.delta_reconstruct(base, delta, dst, threads=threads, force=force, progress=progress)


def delta_info(path: PathLike) -> DeltaInfo:
    """Sizes of a delta per checkpoint component and role (``dmx delta-info --json``)."""
    return DeltaInfo._from_json(_dmx.delta_info(path))


def diff(
    a: PathLike,
    b: PathLike,
    *,
    top: int = 10,
    threads: int | None = None,
    progress: Progress | None = None,
) -> DiffReport:
    """How far checkpoint ``b`` moved from ``a`` (``dmx diff --json``). The report's
    ``top_tensors`` lists the ``top`` float tensors with the largest relative change."""
    data = DiffReport._from_json(_dmx.diff(a, b, threads=threads, progress=progress)).to_dict()
    moved = [t for t in data["tensors"] if t.get("relative_change") is not None]
    moved.sort(key=lambda t: t["relative_change"], reverse=True)
    r = DiffReport(data)
    object.__setattr__(r, "top_tensors", [Report(t) for t in moved[: max(top, 0)]])
    return r


def chain_compress(
    checkpoints: Iterable[PathLike],
    out_dir: PathLike,
    *,
    precision: str = "lossless",
    max_depth: int = 16,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> ChainReport:
    """Store the checkpoints of a training run, in order, as anchors and deltas in the new
    folder ``out_dir`` (``dmx chain-compress``)."""
    return ChainReport._from_json(
        _dmx.chain_compress(
            [os.fspath(c) for c in checkpoints], out_dir, precision=precision,
            max_depth=max_depth, threads=threads, force=force, progress=progress,
        )
    )


def chain_append(
    dir: PathLike,
    checkpoints: Iterable[PathLike],
    *,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    """Add checkpoints to an existing chain (``dmx chain-append``; crash-safe)."""
    return ChainReport._from_json(
        _dmx.chain_append(
            dir, [os.fspath(c) for c in checkpoints], threads=threads, progress=progress
        )
    )


def chain_reconstruct(
    dir: PathLike,
    out_dir: PathLike,
    indices: Iterable[int] | None = None,
    *,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> ReconstructReport:
    """Restore all (or the ``indices`` of) the checkpoints of a chain under their original
    names (``dmx chain-reconstruct``). A restored file that does not match its recorded
    hash raises :class:`VerificationError` carrying the report."""
    idx = None if indices is None else list(indices)
    r = ReconstructReport._from_json(
        _dmx.chain_reconstruct(dir, out_dir, idx, threads=threads, force=force, progress=progress)
    )
    if not r.ok:
        _fail(f"{os.fspath(dir)}: a restored checkpoint does not match its recorded hash", r)
    return r


def chain_info(dir: PathLike) -> ChainInfo:
    """Entries of a chain and totals (``dmx chain-info --json``)."""
    return ChainInfo._from_json(_dmx.chain_info(dir))


def chain_verify(
    dir: PathLike,
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    check: bool = False,
) -> ChainVerifyReport:
    """Check a whole chain: every stored file's hash, then every entry restored
    (``dmx verify DIR``). With ``check=True`` a failure raises :class:`VerificationError`."""
    r = ChainVerifyReport._from_json(_dmx.chain_verify(dir, threads=threads, progress=progress))
    if check and not r.ok:
        _fail(f"{os.fspath(dir)}: verification failed", r)
    return r


def chain_prune(
    dir: PathLike,
    keep: Iterable[int],
    *,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """Keep only the entries ``keep`` (indices) of a chain (``dmx chain-prune``): a kept
    delta whose parent goes is re-anchored (lossless chains) or keeps its parents (quantized
    chains); kept entries are renumbered from 0. Crash-safe: the new manifest is written
    before any file is removed."""
    return Report._from_json(
        _dmx.chain_prune(dir, [int(i) for i in keep], threads=threads, progress=progress)
    )


__all__ = [
    "__version__",
    "compress",
    "decompress",
    "info",
    "verify",
    "extract",
    "delta_compress",
    "delta_reconstruct",
    "delta_info",
    "diff",
    "chain_compress",
    "chain_append",
    "chain_reconstruct",
    "chain_info",
    "chain_verify",
    "chain_prune",
    "safe_open",
    "CompressOptions",
    "Report",
    "CompressReport",
    "InfoReport",
    "VerifyReport",
    "DeltaReport",
    "DeltaInfo",
    "DiffReport",
    "ChainReport",
    "ChainInfo",
    "ReconstructReport",
    "ChainVerifyReport",
    *_errors.__all__,
]

"""Save and load torch state dicts as ``.dmx`` archives, like ``safetensors.torch``.

``save_file`` compresses straight from tensor memory (no temporary ``.safetensors`` file,
no copy of the model), with the GIL released; the archive is identical to ``dmx compress``
of the file ``safetensors.torch.save_file`` would write. ``load_file`` decodes straight into
the memory of the returned tensors."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any, Unpack

from . import _dmx
from ._dtypes import torch_types
from ._lazy import LazyModule, require
from ._errors import UsageError, check_metadata
from ._options import CompressOptions, Progress, native
from ._reports import CompressReport

__all__ = ["save_file", "load_file", "save_model", "load_model"]

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch", "dmx.torch", "torch")


def _numpy_bridge() -> None:
    """torch hands tensor memory to dmx through ``Tensor.numpy()``, which needs numpy (torch
    does not depend on it): a clear ImportError instead of torch's RuntimeError."""
    require("numpy", "dmx.torch (tensor memory is handed over through numpy)")


@cache
def _names() -> dict[Any, str]:
    """torch dtype -> safetensors dtype name (imports torch on first use)."""
    return {v: k for k, v in torch_types().items()}


def _bytes_of(name: str, t: torch.Tensor) -> Any:
    """A read-only view of the bytes of ``t`` (a CPU, contiguous tensor), without a copy."""
    _numpy_bridge()
    flat = t.detach().reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return flat.numpy()


def _prepare(tensors: dict[str, torch.Tensor]) -> list[tuple[str, str, list[int], Any]]:
    if not isinstance(tensors, dict):
        raise UsageError(f"expected a dict of tensors, got {type(tensors).__name__}")
    shared = [sorted(g) for g in _shared_groups(tensors)]
    if shared:
        raise UsageError(
            f"some tensors share memory, which would store them twice and load them as "
            f"separate tensors: {shared}; use dmx.torch.save_model, or save a .clone() of each"
        )
    out = []
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise UsageError(f"tensor names must be strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise UsageError(f"{name!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.layout != torch.strided:
            raise UsageError(f"{name!r} is a {t.layout} tensor; only dense tensors are saved")
        if not t.is_contiguous():
            raise UsageError(
                f"{name!r} is not contiguous; call .contiguous() on it (or use save_model("
                f"..., force_contiguous=True)) before saving"
            )
        if t.dtype not in _names():
            raise UsageError(f"{name!r} has dtype {t.dtype}, which safetensors cannot store")
        if t.device.type != "cpu":
            t = t.to("cpu")
        out.append((name, _names()[t.dtype], list(t.shape), _bytes_of(name, t)))
    return out


def save_file(
    tensors: dict[str, torch.Tensor],
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    **options: Unpack[CompressOptions],
) -> CompressReport:
    """Compress ``tensors`` into the archive ``filename``. Like
    ``safetensors.torch.save_file``, tensors that share memory or are not contiguous are
    refused, GPU tensors are copied to the CPU, and an existing file is replaced (atomically;
    ``force=False`` refuses instead). The other options are
    those of :func:`dmx.compress` (:class:`dmx.CompressOptions`)."""
    args = native({"force": True, **options}, "save_file")
    prepared = _prepare(tensors)
    return CompressReport._from_json(
        _dmx.save_tensors(prepared, filename, check_metadata(metadata), args)
    )


def load_file(
    filename: str | os.PathLike[str],
    device: str | int | torch.device = "cpu",
    *,
    file: str | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """All tensors of the archive ``filename`` (or of a ``.safetensors`` file), each
    decoded straight into its own freshly allocated, writable tensor; then moved to
    ``device``. Checksums are checked. For the archive of a model folder, ``file`` names
    the safetensors file to load."""
    types = torch_types()
    _numpy_bridge()
    reader = _dmx.Reader(filename, file)
    names, bufs, out = [], [], {}
    for name, dtype, shape, nbytes in reader.tensors():
        if dtype not in types:
            raise UsageError(f"{name!r}: torch has no dtype for the safetensors dtype {dtype}")
        raw = torch.empty(nbytes, dtype=torch.uint8)
        names.append(name)
        bufs.append(raw.numpy())
        out[name] = raw.view(types[dtype]).reshape(shape)
    reader.read_into(names, bufs, threads=threads, progress=progress)
    del bufs
    if str(device) != "cpu":
        out = {k: v.to(device) for k, v in out.items()}
    return out


def _span(t: torch.Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    return start, start + t.nelement() * t.element_size()


def _shared_groups(tensors: dict[str, torch.Tensor]) -> list[set[str]]:
    """Groups (of two or more names) of tensors whose memory overlaps."""
    by_storage: dict[Any, list[str]] = defaultdict(list)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            continue
        if t.device.type == "meta" or t.nelement() == 0:
            continue
        s = t.untyped_storage()
        by_storage[(t.device, s.data_ptr(), s.nbytes())].append(name)
    groups = []
    for names in by_storage.values():
        if len(names) < 2:
            continue
        spans = sorted((*_span(tensors[n]), n) for n in names)
        current, end = {spans[0][2]}, spans[0][1]
        for start, stop, name in spans[1:]:
            if start < end:
                current.add(name)
                end = max(end, stop)
            else:
                if len(current) > 1:
                    groups.append(current)
                current, end = {name}, stop
        if len(current) > 1:
            groups.append(current)
    return groups


def _covers_storage(t: torch.Tensor) -> bool:
    s = t.untyped_storage()
    return t.data_ptr() == s.data_ptr() and t.nelement() * t.element_size() == s.nbytes()


def _duplicates(
    state_dict: dict[str, torch.Tensor], preferred: Iterable[str] = ()
) -> dict[str, list[str]]:
    """For each group of tensors sharing memory, the name kept (one covering the whole
    storage, preferably from ``preferred``) -> the names dropped."""
    preferred = set(preferred)
    dropped: dict[str, list[str]] = {}
    for group in _shared_groups(state_dict):
        complete = sorted(n for n in group if _covers_storage(state_dict[n]))
        if not complete:
            raise UsageError(
                f"tensors {sorted(group)} share memory but none covers all of it; "
                f"refusing to save them (it could store far more than the tensors)"
            )
        keep = next((n for n in complete if n in preferred), complete[0])
        dropped[keep] = sorted(group - {keep})
    return dropped


def save_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    force_contiguous: bool = False,
    **options: Unpack[CompressOptions],
) -> CompressReport:
    """Save ``model.state_dict()`` like ``safetensors.torch.save_model``: of tensors that
    share memory (tied weights) one is kept and the metadata maps each dropped name to it;
    with ``force_contiguous`` non-contiguous tensors are packed first. ``options`` are
    those of :func:`save_file`."""
    state = model.state_dict()
    meta = dict(check_metadata(metadata) or {})
    for kept, names in _duplicates(state).items():
        for n in names:
            meta[n] = kept
            del state[n]
    if force_contiguous:
        state = {k: v.contiguous() for k, v in state.items()}
    return save_file(state, filename, meta or None, **options)


def load_model(
    model: torch.nn.Module,
    filename: str | os.PathLike[str],
    strict: bool = True,
    device: str | int | torch.device = "cpu",
    **options: Any,
) -> tuple[list[str], list[str]]:
    """Load an archive written by :func:`save_model` into ``model``, like
    ``safetensors.torch.load_model``: tied weights dropped when saving count as present.
    Returns ``(missing, unexpected)`` names; with ``strict`` either being non-empty raises
    ``RuntimeError``. ``options`` are those of :func:`load_file`."""
    state = load_file(filename, device=device, **options)
    dropped = _duplicates(model.state_dict(), preferred=state.keys())
    missing_keys, unexpected_keys = model.load_state_dict(state, strict=False)
    missing = set(missing_keys)
    unexpected = list(unexpected_keys)
    for names in dropped.values():
        for n in names:
            if n in missing:
                missing.remove(n)
            else:
                unexpected.append(n)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(sorted(missing)))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(sorted(unexpected)))
        raise RuntimeError(
            f"error(s) loading the state dict for {type(model).__name__}: " + "; ".join(parts)
        )
    return sorted(missing), unexpected


from .checkpoint import load_checkpoint, load_state, save_checkpoint, save_state  # noqa: E402
from .training import CheckpointChain  # noqa: E402

__all__ += ["save_checkpoint", "load_checkpoint", "save_state", "load_state", "CheckpointChain"]

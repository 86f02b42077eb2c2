"""PyTorch Distributed Checkpoint (DCP) storage backed by dmx archives.

``DmxWriter`` / ``DmxReader`` plug into ``torch.distributed.checkpoint.save`` / ``load``::

    import torch.distributed.checkpoint as dcp
    dcp.save(state_dict, storage_writer=dmx.dcp.DmxWriter("ckpt/step_100"))
    dcp.load(state_dict, storage_reader=dmx.dcp.DmxReader("ckpt/step_100"))

Each rank writes ONE archive, ``__<rank>_0.dmx``, holding its tensor chunks coded by dtype
with dmx's float codecs (``BYTE_IO`` items are stored as ``U8`` tensors), written through a
temporary file and renamed into place; every chunk of an archive is checksummed and the
SHA-256 of every rank file is recorded in the checkpoint's metadata and checked before the
file is read. DCP's global metadata is stored as JSON in ``.metadata.dmx.json`` (never as
pickle), and a reader refuses any content it does not know. Loading with another world size
works as with the stock ``FileSystemWriter``: DCP's planner picks the chunks each rank needs.

With ``base=`` (an earlier checkpoint folder written by ``DmxWriter``) each rank's file is
stored as a delta (``dmx.delta_compress``) from the base's rank file of the same name, when
the base has one; the base folder is recorded relative to the checkpoint, and is needed to
load it (a delta refuses any other base).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import _dmx
from ._dtypes import torch_types
from ._errors import UsageError, VerificationError
from ._lazy import require

require("torch", "dmx.dcp")
import torch  # noqa: E402
from torch.distributed.checkpoint import metadata as md  # noqa: E402
from torch.distributed.checkpoint.planner import (  # noqa: E402
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import (  # noqa: E402
    StorageReader,
    StorageWriter,
    WriteResult,
)
from torch.futures import Future  # noqa: E402

from ._dcp_meta import (  # noqa: E402
    _MAX_BASE_DEPTH,
    METADATA_FILE,
    _atomic_write,
    _bad,
    _dtype,
    _dtype_name,
    _Item,
    _metadata_from_json,
    _metadata_to_json,
    _read_doc,
)

__all__ = ["DmxWriter", "DmxReader", "METADATA_FILE"]

# ---------------------------------------------------------------------------------------
# Rank files.
# ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_file(path: Path, item: _Item) -> None:
    """Refuses a rank file whose size or SHA-256 differ from the recorded ones."""
    try:
        sha, size = _sha256(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: rank file missing from the checkpoint") from None
    if size != item.size or sha != item.sha256:
        raise VerificationError(
            f"{path}: the rank file does not match its recorded SHA-256 and size "
            f"(damaged, truncated or replaced)"
        )


def _segment_name(index: Any) -> str:
    """The tensor name of a write item in its rank file: the fqn, plus the chunk's offsets
    when they are not all zero (a rank may hold several chunks of one tensor)."""
    offset = index.offset
    if offset is None or not any(offset):
        return index.fqn
    return f"{index.fqn}@{','.join(str(int(o)) for o in offset)}"


def _stored_tensor(data: Any) -> tuple[Any, str]:
    """``data`` (a tensor or a BytesIO) as a dense CPU tensor dmx stores, and the torch dtype
    name to restore (``"bytes"`` for BytesIO)."""
    if not isinstance(data, torch.Tensor):
        raw = bytes(data.getbuffer())
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(
            0, dtype=torch.uint8
        ), "bytes"
    t = data.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    name = _dtype_name(t.dtype)
    if t.dtype not in torch_types().values():
        t = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
    return t, name


def _unshare(tensors: dict[str, Any]) -> dict[str, Any]:
    """Clones tensors whose memory overlaps another's (dmx stores each tensor once)."""
    from .torch import _shared_groups

    for group in _shared_groups(tensors):
        for name in sorted(group)[1:]:
            tensors[name] = tensors[name].clone()
    return tensors


def _write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    """A plain safetensors file of ``tensors`` (the target of a delta)."""
    from .torch import _bytes_of, _names

    header: dict[str, Any] = {}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _names()[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, t in tensors.items():
            if t.numel():
                f.write(_bytes_of(name, t))


def _resolve_base(folder: Path, base: str | None) -> Path | None:
    if base is None:
        return None
    p = Path(base)
    return p if p.is_absolute() else (folder / p)


def _base_file(folder: Path, name: str, tmp: Path, depth: int = 0) -> Path | None:
    """A file usable as the delta base for rank file ``name`` of the checkpoint ``folder``:
    the archive itself, or (for a delta) its target rebuilt into ``tmp``; ``None`` when the
    checkpoint has no such rank file. The file's recorded SHA-256 is checked."""
    if depth > _MAX_BASE_DEPTH:
        raise UsageError(f"{folder}: more than {_MAX_BASE_DEPTH} checkpoints of bases")
    doc = _read_doc(folder)
    meta = _metadata_from_json(doc)
    item = next((i for i in meta.storage_data.values() if i.file == name), None)
    if item is None:
        return None
    path = folder / name
    _check_file(path, item)
    if item.kind == "dmx":
        return path
    base_dir = _resolve_base(folder, doc["base"])
    if base_dir is None:
        raise _bad(f"{path} is a delta but the checkpoint names no base")
    base = _base_file(base_dir, name, tmp, depth + 1)
    if base is None:
        raise UsageError(f"{path} is a delta but its base {base_dir} has no {name}")
    out = tmp / f"{uuid.uuid4().hex}.safetensors"
    _dmx.delta_reconstruct(base, path, out, force=True)
    return out


# ---------------------------------------------------------------------------------------
# The storage writer and reader.
# ---------------------------------------------------------------------------------------


#: The DCP metadata version the writer records (that of the stock FileSystemWriter).
DCP_VERSION = "1.0.0"
#: Decoded bytes gathered per batch when loading (several tensors decoded in parallel).
_READ_BATCH = 256 << 20


def _metadata_name(rank: int | None) -> str:
    return METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"


class DmxWriter(StorageWriter):
    """A DCP ``StorageWriter`` writing one dmx archive per rank into the folder ``path``.

    ``base``: an earlier checkpoint folder written by ``DmxWriter``; each rank file is then
    stored as a delta from the base's file of the same name (``precision``: ``"lossless"``,
    ``"int16"`` or ``"int32"``, as :func:`dmx.delta_compress`). ``threads``: worker threads
    (default: all cores). ``sync_files``: fsync what is written. ``overwrite``: replace a
    checkpoint already in ``path`` (``False`` raises). ``modes``: the options of
    :func:`dmx.torch.save_file` for full archives (``mode="int16"``, ``cast="bf16"``, ...)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        base: str | os.PathLike[str] | None = None,
        precision: str = "lossless",
        threads: int | None = None,
        sync_files: bool = True,
        overwrite: bool = True,
        **modes: Any,
    ) -> None:
        super().__init__()
        from ._options import native

        for bad in ("force", "threads"):
            if bad in modes:
                raise TypeError(f"DmxWriter() got an unexpected keyword argument {bad!r}")
        native(dict(modes), "DmxWriter")  # checks the names and values now
        self.path = Path(path)
        self.base = None if base is None else Path(base)
        self.precision = precision
        self.threads = threads
        self.sync_files = sync_files
        self.overwrite = overwrite
        self.modes = modes
        self.save_id = uuid.uuid4().hex
        self.rank: int | None = None
        self.use_collectives = True

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Starts a new save, into ``checkpoint_id`` when given."""
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Records this rank (DCP passes ``rank`` and ``use_collectives``)."""
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    def _own_metadata(self) -> Path:
        rank = None if self.use_collectives or self.rank is None else self.rank
        return self.path / _metadata_name(rank)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Creates the folder; checks ``overwrite`` and the base."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._own_metadata().exists() and not self.overwrite:
            raise UsageError(f"{self.path}: a checkpoint exists there and overwrite=False")
        if self.base is not None:
            if self.base.resolve() == self.path.resolve():
                raise UsageError(f"{self.path}: a checkpoint cannot be its own base")
            _read_doc(self.base)  # a clear error now if it is not a DmxWriter checkpoint
        if self.rank is not None and not self.use_collectives:
            plan = dataclasses.replace(plan, storage_data=f"__{self.rank}_0.dmx")
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Gives rank ``i`` the file ``__<i>_0.dmx``."""
        return [
            dataclasses.replace(p, storage_data=f"__{i}_0.dmx") if p.storage_data is None else p
            for i, p in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Writes this rank's items into its archive (atomically) and returns where each
        one lives."""
        fname = plan.storage_data if isinstance(plan.storage_data, str) else "__0_0.dmx"
        tensors: dict[str, Any] = {}
        placed = []
        for item in plan.items:
            t, dtype = _stored_tensor(planner.resolve_data(item))
            name = _segment_name(item.index)
            if name in tensors:
                raise UsageError(f"two write items are both stored as {name!r}")
            tensors[name] = t
            if item.type == WriteItemType.BYTE_IO:
                shape: tuple[int, ...] = (t.numel(),)
            else:
                shape = tuple(int(s) for s in item.tensor_data.chunk.sizes)
            placed.append((item.index, name, dtype, shape, t.numel() * t.element_size()))
        results: list[WriteResult] = []
        if placed:
            path = self.path / fname
            kind = self._write_file(path, _unshare(tensors))
            sha, size = _sha256(path)
            results = [
                WriteResult(index=index, size_in_bytes=nbytes,
                            storage_data=_Item(fname, name, dtype, shape, sha, size, kind))
                for index, name, dtype, shape, nbytes in placed
            ]
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def _write_file(self, path: Path, tensors: dict[str, Any]) -> str:
        """Writes ``path``; returns its kind (``"dmx"`` or ``"delta"``)."""
        from . import delta_compress
        from .torch import save_file

        with tempfile.TemporaryDirectory(prefix=".dmx-dcp-", dir=self.path) as tmp:
            base = None if self.base is None else _base_file(self.base, path.name, Path(tmp))
            if base is None:
                save_file(tensors, path, threads=self.threads, force=True, **self.modes)
                return "dmx"
            target = Path(tmp) / "target.safetensors"
            _write_safetensors(target, tensors)
            delta_compress(base, target, path, precision=self.precision,
                           threads=self.threads, force=True)
            return "delta"

    def finish(self, metadata: Any, results: list[list[WriteResult]]) -> None:
        """Writes the checkpoint's metadata (JSON, atomically): the checkpoint is complete."""
        metadata.version = DCP_VERSION
        metadata.storage_data = {wr.index: wr.storage_data for rs in results for wr in rs}
        metadata.storage_meta = self.storage_meta()
        base = None
        if self.base is not None:
            base = os.path.relpath(self.base.resolve(), self.path.resolve())
        doc = _metadata_to_json(metadata, base)
        text = json.dumps(doc, separators=(",", ":")).encode()
        _atomic_write(self._own_metadata(), text, self.sync_files)

    def storage_meta(self) -> Any:
        """The checkpoint id (the folder) and this save's id."""
        return md.StorageMeta(checkpoint_id=os.fspath(self.path), save_id=self.save_id)

    @property
    def checkpoint_id(self) -> Path:
        """The checkpoint folder."""
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """A local path (not a URL)."""
        return isinstance(checkpoint_id, (str, os.PathLike)) and "://" not in str(checkpoint_id)


class DmxReader(StorageReader):
    """A DCP ``StorageReader`` for checkpoints written by :class:`DmxWriter`. Every rank
    file's SHA-256 is checked before it is read, every decoded chunk's checksum too; a
    delta's base checkpoint (recorded relative to ``path``) must be present.
    ``threads``: worker threads for decoding (default: all cores)."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.storage_data: dict[Any, _Item] = {}
        self.load_id = uuid.uuid4().hex
        self._base: str | None = None
        self._base_known = False

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Starts a new load, from ``checkpoint_id`` when given."""
        self.storage_data = {}
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.load_id = uuid.uuid4().hex
        self._base, self._base_known = None, False

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        """The checkpoint's DCP ``Metadata``, from its JSON file (unknown content refused)."""
        doc = _read_doc(self.path, _metadata_name(kwargs.get("rank")))
        meta = _metadata_from_json(doc)
        self._base, self._base_known = doc["base"], True
        meta.storage_meta.load_id = self.load_id
        return meta

    def set_up_storage_reader(
        self, metadata: Any, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        """Takes the storage map of ``metadata``."""
        if not isinstance(metadata.storage_data, dict):
            raise UsageError("the metadata was not read by DmxReader.read_metadata")
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Unchanged."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Unchanged."""
        return plans

    def _source(self, fname: str, item: _Item, tmp: Path) -> Path:
        """The archive ``fname`` (checked), or for a delta its target rebuilt in ``tmp``."""
        path = self.path / fname
        _check_file(path, item)
        if item.kind == "dmx":
            return path
        if not self._base_known:  # metadata read by another rank only
            self._base, self._base_known = _read_doc(self.path)["base"], True
        base_dir = _resolve_base(self.path, self._base)
        if base_dir is None:
            raise _bad(f"{path} is a delta but the checkpoint names no base")
        base = _base_file(base_dir, fname, tmp)
        if base is None:
            raise UsageError(f"{path} is a delta but its base {base_dir} has no {fname}")
        out = tmp / f"{uuid.uuid4().hex}.safetensors"
        _dmx.delta_reconstruct(base, path, out, threads=self.threads, force=True)
        return out

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Decodes the chunks ``plan`` asks for and hands them to ``planner``."""
        per_file: dict[str, dict[str, list[Any]]] = {}
        for req in plan.items:
            item = self._item(req.storage_index)
            per_file.setdefault(item.file, {}).setdefault(item.name, []).append(req)
        with tempfile.TemporaryDirectory(prefix="dmx-dcp-") as tmp:
            for fname, by_name in per_file.items():
                first = self._item(next(iter(by_name.values()))[0].storage_index)
                reader = _dmx.Reader(self._source(fname, first, Path(tmp)))
                for batch in _batches(reader, list(by_name)):
                    for name, value in self._decode(reader, batch, by_name):
                        for req in by_name[name]:
                            _deliver(planner, req, value)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _item(self, index: Any) -> _Item:
        try:
            return self.storage_data[index]
        except KeyError:
            raise _bad(f"no storage entry for {index}") from None

    def _decode(
        self, reader: Any, names: list[str], by_name: dict[str, list[Any]]
    ) -> Iterator[tuple[str, Any]]:
        """Decodes ``names`` in one parallel call; yields each as a tensor or bytes."""
        raws, bufs = [], []
        for name in names:
            _, _, nbytes = reader.info(name)
            raw = torch.empty(nbytes, dtype=torch.uint8)
            raws.append(raw)
            bufs.append(raw.numpy())
        reader.read_into(names, bufs, threads=self.threads)
        del bufs
        for name, raw in zip(names, raws):
            item = self._item(by_name[name][0].storage_index)
            if item.dtype == "bytes":
                yield name, raw.numpy().tobytes()
                continue
            dtype = _dtype(item.dtype)
            count = 1
            for s in item.shape:
                count *= s
            if raw.numel() != count * dtype.itemsize:
                raise _bad(f"{name!r} holds {raw.numel()} bytes, not those of {item.shape}")
            yield name, raw.view(dtype).reshape(item.shape) if count else torch.empty(
                item.shape, dtype=dtype
            )

    @property
    def checkpoint_id(self) -> Path:
        """The checkpoint folder."""
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """A folder holding a ``DmxWriter`` checkpoint."""
        try:
            return (Path(checkpoint_id) / METADATA_FILE).is_file()
        except TypeError:
            return False


def _batches(reader: Any, names: list[str]) -> Iterator[list[str]]:
    """``names`` in groups of about ``_READ_BATCH`` decoded bytes."""
    batch: list[str] = []
    size = 0
    for name in names:
        n = reader.info(name)[2]
        if batch and size + n > _READ_BATCH:
            yield batch
            batch, size = [], 0
        batch.append(name)
        size += n
    if batch:
        yield batch


def _deliver(planner: Any, req: Any, value: Any) -> None:
    """Hands one decoded item (narrowed to the request) to the load planner."""
    from torch.distributed._shard._utils import narrow_tensor_by_index

    if req.type == LoadItemType.BYTE_IO:
        planner.load_bytes(req, io.BytesIO(value))
        return
    part = narrow_tensor_by_index(value, req.storage_offsets, req.lengths)
    target = planner.resolve_tensor(req).detach()
    if target.size() != part.size():
        raise _bad(f"{req.storage_index}: size {tuple(part.size())} where "
                   f"{tuple(target.size())} was expected")
    target.copy_(part)
    planner.commit_tensor(req, target)

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _dmx
from ._dtypes import torch_types
from ._errors import CorruptArchiveError, UsageError, VerificationError
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

__all__ = ["DmxWriter", "DmxReader", "METADATA_FILE"]

#: The name of a checkpoint's metadata file (JSON).
METADATA_FILE = ".metadata.dmx.json"
_FORMAT = "dmx-dcp"
_VERSION = 1
_MAX_BASE_DEPTH = 64
_MEMORY_FORMATS = ("contiguous_format", "channels_last", "preserve_format")



@dataclass(frozen=True)
class _Item:
    """Where one DCP item lives: the rank file, the tensor's name in it, the torch dtype and
    shape it was saved with (``dtype`` ``"bytes"`` for a ``BYTE_IO`` item), and the file's
    SHA-256, size and kind (``"dmx"`` archive or ``"delta"``)."""

    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str = ""
    size: int = 0
    kind: str = "dmx"


# ---------------------------------------------------------------------------------------
# Metadata <-> JSON, without pickle.
# ---------------------------------------------------------------------------------------


def _bad(msg: str) -> CorruptArchiveError:
    return CorruptArchiveError(f"DCP metadata: {msg}")


def _ints(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _bad(f"{what} must be a list of non-negative integers, got {value!r}")
    return value


def _keys(d: Any, what: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(d, dict):
        raise _bad(f"{what} must be an object")
    unknown = set(d) - required - optional
    if unknown:
        raise _bad(f"{what} has unknown fields {sorted(unknown)}")
    missing = required - set(d)
    if missing:
        raise _bad(f"{what} lacks the fields {sorted(missing)}")
    return d


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: Any) -> Any:
    d = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(d, torch.dtype):
        raise _bad(f"unknown dtype {name!r}")
    return d


def _tensor_md_to_json(md: Any) -> dict[str, Any]:
    p = md.properties
    if p.layout != torch.strided:
        raise UsageError(f"only strided tensors are stored, not {p.layout}")
    fmt = next(f for f in _MEMORY_FORMATS if getattr(torch, f) == p.memory_format)
    return {
        "type": "tensor",
        "dtype": _dtype_name(p.dtype),
        "requires_grad": bool(p.requires_grad),
        "memory_format": fmt,
        "pin_memory": bool(p.pin_memory),
        "strides": None if p.strides is None else [int(s) for s in p.strides],
        "size": [int(s) for s in md.size],
        "chunks": [
            {"offsets": [int(o) for o in c.offsets], "sizes": [int(s) for s in c.sizes]}
            for c in md.chunks
        ],
    }


def _tensor_md_from_json(d: dict[str, Any], fqn: str) -> Any:
    fields = {"type", "dtype", "requires_grad", "memory_format", "pin_memory", "strides"}
    _keys(d, f"tensor {fqn!r}", fields | {"size", "chunks"})
    if d["memory_format"] not in _MEMORY_FORMATS:
        raise _bad(f"unknown memory format {d['memory_format']!r}")
    if not isinstance(d["requires_grad"], bool) or not isinstance(d["pin_memory"], bool):
        raise _bad(f"tensor {fqn!r}: requires_grad and pin_memory must be booleans")
    if not isinstance(d["chunks"], list):
        raise _bad(f"tensor {fqn!r}: chunks must be a list")
    chunks = []
    for c in d["chunks"]:
        _keys(c, f"a chunk of {fqn!r}", {"offsets", "sizes"})
        chunks.append(md.ChunkStorageMetadata(
            offsets=torch.Size(_ints(c["offsets"], "offsets")),
            sizes=torch.Size(_ints(c["sizes"], "sizes")),
        ))
    strides = d["strides"]
    props = md.TensorProperties(
        dtype=_dtype(d["dtype"]),
        layout=torch.strided,
        requires_grad=d["requires_grad"],
        memory_format=getattr(torch, d["memory_format"]),
        pin_memory=d["pin_memory"],
        strides=None if strides is None else tuple(_ints(strides, "strides")),
    )
    return md.TensorStorageMetadata(
        properties=props, size=torch.Size(_ints(d["size"], "size")), chunks=chunks
    )


def _planner_data_to_json(data: Any) -> Any:
    """The default planners' flattening map (``fqn -> path of keys and indices``)."""
    if data is None:
        return None
    ok = isinstance(data, dict) and all(
        isinstance(k, str)
        and isinstance(v, (tuple, list))
        and all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in v)
        for k, v in data.items()
    )
    if not ok:
        raise UsageError(
            "DmxWriter stores the planner data of DCP's default planners (a map of names to "
            "key paths); this planner's cannot be stored without pickle"
        )
    return {k: list(v) for k, v in data.items()}


def _planner_data_from_json(data: Any) -> Any:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _bad("planner_data must be an object")
    out = {}
    for k, v in data.items():
        if not isinstance(v, list) or not all(
            isinstance(p, (str, int)) and not isinstance(p, bool) for p in v
        ):
            raise _bad(f"planner_data[{k!r}] must be a list of keys and indices")
        out[k] = tuple(v)
    return out


def _item_to_json(index: Any, item: _Item) -> dict[str, Any]:
    return {
        "fqn": index.fqn,
        "offset": None if index.offset is None else [int(o) for o in index.offset],
        "index": index.index,
        "file": item.file,
        "name": item.name,
        "dtype": item.dtype,
        "shape": list(item.shape),
    }


def _metadata_to_json(metadata: Any, base: str | None) -> dict[str, Any]:
    sd = {}
    for fqn, m in metadata.state_dict_metadata.items():
        if isinstance(m, md.BytesStorageMetadata):
            sd[fqn] = {"type": "bytes"}
        elif isinstance(m, md.TensorStorageMetadata):
            sd[fqn] = _tensor_md_to_json(m)
        else:
            raise UsageError(f"{fqn!r}: unknown DCP storage metadata {type(m).__name__}")
    files: dict[str, dict[str, Any]] = {}
    items = []
    for index, item in metadata.storage_data.items():
        files[item.file] = {"sha256": item.sha256, "size": item.size, "kind": item.kind}
        items.append(_item_to_json(index, item))
    sm = metadata.storage_meta
    return {
        "format": _FORMAT,
        "format_version": _VERSION,
        "dcp_version": metadata.version,
        "base": base,
        "state_dict_metadata": sd,
        "planner_data": _planner_data_to_json(metadata.planner_data),
        "storage_meta": None if sm is None else {
            "checkpoint_id": None if sm.checkpoint_id is None else os.fspath(sm.checkpoint_id),
            "save_id": sm.save_id,
            "load_id": sm.load_id,
            "modules": [str(m) for m in sm.modules],
        },
        "files": files,
        "items": items,
    }


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise _bad(f"{what} must be a string or null")
    return v


def _storage_from_json(doc: dict[str, Any]) -> dict[Any, _Item]:
    files = doc["files"]
    if not isinstance(files, dict):
        raise _bad("files must be an object")
    for f, info in files.items():
        _keys(info, f"file {f!r}", {"sha256", "size", "kind"})
        if not _safe_name(f) or info["kind"] not in ("dmx", "delta"):
            raise _bad(f"bad rank file entry {f!r}: {info!r}")
        if not isinstance(info["sha256"], str) or not isinstance(info["size"], int):
            raise _bad(f"bad rank file entry {f!r}: {info!r}")
    if not isinstance(doc["items"], list):
        raise _bad("items must be a list")
    out = {}
    for it in doc["items"]:
        _keys(it, "an item", {"fqn", "offset", "index", "file", "name", "dtype", "shape"})
        if it["file"] not in files or not isinstance(it["name"], str):
            raise _bad(f"item {it.get('fqn')!r} names an unknown file or no tensor")
        if not isinstance(it["fqn"], str) or not (
            it["index"] is None or isinstance(it["index"], int)
        ):
            raise _bad(f"bad item {it!r}")
        if it["dtype"] != "bytes":
            _dtype(it["dtype"])
        offset = None if it["offset"] is None else _ints(it["offset"], "offset")
        f = files[it["file"]]
        out[md.MetadataIndex(it["fqn"], offset, it["index"])] = _Item(
            it["file"], it["name"], it["dtype"], tuple(_ints(it["shape"], "shape")),
            f["sha256"], f["size"], f["kind"],
        )
    return out


def _metadata_from_json(doc: Any) -> Any:
    """The DCP ``Metadata`` of a parsed metadata file; anything unknown is refused."""
    top = {"format", "format_version", "dcp_version", "base", "state_dict_metadata",
           "planner_data", "storage_meta", "files", "items"}
    _keys(doc, "the metadata file", top)
    if doc["format"] != _FORMAT or doc["format_version"] != _VERSION:
        raise _bad(f"not a {_FORMAT} version {_VERSION} file "
                   f"({doc['format']!r} version {doc['format_version']!r})")
    _opt_str(doc["base"], "base")
    if not isinstance(doc["state_dict_metadata"], dict):
        raise _bad("state_dict_metadata must be an object")
    sd = {}
    for fqn, m in doc["state_dict_metadata"].items():
        kind = m.get("type") if isinstance(m, dict) else None
        if kind == "bytes":
            _keys(m, f"bytes item {fqn!r}", {"type"})
            sd[fqn] = md.BytesStorageMetadata()
        elif kind == "tensor":
            sd[fqn] = _tensor_md_from_json(m, fqn)
        else:
            raise _bad(f"{fqn!r} has unknown type {kind!r}")
    sm = doc["storage_meta"]
    storage_meta = md.StorageMeta()
    if sm is not None:
        _keys(sm, "storage_meta", {"checkpoint_id", "save_id", "load_id", "modules"})
        modules = sm["modules"]
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise _bad("storage_meta.modules must be a list of strings")
        storage_meta = md.StorageMeta(
            checkpoint_id=_opt_str(sm["checkpoint_id"], "checkpoint_id"),
            save_id=_opt_str(sm["save_id"], "save_id"),
            load_id=_opt_str(sm["load_id"], "load_id"),
            modules=list(modules),
        )
    return md.Metadata(
        state_dict_metadata=sd,
        planner_data=_planner_data_from_json(doc["planner_data"]),
        storage_data=_storage_from_json(doc),
        storage_meta=storage_meta,
        version=_opt_str(doc["dcp_version"], "dcp_version"),
    )


def _safe_name(name: Any) -> bool:
    """A plain file name inside the checkpoint folder (no separators, no ``..``)."""
    return (
        isinstance(name, str) and name not in ("", ".", "..")
        and "/" not in name and "\\" not in name and "\0" not in name
    )


def _read_doc(folder: Path, name: str = METADATA_FILE) -> dict[str, Any]:
    path = folder / name
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{folder}: no {name}; not a checkpoint written by dmx.dcp.DmxWriter"
        ) from None
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _bad(f"{path}: not a JSON object")
    return doc


def _atomic_write(path: Path, data: bytes, sync: bool) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Starts a new load, from ``checkpoint_id`` when given."""
        self.storage_data = {}
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.load_id = uuid.uuid4().hex

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        """The checkpoint's DCP ``Metadata``, from its JSON file (unknown content refused)."""
        doc = _read_doc(self.path, _metadata_name(kwargs.get("rank")))
        meta = _metadata_from_json(doc)
        self._base = doc["base"]
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

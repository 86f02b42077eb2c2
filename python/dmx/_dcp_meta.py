"""The metadata of a ``dmx.dcp`` checkpoint: DCP's ``Metadata`` to and from JSON (never
pickle), refusing anything unknown on read; where each item lives (:class:`_Item`)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as md

from ._errors import CorruptArchiveError, UsageError


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

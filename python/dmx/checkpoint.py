"""Whole training states in one archive, as data: never a pickle.

:func:`save_state` stores any nested ``dict`` / ``list`` / ``tuple`` of tensors and plain
values; every tensor becomes a named segment (its path joined with dots: ``model.fc.weight``,
``optim.state.0.exp_avg``, ...) coded like any weight, and everything else is one tagged
JSON tree in the archive's metadata (key ``dmx.state``): ints and floats exactly (floats as
``float.hex``), bools, ``None``, strings, bytes, lists, tuples, sets, dicts with any keys
(``OrderedDict`` kept, with a state dict's ``_metadata``), ``torch.dtype``,
``torch.device``, ``torch.Size``, numpy scalars and arrays, and references to the tensor
segments. Any other object is refused with its path named.

:func:`save_checkpoint` / :func:`load_checkpoint` store and restore a model, an optimizer,
an LR scheduler, the random number generators (python ``random``, numpy, torch, CUDA when
initialised) and a user ``extra`` value through that format.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import sys
from typing import TYPE_CHECKING, Any, Unpack

from ._errors import UsageError
from ._lazy import LazyModule
from ._options import CompressOptions

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch", "dmx.checkpoint", "torch")

__all__ = [
    "save_state",
    "load_state",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "STATE_KEY",
]

#: Metadata key holding the tagged JSON tree.
STATE_KEY = "dmx.state"
#: Metadata key holding the tree's format version.
VERSION_KEY = "dmx.state.version"
VERSION = "1"

PathLike = str | os.PathLike[str]


class _Encoder:
    """Turns a nested value into a JSON tree, collecting its tensors as named segments."""

    def __init__(self, snapshot: bool):
        self.snapshot = snapshot
        self.tensors: dict[str, Any] = {}
        self.aliases: dict[tuple[Any, ...], str] = {}

    def _name(self, path: list[str]) -> str:
        base = ".".join(path) or "tensor"
        name, n = base, 0
        while name in self.tensors:
            n += 1
            name = f"{base}#{n}"
        return name

    def tensor(self, t: Any, path: list[str]) -> dict[str, Any]:
        where = ".".join(path) or "the value"
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise UsageError(f"{where}: a {type(t).__name__} (tensor subclass) cannot be stored")
        if t.layout != torch.strided or t.is_quantized:
            raise UsageError(f"{where}: only dense tensors can be stored, not {t.layout}")
        if t.device.type == "meta":
            raise UsageError(f"{where}: a tensor on the meta device has no data to store")
        node: dict[str, Any] = {}
        if isinstance(t, torch.nn.Parameter):
            node["P"] = True
        if t.requires_grad:
            node["g"] = True
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               t.stride(), t.dtype) if t.nelement() else None
        if key is not None and key in self.aliases:
            node["T"] = self.aliases[key]
            return node
        v = t.detach()
        if v.device.type != "cpu":
            v = v.to("cpu")
        elif self.snapshot:
            v = v.clone(memory_format=torch.contiguous_format)
        v = v.contiguous()
        name = self._name(path)
        self.tensors[name] = v
        if key is not None:
            self.aliases[key] = name
        node["T"] = name
        return node

    def numpy(self, a: Any, path: list[str]) -> dict[str, Any]:
        np = sys.modules["numpy"]
        if a.dtype.hasobject or a.dtype.fields is not None:
            raise UsageError(f"{'.'.join(path)}: a numpy array of dtype {a.dtype} cannot be stored")
        try:
            t = torch.from_numpy(np.ascontiguousarray(a).copy())
        except (TypeError, RuntimeError):
            return {"nd": a.dtype.str, "shape": list(a.shape),
                    "v": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}
        name = self._name(path)
        self.tensors[name] = t
        return {"nT": name, "dt": a.dtype.str}

    def items(self, pairs: Any, path: list[str]) -> list[list[Any]]:
        out = []
        for k, v in pairs:
            out.append([self.enc(k, [*path, "key"]), self.enc(v, [*path, _part(k)])])
        return out

    def enc(self, x: Any, path: list[str]) -> Any:
        """The JSON node of ``x`` at ``path``."""
        tp = type(x)
        if x is None or tp is bool or tp is int or tp is str:
            return x
        if tp is float:
            return {"f": x.hex()}
        if tp is list:
            return [self.enc(v, [*path, str(i)]) for i, v in enumerate(x)]
        if tp is tuple:
            return {"t": [self.enc(v, [*path, str(i)]) for i, v in enumerate(x)]}
        if tp is dict:
            return {"d": self.items(x.items(), path)}
        if tp is collections.OrderedDict:
            node: dict[str, Any] = {"od": self.items(x.items(), path)}
            meta = getattr(x, "_metadata", None)
            if meta is not None:
                node["m"] = self.enc(meta, [*path, "_metadata"])
            return node
        if "torch" in sys.modules and isinstance(x, torch.Tensor):
            return self.tensor(x, path)
        return self.other(x, tp, path)

    def other(self, x: Any, tp: type, path: list[str]) -> Any:
        if tp is complex:
            return {"c": [x.real.hex(), x.imag.hex()]}
        if tp is bytes:
            return {"b": base64.b64encode(x).decode()}
        if tp is bytearray:
            return {"ba": base64.b64encode(bytes(x)).decode()}
        if tp is set or tp is frozenset:
            vals = [self.enc(v, [*path, str(i)]) for i, v in enumerate(x)]
            return {"set" if tp is set else "fset": vals}
        if "torch" in sys.modules:
            if tp is torch.dtype:
                return {"dtype": str(x).removeprefix("torch.")}
            if tp is torch.device:
                return {"device": str(x)}
            if tp is torch.Size:
                return {"size": list(x)}
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(x, np.ndarray) and tp is np.ndarray:
                return self.numpy(x, path)
            if isinstance(x, np.generic) and not x.dtype.hasobject:
                return {"ns": x.dtype.str, "v": base64.b64encode(x.tobytes()).decode()}
            if tp is np.dtype or isinstance(x, np.dtype) and not x.hasobject:
                return {"npdtype": x.str}
        where = ".".join(path) or "the value"
        raise UsageError(
            f"{where}: a {tp.__module__}.{tp.__qualname__} cannot be stored as data (dicts, "
            f"lists, tuples, sets, numbers, strings, bytes, None, tensors, numpy arrays, "
            f"torch dtypes, devices and sizes can)"
        )


def _part(k: Any) -> str:
    return k if type(k) is str else str(k)


class _Decoder:
    """Rebuilds the value of a JSON tree with its tensors."""

    def __init__(self, tensors: dict[str, Any], map_location: Any):
        self.tensors = tensors
        self.map_location = map_location

    def tensor(self, node: dict[str, Any]) -> Any:
        name = node["T"]
        if name not in self.tensors:
            raise UsageError(f"the state refers to a tensor {name!r} the archive does not hold")
        t = self.tensors[name]
        if self.map_location is not None and str(self.map_location) != "cpu":
            t = t.to(self.map_location)
        if node.get("P"):
            return torch.nn.Parameter(t, requires_grad=bool(node.get("g")))
        if node.get("g"):
            t = t.requires_grad_(True)
        return t

    def dec(self, n: Any) -> Any:
        """The value of node ``n``."""
        if n is None or type(n) in (bool, int, str):
            return n
        if type(n) is list:
            return [self.dec(v) for v in n]
        if type(n) is not dict or not n:
            raise UsageError(f"not a dmx state node: {n!r}")
        if "T" in n:
            return self.tensor(n)
        tag, val = next(iter(n.items()))
        simple = {
            "f": float.fromhex,
            "c": lambda v: complex(float.fromhex(v[0]), float.fromhex(v[1])),
            "b": base64.b64decode,
            "ba": lambda v: bytearray(base64.b64decode(v)),
            "t": lambda v: tuple(self.dec(x) for x in v),
            "set": lambda v: {self.dec(x) for x in v},
            "fset": lambda v: frozenset(self.dec(x) for x in v),
            "d": lambda v: {self.dec(k): self.dec(x) for k, x in v},
            "dtype": lambda v: getattr(torch, v),
            "device": lambda v: torch.device(v),
            "size": lambda v: torch.Size(v),
        }
        if tag in simple:
            return simple[tag](val)
        if tag == "od":
            out = collections.OrderedDict((self.dec(k), self.dec(x)) for k, x in val)
            if "m" in n:
                out._metadata = self.dec(n["m"])  # type: ignore[attr-defined]
            return out
        return self.numpy(tag, n)

    def numpy(self, tag: str, n: dict[str, Any]) -> Any:
        import numpy as np

        if tag == "nT":
            return self.tensors[n["nT"]].numpy().view(np.dtype(n["dt"]))
        if tag == "nd":
            raw = base64.b64decode(n["v"])
            return np.frombuffer(raw, dtype=np.dtype(n["nd"])).reshape(n["shape"]).copy()
        if tag == "ns":
            return np.frombuffer(base64.b64decode(n["v"]), dtype=np.dtype(n["ns"]))[0]
        if tag == "npdtype":
            return np.dtype(n["npdtype"])
        raise UsageError(f"unknown dmx state node tag {tag!r}")


def encode(obj: Any, snapshot: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """``obj`` as ``(tensors, metadata)``: the named tensor segments (on the CPU, contiguous;
    copies when ``snapshot``, else possibly views of the caller's memory) and the metadata
    holding the JSON tree. Tensors that are views of one another are stored once when they
    are the same view, else copied."""
    from .torch import _shared_groups

    e = _Encoder(snapshot)
    tree = e.enc(obj, [])
    for group in _shared_groups(e.tensors):
        for name in sorted(group)[1:]:
            e.tensors[name] = e.tensors[name].clone()
    text = json.dumps(tree, separators=(",", ":"), allow_nan=False)
    return e.tensors, {STATE_KEY: text, VERSION_KEY: VERSION}


def decode(tensors: dict[str, Any], metadata: dict[str, str] | None, map_location: Any) -> Any:
    """The value stored as ``tensors`` and ``metadata`` by :func:`encode`."""
    if not metadata or STATE_KEY not in metadata:
        raise UsageError("this archive holds no dmx state (no 'dmx.state' metadata)")
    if metadata.get(VERSION_KEY, VERSION) != VERSION:
        raise UsageError(f"dmx state version {metadata[VERSION_KEY]!r} is not supported")
    try:
        tree = json.loads(metadata[STATE_KEY])
    except ValueError as err:
        raise UsageError(f"the dmx state metadata is not valid JSON: {err}") from None
    return _Decoder(tensors, map_location).dec(tree)


def _lossy_keep(modes: dict[str, Any]) -> dict[str, Any]:
    """Lossy modes keep counters and RNG states exact."""
    if modes.get("mode", "lossless") == "lossless":
        return modes
    keep = [*modes.get("keep_lossless", ()), "*.step", "rng.*", "scheduler.*"]
    return {**modes, "keep_lossless": keep}


def save_state(path: PathLike, obj: Any, **modes: Unpack[CompressOptions]) -> None:
    """Store ``obj`` (nested dicts, lists, tuples of tensors and plain values) in the archive
    ``path``, replacing it atomically. ``modes`` are the options of :func:`dmx.compress`
    (lossless by default)."""
    from .torch import save_file

    tensors, meta = encode(obj)
    save_file(tensors, path, meta, **_lossy_keep(dict(modes)))


def read_raw(path: PathLike) -> tuple[dict[str, Any], dict[str, str] | None]:
    """All tensors (on the CPU) and the metadata of an archive or ``.safetensors`` file."""
    from . import _dmx
    from .torch import load_file

    meta = _dmx.Reader(path, None).metadata()
    return load_file(path), meta


def load_state(path: PathLike, map_location: Any = "cpu") -> Any:
    """The value stored by :func:`save_state` (or :func:`save_checkpoint`) in ``path`` (a
    ``.dmx`` archive or a ``.safetensors`` file), tensors moved to ``map_location``."""
    tensors, meta = read_raw(path)
    return decode(tensors, meta, map_location)


def rng_state() -> dict[str, Any]:
    """The states of python ``random``, numpy's global generator (when numpy is imported),
    torch's CPU generator and, when CUDA is initialised, every CUDA device's."""
    s: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if "numpy" in sys.modules:
        s["numpy"] = sys.modules["numpy"].random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    """Restores states returned by :func:`rng_state`."""
    if "python" in s:
        random.setstate(s["python"])
    if "torch" in s:
        torch.set_rng_state(s["torch"].cpu())
    if "numpy" in s:
        import numpy as np

        np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def training_state(model: Any, optimizer: Any, scheduler: Any, extra: Any,
                   rng: bool) -> dict[str, Any]:
    """The tree :func:`save_checkpoint` stores."""
    obj: dict[str, Any] = {}
    if model is not None:
        obj["model"] = model.state_dict()
    if optimizer is not None:
        obj["optim"] = optimizer.state_dict()
    if scheduler is not None:
        obj["scheduler"] = scheduler.state_dict()
    if rng:
        obj["rng"] = rng_state()
    if extra is not None:
        obj["extra"] = extra
    return obj


def save_checkpoint(
    path: PathLike,
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    extra: Any = None,
    rng: bool = True,
    **modes: Unpack[CompressOptions],
) -> None:
    """Store a training state in the archive ``path``: ``model.state_dict()`` as segments
    ``model.*``, ``optimizer.state_dict()`` as ``optim.state.<i>.<key>`` plus its
    param_groups as data, ``scheduler.state_dict()``, the RNG states (``rng=False`` leaves
    them out) and ``extra`` (any value :func:`save_state` accepts). ``modes`` are the
    options of :func:`dmx.compress` (lossless by default; lossy modes keep step counters
    and RNG states exact)."""
    save_state(path, training_state(model, optimizer, scheduler, extra, rng), **modes)


def apply_state(state: Any, model: Any, optimizer: Any, scheduler: Any, rng: bool,
                strict: bool, where: str) -> Any:
    """Loads the parts of a :func:`save_checkpoint` tree into the objects given; returns
    its ``extra``."""
    if type(state) is not dict:
        raise UsageError(f"{where} does not hold a dmx training checkpoint")
    for name, obj in (("model", model), ("optim", optimizer), ("scheduler", scheduler)):
        if obj is not None and name not in state:
            raise UsageError(f"{where} holds no {name} state")
    if model is not None:
        model.load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if rng and "rng" in state:
        set_rng_state(state["rng"])
    return state.get("extra")


def load_checkpoint(
    path: PathLike,
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    map_location: Any = "cpu",
    rng: bool = True,
    strict: bool = True,
) -> Any:
    """Load a checkpoint written by :func:`save_checkpoint` into the objects given (each
    must be in the archive) and restore the RNG states (``rng=False`` leaves them); returns
    the ``extra`` value (``None`` if none was stored)."""
    state = load_state(path, map_location)
    return apply_state(state, model, optimizer, scheduler, rng, strict, os.fspath(path))

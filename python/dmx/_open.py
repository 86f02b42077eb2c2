"""``safe_open``: lazy reads of single tensors and row slices, like ``safetensors.safe_open``."""

from __future__ import annotations

import os
from typing import Any

from . import _dmx
from ._dtypes import numpy_types, torch_types
from ._lazy import require
from ._errors import UsageError

_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}


def _empty(framework: str, nbytes: int) -> tuple[Any, Any]:
    """A fresh byte array of ``nbytes`` for ``framework`` and a writable buffer over it."""
    if framework == "pt":
        torch = require("torch", 'safe_open(..., framework="pt")')
        require("numpy", 'safe_open(..., framework="pt") (tensor memory is handed over through numpy)')
        t = torch.empty(nbytes, dtype=torch.uint8)
        return t, t.numpy()
    np = require("numpy", 'safe_open(..., framework="np")')
    a = np.empty(nbytes, dtype=np.uint8)
    return a, a


def _as_typed(framework: str, raw: Any, dtype: str, shape: list[int]) -> Any:
    """The byte array ``raw`` seen as ``dtype`` with ``shape`` (no copy)."""
    if framework == "pt":
        types = torch_types()
        if dtype not in types:
            raise UsageError(f"torch has no dtype for the safetensors dtype {dtype}")
        return raw.view(types[dtype]).reshape(shape)
    types = numpy_types()
    if dtype not in types:
        raise UsageError(f"numpy has no dtype for the safetensors dtype {dtype}")
    return raw.view(types[dtype]).reshape(shape)


def _to_device(framework: str, value: Any, device: str) -> Any:
    if framework == "pt" and str(device) != "cpu":
        return value.to(device)
    return value


class _Slice:
    """A tensor not yet read: ``get_shape()``, ``get_dtype()``, and indexing
    (``[i]``, ``[i:j]``, ``[:, a:b]``, ...) that decodes only the rows asked for."""

    def __init__(self, handle: "safe_open", name: str):
        self._h = handle
        self._name = name
        self._dtype, self._shape, self._nbytes = handle._reader.info(name)

    def get_shape(self) -> list[int]:
        """The tensor's shape."""
        return list(self._shape)

    def get_dtype(self) -> str:
        """The tensor's safetensors dtype (``"BF16"``, ``"F32"``, ...)."""
        return self._dtype

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, tuple):
            index = (index,)
        if not self._shape:
            if index not in ((), (Ellipsis,)):
                raise UsageError(f"{self._name!r} is a scalar: only [...] or [()] index it")
            return self._h.get_tensor(self._name)
        first, rest = (index[0], index[1:]) if index else (slice(None), ())
        rows = self._shape[0]
        if first is Ellipsis:
            # The rows are not narrowed: read them all, index the whole tensor.
            part = self._h._read_rows(self._name, self._dtype, self._shape, 0, rows)
            return self._finish(part[index])
        if isinstance(first, slice):
            start, stop, step = first.indices(rows)
            if step <= 0:
                raise UsageError("negative or zero slice steps are not supported")
            stop = max(start, stop)
            lo, hi, pick = start, stop, slice(None, None, step)
        else:
            try:
                i = int(first)
            except TypeError:
                raise UsageError(f"unsupported index {first!r}") from None
            if i < -rows or i >= rows:
                raise IndexError(f"index {i} is out of range for {rows} rows")
            i %= rows
            lo, hi, pick = i, i + 1, 0
        part = self._h._read_rows(self._name, self._dtype, self._shape, lo, hi)
        return self._finish(part[(pick, *rest)])

    def _finish(self, part: Any) -> Any:
        if self._h._framework == "pt":
            part = part.contiguous()
        else:
            np = require("numpy", 'safe_open(..., framework="np")')
            if isinstance(part, np.ndarray) and not part.flags.c_contiguous:
                part = part.copy(order="C")
        return _to_device(self._h._framework, part, self._h._device)


class safe_open:
    """Opens a ``.dmx`` archive (or a ``.safetensors`` file) for lazy reads, like
    ``safetensors.safe_open``::

        with dmx.safe_open("model.dmx", framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)        # decodes only this tensor's chunks
            rows = f.get_slice("emb")[10:20]  # decodes only the chunks of these rows

    ``framework`` is ``"pt"`` (torch) or ``"np"`` (numpy); ``device`` is where torch
    tensors go (decoded on the CPU, then moved). Lossy archives give their decoded values
    in the original dtype. Every decoded chunk's checksum is checked. For the archive of a
    model folder, ``file`` names the safetensors file to read (see :meth:`files`)."""

    def __init__(
        self,
        filename: str | os.PathLike[str],
        framework: str = "pt",
        device: Any = "cpu",
        *,
        file: str | None = None,
    ):
        fw = _FRAMEWORKS.get(str(framework).lower())
        if fw is None:
            raise UsageError(f"framework {framework!r} is not supported: use 'pt' or 'np'")
        if fw == "np" and str(device) != "cpu":
            raise UsageError("numpy arrays live on the CPU: device must be 'cpu'")
        self._framework = fw
        self._device = device
        self._reader = _dmx.Reader(filename, file)

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def keys(self) -> list[str]:
        """The tensor names, sorted (as safetensors gives them)."""
        return sorted(self._reader.keys())

    def offset_keys(self) -> list[str]:
        """The tensor names in the order of their data in the file."""
        return self._reader.keys()

    def files(self) -> list[str]:
        """The safetensors files of the archive (several for a model folder; empty for a
        plain ``.safetensors`` file)."""
        return self._reader.files()

    def metadata(self) -> dict[str, str] | None:
        """The safetensors ``__metadata__``, or ``None``."""
        return self._reader.metadata()

    def get_tensor(self, name: str) -> Any:
        """Tensor ``name``, decoded straight into the memory of the returned tensor."""
        dtype, shape, nbytes = self._reader.info(name)
        raw, buf = _empty(self._framework, nbytes)
        self._reader.read_into([name], [buf])
        return _to_device(self._framework, _as_typed(self._framework, raw, dtype, shape), self._device)

    def get_slice(self, name: str) -> _Slice:
        """Tensor ``name`` without reading it; index the result to read rows."""
        return _Slice(self, name)

    def _read_rows(self, name: str, dtype: str, shape: list[int], lo: int, hi: int) -> Any:
        rows = shape[0]
        row_bytes = 0 if rows == 0 else self._reader.info(name)[2] // rows
        raw, buf = _empty(self._framework, (hi - lo) * row_bytes)
        self._reader.read_rows_into(name, lo, hi, buf)
        return _as_typed(self._framework, raw, dtype, [hi - lo, *shape[1:]])

"""Report objects: the CLI's ``--json`` output with attribute access."""

from __future__ import annotations

import copy
import json
from typing import Any


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Report(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Report:
    """A report: its fields (the same as the CLI's ``--json``) are attributes, nested
    objects are reports too; ``to_dict()`` returns the plain JSON data."""

    def __init__(self, data: dict[str, Any]):
        object.__setattr__(self, "_data", data)

    @classmethod
    def _from_json(cls, text: str) -> "Report":
        return cls(json.loads(text))

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return _wrap(self._data[name])

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("reports are read-only")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._data))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> list[str]:
        """The field names."""
        return list(self._data)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (a deep copy): exactly the CLI's ``--json``."""
        return copy.deepcopy(self._data)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self._data, indent=indent)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in list(self._data.items())[:6])
        more = ", ..." if len(self._data) > 6 else ""
        return f"{type(self).__name__}({fields}{more})"


class CompressReport(Report):
    """What ``compress`` and ``save_file`` did: sizes, counts, per-dtype statistics."""


class InfoReport(Report):
    """``info``: tensors, codecs, sizes and bits per weight of an archive."""


class VerifyReport(Report):
    """``verify``: per-file results; ``ok`` is true when every check passed."""


class DeltaReport(Report):
    """``delta_compress``: sizes and bits per parameter of a delta."""


class DeltaInfo(Report):
    """``delta_info``: sizes of a delta per component and role."""


class DiffReport(Report):
    """``diff``: how far checkpoint B moved from A, per tensor, layer, component and role.
    ``top_tensors`` lists the float tensors that moved most (``top=`` of ``diff``)."""


class ChainReport(Report):
    """``chain_compress`` / ``chain_append``: the entries added."""


class ChainInfo(Report):
    """``chain_info``: entries of a chain and totals."""


class ReconstructReport(Report):
    """``chain_reconstruct``: the files restored and whether each matched its hash."""


class ChainVerifyReport(Report):
    """``chain_verify``: every stored file's hash and every entry restored."""

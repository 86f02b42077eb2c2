"""Optional frameworks, imported on first use.

``import dmx.torch`` and ``import dmx.numpy`` work without torch or numpy installed (as
``import dmx`` does); the first call that needs the framework imports it, or raises an
``ImportError`` that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def require(name: str, needed_by: str, install: str | None = None) -> ModuleType:
    """Imports module ``name``, or raises an ``ImportError`` saying what needs it and what to
    install."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{needed_by} needs {name}, which is not installed: pip install {install or name}"
        ) from e


class LazyModule:
    """Stands for module ``name`` and imports it when an attribute is first read."""

    def __init__(self, name: str, needed_by: str, install: str) -> None:
        self._name = name
        self._needed_by = needed_by
        self._install = install
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            self._module = require(self._name, self._needed_by, self._install)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

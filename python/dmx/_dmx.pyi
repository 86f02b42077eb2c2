"""Type stubs of the Rust extension ``dmx._dmx`` (the engine side of the ``dmx`` package).
Use the public API in ``dmx``, ``dmx.torch`` and ``dmx.numpy``; these functions return the
CLI's ``--json`` report text, which ``dmx`` wraps in report objects."""

import os
from collections.abc import Callable, Sequence
from typing import Any

_Path = str | os.PathLike[str]
_Progress = Callable[[str, int, int], object] | None

__version__: str

class CompressArgs:
    """The keyword arguments of ``compress`` and ``save_tensors``, checked once."""

    def __init__(
        self, *, mode: str = "lossless", mantissa_bits: int | None = None,
        group_size: int | None = None, max_rel_error: float | None = None,
        keep_lossless: Sequence[str] = ..., cast: str | None = None,
        allow_cast_overflow: bool = False, threads: int | None = None, force: bool = False,
        progress: _Progress = None,
    ) -> None: ...

def compress(src: _Path, dst: _Path, args: CompressArgs) -> str: ...
def decompress(
    src: _Path, dst: _Path, *, threads: int | None = None, force: bool = False,
    progress: _Progress = None,
) -> None: ...
def info(path: _Path) -> str: ...
def verify(
    archive: _Path, original: _Path | None = None, *, max_rel_error: float | None = None,
    base: _Path | None = None, threads: int | None = None, progress: _Progress = None,
) -> str: ...
def extract(
    archive: _Path, dst: _Path, tensors: Sequence[str], *, threads: int | None = None,
    force: bool = False, progress: _Progress = None,
) -> None: ...
def delta_compress(
    base: _Path, target: _Path, dst: _Path, *, precision: str = "lossless",
    threads: int | None = None, force: bool = False, progress: _Progress = None,
) -> str: ...
def delta_reconstruct(
    base: _Path, delta: _Path, dst: _Path, *, threads: int | None = None, force: bool = False,
    progress: _Progress = None,
) -> None: ...
def delta_info(path: _Path) -> str: ...
def diff(a: _Path, b: _Path, *, threads: int | None = None, progress: _Progress = None) -> str: ...
def chain_compress(
    checkpoints: Sequence[_Path], out_dir: _Path, *, precision: str = "lossless",
    max_depth: int = 16, threads: int | None = None, force: bool = False,
    progress: _Progress = None,
) -> str: ...
def chain_append(
    dir: _Path, checkpoints: Sequence[_Path], *, threads: int | None = None,
    progress: _Progress = None,
) -> str: ...
def chain_reconstruct(
    dir: _Path, out_dir: _Path, indices: Sequence[int] | None = None, *,
    threads: int | None = None, force: bool = False, progress: _Progress = None,
) -> str: ...
def chain_info(dir: _Path) -> str: ...
def chain_verify(dir: _Path, *, threads: int | None = None, progress: _Progress = None) -> str: ...
def chain_prune(dir: _Path, keep: list[int], *, threads: int | None = None, progress: _Progress = None) -> str: ...
def save_tensors(
    tensors: Sequence[tuple[str, str, Sequence[int], Any]], dst: _Path,
    metadata: dict[str, str] | None, args: CompressArgs,
) -> str:
    """Compresses ``(name, dtype, shape, buffer)`` tensors read in place (C-contiguous
    buffers) into the archive ``dst``; returns the report as JSON."""

def cli_main(argv: Sequence[str]) -> int:
    """Runs the ``dmx`` command (``argv[0]`` is the program name); returns its exit status."""

def _panic_for_tests() -> None: ...

class Reader:
    """The tensors of a ``.dmx`` archive (``file`` selects one safetensors file of a
    folder archive) or of a plain ``.safetensors`` file."""

    def __init__(self, path: _Path, file: str | None = None) -> None: ...
    def keys(self) -> list[str]: ...
    def tensors(self) -> list[tuple[str, str, list[int], int]]: ...
    def info(self, name: str) -> tuple[str, list[int], int]: ...
    def metadata(self) -> dict[str, str] | None: ...
    def files(self) -> list[str]: ...
    def is_archive(self) -> bool: ...
    def read_into(
        self, names: Sequence[str], buffers: Sequence[Any], *, threads: int | None = None,
        progress: _Progress = None,
    ) -> None:
        """Decodes the named tensors into the writable buffers (exact byte lengths)."""
    def read_rows_into(self, name: str, start: int, stop: int, buffer: Any) -> None:
        """Decodes rows ``start:stop`` (first dimension) of ``name`` into ``buffer``."""

"""Checkpoints inside a training loop, stored as a chain (anchors and deltas).

:class:`CheckpointChain` appends the full training state of a step (model, optimizer,
scheduler, RNG states, ``extra``; the format of :mod:`dmx.checkpoint`) to a chain folder
through the chain engine, so the folder stays an ordinary chain that ``dmx chain-info``,
``dmx chain-reconstruct`` and ``dmx verify DIR`` read. Each entry is a safetensors file
``step-<step:012>.safetensors`` holding the tensors, with the rest of the state as JSON in
its metadata.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

from ._errors import UsageError
from ._reports import ChainInfo, ChainReport, ChainVerifyReport
from .checkpoint import apply_state, decode, encode, read_raw, training_state

__all__ = ["CheckpointChain"]

_NAME = re.compile(r"^step-(\d{12,})\.safetensors$")
_STAGING = ".dmx-staging-"


def _entry_name(step: int) -> str:
    return f"step-{step:012d}.safetensors"


def write_safetensors(path: str, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Writes ``tensors`` (CPU, contiguous) and ``metadata`` as a ``.safetensors`` file."""
    from .torch import _bytes_of, _names

    header: dict[str, Any] = {}
    bufs = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _names():
            raise UsageError(f"{name!r} has dtype {t.dtype}, which safetensors cannot store")
        b = _bytes_of(name, t)
        header[name] = {"dtype": _names()[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + b.nbytes]}
        offset += b.nbytes
        bufs.append(b)
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in bufs:
            f.write(memoryview(b))


class CheckpointChain:
    """A chain folder ``dir`` of training states, one entry per step, in increasing step
    order. ``precision`` (``"lossless"``, ``"int16"``, ``"int32"``) and ``max_depth`` apply
    when the chain is created; an existing chain keeps its own (a different ``precision``
    is refused). One writer at a time (the chain engine locks the folder while it writes).

    ``append(..., background=True)`` copies the tensors to host memory, then writes on a
    worker thread; at most one write is in flight (the next append waits for it) and its
    error, if any, is raised by the next call or by :meth:`wait`. Use the chain as a context
    manager (or call :meth:`wait`) so the last write is finished."""

    def __init__(self, dir: str | os.PathLike[str], precision: str = "lossless",
                 max_depth: int = 16, *, threads: int | None = None):
        self.dir = os.path.abspath(os.fspath(dir))
        self.precision = precision
        self.max_depth = max_depth
        self.threads = threads
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        m = self._manifest()
        if m is not None and m["precision"] != precision:
            raise UsageError(
                f"{self.dir}: the chain's precision is {m['precision']}, not {precision}"
            )
        self._sweep()

    # -- reading ---------------------------------------------------------------------------

    def _manifest(self) -> dict[str, Any] | None:
        path = os.path.join(self.dir, "manifest.json")
        if not os.path.exists(path):
            if os.path.exists(self.dir) and not os.path.isdir(self.dir):
                raise UsageError(f"{self.dir}: exists and is not a folder")
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _entries(self) -> list[tuple[int, int, str]]:
        """``(step, index, name)`` of every entry."""
        m = self._manifest()
        out = []
        for e in [] if m is None else m["entries"]:
            match = _NAME.match(e["name"])
            if match is None:
                raise UsageError(
                    f"{self.dir}: entry {e['index']} ({e['name']!r}) was not written by "
                    f"CheckpointChain"
                )
            out.append((int(match.group(1)), e["index"], e["name"]))
        return out

    def steps(self) -> list[int]:
        """The steps stored, in order (a write in flight is not counted until done)."""
        return [s for s, _, _ in self._entries()]

    def info(self) -> ChainInfo:
        """``dmx chain-info`` of the folder."""
        self.wait()
        from . import chain_info

        return chain_info(self.dir)

    def verify(self, *, check: bool = True) -> ChainVerifyReport:
        """``dmx verify DIR``: every stored file and every entry restored and checked; with
        ``check`` (default) a failure raises :class:`dmx.VerificationError`."""
        self.wait()
        from . import chain_verify

        return chain_verify(self.dir, threads=self.threads, check=check)

    def load_state(self, step: int | None = None, map_location: Any = "cpu") -> Any:
        """The stored tree of ``step`` (default: the last one), as :func:`dmx.torch.load_state`
        returns it: ``{"model": ..., "optim": ..., "scheduler": ..., "rng": ..., "extra": ...}``."""
        self.wait()
        entries = self._entries()
        if not entries:
            raise UsageError(f"{self.dir}: the chain holds no checkpoint")
        if step is None:
            step = entries[-1][0]
        found = [e for e in entries if e[0] == step]
        if not found:
            raise UsageError(f"{self.dir}: no checkpoint of step {step} (steps: "
                             f"{[e[0] for e in entries]})")
        _, index, name = found[0]
        from . import chain_reconstruct

        with tempfile.TemporaryDirectory(prefix=self._staging_prefix(),
                                         dir=os.path.dirname(self.dir)) as tmp:
            out = os.path.join(tmp, "out")
            chain_reconstruct(self.dir, out, [index], threads=self.threads)
            tensors, meta = read_raw(os.path.join(out, name))
        return decode(tensors, meta, map_location)

    def load(self, step: int | None = None, *, model: Any = None, optimizer: Any = None,
             scheduler: Any = None, map_location: Any = "cpu", rng: bool = True,
             strict: bool = True) -> Any:
        """Restore ``step`` (default: the last) into the objects given, and the RNG states
        (unless ``rng=False``); returns its ``extra``."""
        state = self.load_state(step, map_location)
        return apply_state(state, model, optimizer, scheduler, rng, strict,
                           f"{self.dir} step {step}")

    # -- writing ---------------------------------------------------------------------------

    def _staging_prefix(self) -> str:
        return f"{_STAGING}{os.path.basename(self.dir)}-"

    def _sweep(self) -> None:
        """Removes staging folders that killed writers left next to the chain."""
        parent = os.path.dirname(self.dir)
        if not os.path.isdir(parent):
            return
        for name in os.listdir(parent):
            if name.startswith(self._staging_prefix()):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)

    def _raise_pending(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def wait(self) -> None:
        """Waits for the write in flight, if any; raises its error, if it failed."""
        t, self._thread = self._thread, None
        if t is not None:
            t.join()
        self._raise_pending()

    def append(self, step: int, *, model: Any = None, optimizer: Any = None,
               scheduler: Any = None, extra: Any = None, rng: bool = True,
               background: bool = False) -> ChainReport | None:
        """Store the state of ``step`` (an int above every step stored) as the chain's next
        entry. Returns the chain engine's report, or ``None`` for a background write."""
        self.wait()
        if type(step) is not int or step < 0:
            raise UsageError(f"step must be a non-negative int, got {step!r}")
        steps = self.steps()
        if steps and step <= steps[-1]:
            raise UsageError(f"step {step} is not after the last stored step {steps[-1]}")
        state = training_state(model, optimizer, scheduler, extra, rng)
        tensors, meta = encode(state, snapshot=background)
        if not background:
            return self._write(step, tensors, meta)

        def run() -> None:
            try:
                self._write(step, tensors, meta)
            except BaseException as e:  # re-raised by the next call
                self._error = e

        self._thread = threading.Thread(target=run, name=f"dmx-chain-{step}", daemon=False)
        self._thread.start()
        return None

    def _write(self, step: int, tensors: dict[str, Any], meta: dict[str, str]) -> ChainReport:
        from . import chain_append, chain_compress

        parent = os.path.dirname(self.dir)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=self._staging_prefix(), dir=parent)
        try:
            path = os.path.join(staging, _entry_name(step))
            write_safetensors(path, tensors, meta)
            if self._manifest() is None:
                return chain_compress([path], self.dir, precision=self.precision,
                                      max_depth=self.max_depth, threads=self.threads,
                                      force=False)
            return chain_append(self.dir, [path], threads=self.threads)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def prune(self, keep: int | Iterable[int]) -> Any:
        """Remove old steps: ``keep`` is how many of the last steps to keep, or the steps to
        keep. Entries a kept entry depends on are re-anchored, never lost (``dmx
        chain-prune``)."""
        self.wait()
        entries = self._entries()
        if isinstance(keep, int):
            if keep < 1:
                raise UsageError("prune must keep at least one step")
            indices = [i for _, i, _ in entries[-keep:]]
        else:
            wanted = set(keep)
            missing = wanted - {s for s, _, _ in entries}
            if missing:
                raise UsageError(f"{self.dir}: no checkpoint of steps {sorted(missing)}")
            indices = [i for s, i, _ in entries if s in wanted]
        from . import chain_prune

        return chain_prune(self.dir, indices, threads=self.threads)

    def __enter__(self) -> CheckpointChain:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.wait()
        else:
            t, self._thread = self._thread, None
            if t is not None:
                t.join()

"""Hugging Face ``transformers`` Trainer checkpoints stored in a dmx chain.

``DmxCheckpointCallback`` appends every ``checkpoint-<step>/`` folder the Trainer writes to a
dmx chain at ``on_save`` (anchors and deltas from the previous step: ``optimizer.pt`` and the
model are stored as deltas), optionally removing the original folder once the chain holds a
verified copy; ``materialize`` rebuilds a step's folder byte for byte, ready for
``trainer.train(resume_from_checkpoint=...)``::

    trainer = Trainer(..., callbacks=[dmx.hf.DmxCheckpointCallback("run/chain")])
    trainer.train()
    dmx.hf.materialize("run/chain", 600, "run/restored-600")
    trainer.train(resume_from_checkpoint="run/restored-600")

Where the chain engine does not take checkpoint folders (dmx builds before folder chains),
each folder is stored as its own standalone archive ``<chain_dir>/checkpoint-<step>.dmx``
instead; ``materialize`` reads either layout.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from . import (
    chain_append,
    chain_compress,
    chain_info,
    chain_reconstruct,
    compress,
    decompress,
)
from ._errors import DmxError, UsageError, VerificationError
from ._lazy import require

require("transformers", "dmx.hf")
from transformers import TrainerCallback  # noqa: E402

__all__ = ["DmxCheckpointCallback", "materialize", "steps"]

_PREFIX = "checkpoint-"
_MANIFEST = "manifest.json"
_ARCHIVE = re.compile(r"^checkpoint-(\d+)\.dmx$")


def _folder_name(step: int) -> str:
    return f"{_PREFIX}{int(step)}"


def _layout(chain_dir: Path) -> str | None:
    """``"chain"`` (a dmx chain), ``"archives"`` (one archive per step) or ``None`` (empty)."""
    if (chain_dir / _MANIFEST).is_file():
        return "chain"
    if chain_dir.is_dir() and any(_ARCHIVE.match(p.name) for p in chain_dir.iterdir()):
        return "archives"
    return None


def _chains_take_folders() -> bool:
    """Whether this dmx's chain engine accepts checkpoint folders (probed once, on a tiny
    folder in a temporary directory)."""
    global _FOLDER_CHAINS
    if _FOLDER_CHAINS is None:
        with tempfile.TemporaryDirectory(prefix="dmx-hf-probe-") as tmp:
            folder = Path(tmp) / "checkpoint-0"
            folder.mkdir()
            (folder / "trainer_state.json").write_text("{}")
            try:
                chain_compress([folder], Path(tmp) / "chain", threads=1)
                _FOLDER_CHAINS = True
            except UsageError as e:
                if "folder" not in str(e):
                    raise
                _FOLDER_CHAINS = False
    return _FOLDER_CHAINS


_FOLDER_CHAINS: bool | None = None


def steps(chain_dir: str | os.PathLike[str]) -> list[int]:
    """The global steps whose checkpoint folders ``chain_dir`` holds, in order."""
    d = Path(chain_dir)
    layout = _layout(d)
    if layout == "chain":
        return [int(n[len(_PREFIX):]) for n in _chain_names(d).values()]
    if layout == "archives":
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ARCHIVE.match(p.name)))
    return []


def _chain_names(d: Path) -> dict[int, str]:
    """Chain index -> entry name, for the entries named ``checkpoint-<step>``."""
    entries = chain_info(d).to_dict()["entries"]
    return {
        e["index"]: e["name"]
        for e in entries
        if e["name"].startswith(_PREFIX) and e["name"][len(_PREFIX):].isdigit()
    }


def _same_tree(a: Path, b: Path) -> bool:
    """Whether folders ``a`` and ``b`` hold the same files with the same bytes."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*"))
    if files_a != files_b:
        return False
    return all(
        (a / f).is_dir() == (b / f).is_dir()
        and ((a / f).is_dir() or filecmp.cmp(a / f, b / f, shallow=False))
        for f in files_a
    )


def materialize(
    chain_dir: str | os.PathLike[str],
    step: int,
    out_dir: str | os.PathLike[str],
    *,
    threads: int | None = None,
    force: bool = False,
) -> Path:
    """Rebuild the ``checkpoint-<step>`` folder stored in ``chain_dir`` as ``out_dir``, byte
    for byte (every file's hash is checked); ``force`` replaces an existing ``out_dir``.
    Returns ``out_dir``."""
    d, out = Path(chain_dir), Path(out_dir)
    name = _folder_name(step)
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass force=True to replace it")
    layout = _layout(d)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dmx-hf-", dir=out.parent) as tmp:
        restored = Path(tmp) / name
        if layout == "chain":
            index = next((i for i, n in _chain_names(d).items() if n == name), None)
            if index is None:
                raise UsageError(f"{d}: the chain has no {name}; it has steps {steps(d)}")
            chain_reconstruct(d, tmp, [index], threads=threads)
        elif layout == "archives" and (d / f"{name}.dmx").is_file():
            decompress(d / f"{name}.dmx", restored, threads=threads)
        else:
            raise UsageError(f"{d}: no stored {name}; it has steps {steps(d)}")
        if not restored.is_dir():
            raise VerificationError(f"{d}: {name} did not restore as a folder")
        if out.exists():
            shutil.rmtree(out)
        os.replace(restored, out)
    return out


class DmxCheckpointCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that stores each checkpoint folder the Trainer
    saves (``<output_dir>/checkpoint-<global_step>``) into the dmx chain ``chain_dir``.

    ``precision``: ``"lossless"`` (default; restores byte for byte), ``"int16"`` or
    ``"int32"`` (quantized chain); ``max_depth``: deltas before a new anchor;
    ``keep_original``: with ``False`` the Trainer's folder is removed once the chain holds
    it and it was restored and compared byte for byte (on any failure it is kept and the
    error raised). Only the main process (``state.is_world_process_zero``) writes."""

    def __init__(
        self,
        chain_dir: str | os.PathLike[str],
        *,
        precision: str = "lossless",
        max_depth: int = 16,
        keep_original: bool = True,
        threads: int | None = None,
    ) -> None:
        if precision not in ("lossless", "int16", "int32"):
            raise UsageError(f"precision must be 'lossless', 'int16' or 'int32', not {precision!r}")
        self.chain_dir = Path(chain_dir)
        self.precision = precision
        self.max_depth = max_depth
        self.keep_original = keep_original
        self.threads = threads

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Appends the folder just saved to the chain (and removes it if asked)."""
        if not state.is_world_process_zero:
            return control
        folder = Path(args.output_dir) / _folder_name(state.global_step)
        if not folder.is_dir():
            raise UsageError(f"{folder}: the Trainer's checkpoint folder is missing")
        self.store(folder, state.global_step)
        return control

    def store(self, folder: str | os.PathLike[str], step: int) -> None:
        """Stores ``folder`` as step ``step`` (what ``on_save`` does); usable on its own for
        folders written earlier."""
        folder = Path(folder)
        if folder.name != _folder_name(step):
            raise UsageError(f"{folder}: expected a folder named {_folder_name(step)}")
        if step in steps(self.chain_dir):
            raise UsageError(f"{self.chain_dir} already holds step {step}")
        layout = _layout(self.chain_dir)
        if layout is None:
            layout = "chain" if _chains_take_folders() else "archives"
        if layout == "chain":
            if (self.chain_dir / _MANIFEST).is_file():
                chain_append(self.chain_dir, [folder], threads=self.threads)
            else:
                chain_compress(
                    [folder], self.chain_dir, precision=self.precision,
                    max_depth=self.max_depth, threads=self.threads,
                    force=self.chain_dir.exists() and not any(self.chain_dir.iterdir()),
                )
        else:
            self.chain_dir.mkdir(parents=True, exist_ok=True)
            mode = "lossless" if self.precision == "lossless" else self.precision
            with warnings.catch_warnings():
                # pickles in training_args.bin / rng_state.pth are stored inert: not news
                warnings.filterwarnings("ignore", message=".*kept inert.*")
                compress(folder, self.chain_dir / f"{folder.name}.dmx", mode=mode,
                         threads=self.threads)
        if not self.keep_original:
            self._verify_and_remove(folder, step)

    def _verify_and_remove(self, folder: Path, step: int) -> None:
        with tempfile.TemporaryDirectory(prefix=".dmx-hf-check-", dir=folder.parent) as tmp:
            copy = materialize(self.chain_dir, step, Path(tmp) / folder.name,
                               threads=self.threads)
            if self.precision == "lossless" and not _same_tree(folder, copy):
                raise VerificationError(
                    f"{folder}: the copy restored from {self.chain_dir} differs; "
                    f"the original is kept"
                )
        try:
            shutil.rmtree(folder)
        except OSError as e:
            raise DmxError(f"{folder}: stored in the chain but not removed: {e}") from e

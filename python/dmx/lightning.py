"""PyTorch Lightning: checkpoints as dmx archives (``Trainer(plugins=[DmxCheckpointIO()])``).

Every checkpoint Lightning writes (``ModelCheckpoint``, ``trainer.save_checkpoint``) is
stored with :func:`dmx.torch.save_state`: the state dict, optimizer and scheduler states as
tensor segments, everything else (loops, callbacks, hyper-parameters, counters) as data in
the archive, never a pickle; it is read back exactly by :meth:`DmxCheckpointIO.load_checkpoint`
(``trainer.fit(ckpt_path=...)``). Each checkpoint is one standalone archive, so removing one
(``save_top_k``) never affects another.
"""

from __future__ import annotations

import os
from typing import Any, Unpack

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from ._options import CompressOptions
from .checkpoint import load_state, save_state

__all__ = ["DmxCheckpointIO"]


class DmxCheckpointIO(CheckpointIO):
    """A Lightning ``CheckpointIO`` writing dmx archives. ``modes`` are the options of
    :func:`dmx.compress` (lossless by default; lossy modes keep counters exact)."""

    def __init__(self, **modes: Unpack[CompressOptions]):
        super().__init__()
        self.modes = dict(modes)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any = None) -> None:
        """Stores ``checkpoint`` in the archive ``path`` (atomically; folders created)."""
        if storage_options is not None:
            raise TypeError(
                f"DmxCheckpointIO.save_checkpoint takes no storage_options, got "
                f"{storage_options!r}"
            )
        parent = os.path.dirname(os.fspath(path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        save_state(path, checkpoint, **self.modes)  # type: ignore[misc]

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint stored in ``path``; tensors on the CPU unless ``map_location``
        names a device. ``weights_only`` is accepted for compatibility: nothing in an
        archive is executable."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint file not found: {os.fspath(path)}")
        if callable(map_location) or isinstance(map_location, dict):
            map_location = None
        return load_state(path, map_location or "cpu")

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Deletes the archive ``path`` (no other checkpoint depends on it)."""
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def teardown(self) -> None:
        """Nothing to release."""

"""DmxCheckpointIO: a real Lightning fit on the CPU, then a resume that continues identically."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch

lightning = pytest.importorskip("lightning")
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

import dmx  # noqa: E402
from dmx.lightning import DmxCheckpointIO  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05, widths: tuple = (8, 16)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 1))
        self.losses: list[float] = []

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    y = x.sum(1, keepdim=True).sin()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def fit(root: pathlib.Path, epochs: int, ckpt_path: str | None = None):
    pl.seed_everything(0, verbose=False)
    model = Tiny()
    ckpt = ModelCheckpoint(dirpath=root / "ckpts", save_top_k=2, monitor="train_loss",
                           save_last=True, every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[ckpt], plugins=[DmxCheckpointIO()],
        default_root_dir=root, deterministic=True,
    )
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model, trainer


def test_fit_then_resume_continues_identically(tmp_path: pathlib.Path) -> None:
    full, _ = fit(tmp_path / "full", epochs=4)
    first, trainer = fit(tmp_path / "a", epochs=2)
    ckpts = sorted(os.listdir(tmp_path / "a" / "ckpts"))
    assert "last.ckpt" in ckpts and len(ckpts) <= 3  # save_top_k=2 removed older ones
    last = tmp_path / "a" / "ckpts" / "last.ckpt"
    # An archive, not a pickle.
    assert dmx.info(last).to_dict()
    with pytest.raises(Exception):
        torch.load(last, weights_only=False)
    state = DmxCheckpointIO().load_checkpoint(last)
    assert state["global_step"] == trainer.global_step == 8
    assert "optimizer_states" in state and "loops" in state
    assert state["hyper_parameters"] == {"lr": 0.05, "widths": (8, 16)}
    resumed, _ = fit(tmp_path / "a", epochs=4, ckpt_path=str(last))
    assert first.losses + resumed.losses == full.losses
    for (k, v), (k2, v2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)

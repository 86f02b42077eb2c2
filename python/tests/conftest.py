"""Shared fixtures: small models written with safetensors."""

from __future__ import annotations

import pathlib

import pytest
import torch
from safetensors.torch import save_file


def model_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small state dict with several dtypes and shapes (large enough for several chunks)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(512, 256, generator=g).to(torch.bfloat16),
        "layers.0.attn.q.weight": torch.randn(256, 256, generator=g).to(torch.bfloat16),
        "layers.0.norm.weight": torch.ones(256, dtype=torch.float32),
        "layers.0.mlp.up.weight": torch.randn(300, 257, generator=g, dtype=torch.float32),
        "step": torch.tensor(7, dtype=torch.int64),
        "mask": torch.rand(33, generator=g) > 0.5,
    }


def name_paths(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """The tensors of a loaded ``torch.save`` object by name path, as dmx names them: dict keys
    and list/tuple indices joined by '.'."""
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            name_paths(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            name_paths(v, f"{prefix}.{i}" if prefix else str(i), out)


@pytest.fixture
def model(tmp_path: pathlib.Path) -> pathlib.Path:
    """A safetensors file with metadata."""
    p = tmp_path / "model.safetensors"
    save_file(model_tensors(), str(p), metadata={"format": "pt"})
    return p


@pytest.fixture
def archive(tmp_path: pathlib.Path, model: pathlib.Path) -> pathlib.Path:
    """The lossless archive of ``model``."""
    import dmx

    p = tmp_path / "model.dmx"
    dmx.compress(model, p)
    return p

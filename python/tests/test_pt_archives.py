"""torch.save files in archives (issue 14): the tensors ``dmx extract`` writes from the
archive of a ``.pt`` file equal what ``torch.load(weights_only=True)`` gives for the
original, name path by name path, views made contiguous."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import torch
from safetensors.torch import load_file

import dmx
from conftest import name_paths

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "crates" / "dmx-pt" / "tests" / "fixtures"
NAMES = sorted(p.name for p in FIXTURES.glob("*.pt"))


def raw(t: torch.Tensor) -> bytes:
    """The element bytes of ``t`` in row-major order (any dtype, any strides)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_every_fixture_is_covered():
    assert len(NAMES) >= 10, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_extract_equals_torch_load(tmp_path: pathlib.Path, name: str):
    src = tmp_path / name
    shutil.copy(FIXTURES / name, src)
    archive = tmp_path / "a.dmx"
    if name == "malicious.pt":
        with pytest.warns(UserWarning, match="never executed"):
            dmx.compress(src, archive)
    else:
        dmx.compress(src, archive)
    restored = tmp_path / "restored.pt"
    dmx.decompress(archive, restored)
    assert restored.read_bytes() == src.read_bytes()

    if name == "malicious.pt":
        # Loading it would run its payload: its tensors are known from the fixture script.
        known = json.loads((FIXTURES / "expected.json").read_text())[name]["tensors"]
        out = tmp_path / "x.safetensors"
        dmx.extract(archive, out, [t["name"] for t in known])
        got = load_file(out)
        assert {n: list(t.shape) for n, t in got.items()} == {t["name"]: t["shape"] for t in known}
        return

    # protocol 4 (FRAME) is beyond torch's weights_only reader; the fixture holds no code.
    obj = torch.load(src, weights_only=name != "protocol4.pt")
    want: dict[str, torch.Tensor] = {}
    name_paths(obj, "", want)
    want = {("tensor" if n == "" else n): t for n, t in want.items()}
    # Every tensor, zero-element ones (an empty storage) included, is listed and extracted.
    stored = want
    assert stored, name
    out = tmp_path / "x.safetensors"
    dmx.extract(archive, out, list(stored))
    got = load_file(out)
    assert sorted(got) == sorted(stored)
    for n, t in stored.items():
        g = got[n]
        assert g.dtype == t.dtype, n
        assert list(g.shape) == list(t.shape), n
        assert raw(g) == raw(t), n

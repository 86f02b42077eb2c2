"""No execution, proven, through the ``dmx`` Python package: a ``torch.save`` file whose pickle
would create a marker file (``os.system`` and ``eval`` in ``__reduce__``) is compressed,
inspected, verified and restored byte-exact, and the marker never appears; a control run of
``torch.load(weights_only=False)`` in a child process shows the payload is live."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch

import dmx


class Evil:
    """An object whose unpickling calls ``fn(arg)``."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def hostile(path: pathlib.Path, marker: pathlib.Path) -> None:
    obj = {
        "weight": torch.randn(16, 8, generator=torch.Generator().manual_seed(3)),
        "system": Evil(os.system, f"touch '{marker}'"),
        "eval": Evil(eval, f"open({str(marker)!r}, 'w').close()"),
        "nested": {"step": torch.tensor(5)},
    }
    torch.save(obj, path)


@pytest.mark.parametrize("mode", ["lossless", "int16", "bfp"])
def test_hostile_pickle_never_runs(tmp_path: pathlib.Path, mode: str) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    hostile(src, marker)
    original = src.read_bytes()
    packed = tmp_path / "evil.dmx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dmx.compress(src, packed, mode=mode)
    texts = [str(w.message) for w in caught]
    assert any("system" in t and "nothing executed" in t for t in texts), texts
    assert not marker.exists()

    info = dmx.info(packed).to_dict()
    assert not marker.exists()
    assert "weight" in str(info)
    assert dmx.verify(packed).ok
    assert dmx.verify(packed, src).ok
    assert not marker.exists()

    out = tmp_path / "restored.pt"
    dmx.decompress(packed, out)
    restored = out.read_bytes()
    assert not marker.exists()
    if mode == "lossless":
        assert restored == original
    else:
        assert len(restored) == len(original)
        with zipfile.ZipFile(out) as z:
            assert z.testzip() is None
            assert z.read("evil/data.pkl") == zipfile.ZipFile(src).read("evil/data.pkl")

    # Control: the payload is live; unpickling the restored file does create the marker.
    code = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=tmp_path,
                   capture_output=True)
    assert marker.exists(), "the control payload did not run: the test proves nothing"

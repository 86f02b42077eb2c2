"""Every exception class, each raised by a real case."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import dmx
import dmx.torch

from conftest import model_tensors


def corrupt_copy(archive, tmp_path):
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x55
    p = tmp_path / "corrupt.dmx"
    p.write_bytes(bytes(data))
    return p


def test_corrupt_archive(tmp_path, archive):
    bad = corrupt_copy(archive, tmp_path)
    with pytest.raises(dmx.CorruptArchiveError) as e:
        dmx.decompress(bad, tmp_path / "out.safetensors")
    assert e.value.exit_code == 1 and str(e.value)
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(dmx.DmxError):
        dmx.torch.load_file(bad)
    rep = dmx.verify(bad)
    assert rep.ok is False and rep.files[0].problems
    with pytest.raises(dmx.VerificationError) as e:
        dmx.verify(bad, check=True)
    assert e.value.report.ok is False


def test_wrong_base_is_refused_like_the_cli(tmp_path):
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    save_file(model_tensors(0), str(a))
    save_file({k: (v * 2 if v.is_floating_point() else v) for k, v in model_tensors(0).items()}, str(b))
    save_file(model_tensors(5), str(c))
    dmx.delta_compress(a, b, tmp_path / "d.dmxd")
    with pytest.raises(dmx.UsageError, match="wrong base") as e:
        dmx.delta_reconstruct(c, tmp_path / "d.dmxd", tmp_path / "out.safetensors")
    assert e.value.exit_code == 2  # as `dmx delta-reconstruct` exits
    assert not (tmp_path / "out.safetensors").exists()


def test_a_different_original_fails_verification(tmp_path, archive):
    other = tmp_path / "other.safetensors"
    save_file(model_tensors(9), str(other))
    assert dmx.verify(archive, other).ok is False
    with pytest.raises(dmx.VerificationError) as e:
        dmx.verify(archive, other, check=True)
    assert e.value.exit_code == 1 and e.value.report.files[0].bit_exact is False


def test_existing_output(tmp_path, model, archive):
    with pytest.raises(dmx.DmxFileExistsError) as e:
        dmx.compress(model, archive)
    assert isinstance(e.value, FileExistsError) and isinstance(e.value, dmx.DmxError)
    assert e.value.filename == str(archive) and "force=True" in str(e.value)
    assert e.value.exit_code == 2
    dmx.compress(model, archive, force=True)


def test_chain_into_a_used_folder(tmp_path, model):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("x")
    with pytest.raises(dmx.DmxFileExistsError, match="force=True") as e:
        dmx.chain_compress([model], tmp_path / "used")
    assert e.value.filename == str(tmp_path / "used")


def test_bad_options_are_usage_errors(tmp_path, model):
    with pytest.raises(dmx.UsageError, match="invalid mode"):
        dmx.compress(model, tmp_path / "x.dmx", mode="zip")
    with pytest.raises(dmx.UsageError):
        dmx.compress(model, tmp_path / "x.dmx", threads=0)
    with pytest.raises(ValueError):
        dmx.delta_compress(model, model, tmp_path / "d.dmxd", precision="int8")
    with pytest.raises(dmx.UsageError, match="not a dmx archive"):
        dmx.info(model)
    with pytest.raises(dmx.UsageError):
        dmx.extract(model, tmp_path / "e.safetensors", ["x"])
    assert not (tmp_path / "x.dmx").exists()


def test_missing_file_is_an_oserror_with_the_path(tmp_path):
    missing = tmp_path / "missing.dmx"
    with pytest.raises(FileNotFoundError) as e:
        dmx.info(missing)
    assert isinstance(e.value, dmx.DmxOSError) and e.value.filename == str(missing)
    assert e.value.errno == 2 and str(missing) in str(e.value)
    with pytest.raises(dmx.DmxFileNotFoundError):
        dmx.safe_open(missing)


def test_a_rust_panic_becomes_dmx_error():
    from dmx import _dmx

    with pytest.raises(dmx.DmxError, match="internal error") as e:
        _dmx._panic_for_tests()
    assert type(e.value) is dmx.DmxError


def test_save_file_validation(tmp_path):
    with pytest.raises(dmx.UsageError):
        dmx.torch.save_file([torch.zeros(1)], tmp_path / "x.dmx")  # type: ignore[arg-type]
    with pytest.raises(dmx.UsageError):
        dmx.torch.save_file({"a": torch.zeros(2).to_sparse()}, tmp_path / "x.dmx")


def test_frameworks_are_optional_and_missing_ones_say_what_to_install(tmp_path):
    """``import dmx.torch`` / ``dmx.numpy`` work without torch or numpy; using them raises an
    ImportError naming the package to install (checked in a child interpreter where both
    imports fail)."""
    import subprocess
    import sys

    archive = tmp_path / "m.dmx"
    dmx.torch.save_file(model_tensors(), archive)
    code = f"""
import sys
sys.modules["torch"] = None
sys.modules["numpy"] = None
import dmx, dmx.torch, dmx.numpy
for call, wanted in [
    (lambda: dmx.torch.load_file({str(archive)!r}), "pip install torch"),
    (lambda: dmx.numpy.load_file({str(archive)!r}), "pip install numpy"),
]:
    try:
        call()
    except ImportError as e:
        assert wanted in str(e), e
    else:
        raise SystemExit("no ImportError")
with dmx.safe_open({str(archive)!r}, framework="np") as f:
    assert len(list(f.keys())) > 0
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_torch_without_numpy_says_to_install_numpy(tmp_path):
    """torch does not depend on numpy, but dmx.torch hands memory over through it: without
    numpy, load_file and save_file raise an ImportError naming numpy (not torch's
    RuntimeError)."""
    import subprocess
    import sys

    archive = tmp_path / "m.dmx"
    dmx.torch.save_file(model_tensors(), archive)
    code = f"""
import sys
sys.modules["numpy"] = None
import torch, dmx.torch
for call in [
    lambda: dmx.torch.load_file({str(archive)!r}),
    lambda: dmx.torch.save_file({{"w": torch.zeros(3)}}, {str(tmp_path / "o.dmx")!r}),
]:
    try:
        call()
    except ImportError as e:
        assert "pip install numpy" in str(e), e
    else:
        raise SystemExit("no ImportError")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

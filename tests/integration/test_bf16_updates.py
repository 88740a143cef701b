"""bf16 weights keep small updates: at a DPO learning rate, a run with bf16 weights (bf16-true, or
model.dtype=bfloat16) moves nearly as many of the weights its optimizer holds as an fp32 run does,
its fp32 master copies survive a checkpoint and resume, and fp32 weights keep torch's AdamW."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.devices import run_precision
from dpo_exp.training.master_weights import MasterWeightAdamW
from tests.helpers import assemble, compose_config

SMALL_LR = ["optim.lr=5e-7", "optim.warmup_steps=0", "optim.scheduler=constant", "trainer.max_steps=4"]


class HeldWeights(L.Callback):
    """The weights the optimizer steps (its fp32 masters, where it keeps them), as the first step
    sees them (after the precision plugin has cast the model) and after the last."""

    def __init__(self) -> None:
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    @staticmethod
    def held(trainer: L.Trainer) -> list[torch.Tensor]:
        optimizer = trainer.optimizers[0]
        master = optimizer.master if isinstance(optimizer, MasterWeightAdamW) else (lambda p: p)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return [master(p).detach().float().clone() for p in params]

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.before = self.held(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.after = self.held(trainer)

    def changed(self) -> float:
        moved = sum(int((a != b).sum()) for a, b in zip(self.after, self.before, strict=True))
        return moved / sum(b.numel() for b in self.before)


def train_small_lr(overrides: list[str], tmp_path: Path) -> tuple[HeldWeights, torch.optim.Optimizer]:
    cfg = compose_config([*SMALL_LR, *overrides])
    module, datamodule = assemble(cfg)
    held = HeldWeights()
    trainer = L.Trainer(
        max_steps=4, precision=run_precision(cfg.trainer.precision, "cpu"), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[held],
    )  # fmt: skip
    trainer.fit(module, datamodule)
    return held, trainer.optimizers[0]


@pytest.fixture(scope="module")
def fp32_changed(tmp_path_factory) -> float:
    held, _ = train_small_lr(["trainer.precision=32-true"], tmp_path_factory.mktemp("fp32"))
    assert held.changed() > 0.9  # measured: 97.7% (a few embedding rows have no gradient)
    return held.changed()


@pytest.mark.parametrize("bf16", ["trainer.precision=bf16-true", "model.dtype=bfloat16"])
def test_bf16_weights_keep_updates_below_half_an_ulp(bf16, fp32_changed, tmp_path):
    held, optimizer = train_small_lr([bf16], tmp_path)
    # Without fp32 masters, AdamW on the bf16 weights changed 0.96% of them: the rest rounded away.
    assert held.changed() >= 0.95 * fp32_changed, (held.changed(), fp32_changed)
    assert all(optimizer.master(p).dtype == torch.float32 for p in optimizer.param_groups[0]["params"])


@pytest.mark.parametrize(("precision", "fused"), [("32-true", True), ("bf16-mixed", False)])
def test_fp32_weights_keep_torch_adamw(precision, fused, tmp_path):
    _, optimizer = train_small_lr([f"trainer.precision={precision}"], tmp_path)
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["fused"] is fused


def test_master_weights_false_steps_the_bf16_weights_themselves(tmp_path):
    held, optimizer = train_small_lr(["trainer.precision=bf16-true", "optim.master_weights=false"], tmp_path)
    assert type(optimizer) is torch.optim.AdamW and held.changed() < 0.1


def test_the_masters_survive_a_checkpoint_and_resume_in_fp32(tmp_path):
    steps = ["trainer.precision=bf16-true", "checkpoint.every_n_steps=2", "trainer.val_check_interval=2"]
    # A warmup in steps, longer than both runs: the first 2 steps' rates do not depend on the budget
    # (a warmup ratio, or a decay from step 0, would differ between a 2-step and a 4-step run).
    steps.append("optim.warmup_steps=10")
    run(compose_config([*steps, "trainer.max_steps=4"]), tmp_path / "whole")
    run(compose_config([*steps, "trainer.max_steps=2"]), tmp_path / "first")
    halfway = tmp_path / "first" / "checkpoints" / "step000002.ckpt"
    (tmp_path / "first" / "summary.json").unlink()  # as a run killed after its checkpoint leaves it
    run(compose_config([*steps, "trainer.max_steps=4", f"resume={halfway}"]), tmp_path / "resumed")
    whole, resumed = (
        torch.load(tmp_path / name / "checkpoints" / "step000004.ckpt", weights_only=True)[
            "optimizer_states"
        ][0]
        for name in ("whole", "resumed")
    )
    assert whole["state"].keys() == resumed["state"].keys()
    for index, state in whole["state"].items():
        assert state["master"].dtype == torch.float32 == state["exp_avg"].dtype
        for key in ("master", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(resumed["state"][index][key], state[key], rtol=0, atol=0)

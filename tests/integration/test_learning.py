"""Training learns: on a small fixed preference set, held-out preference accuracy and margin rise
over a few dozen steps, for every paired loss. Measured by the run's own validation before and
after training, with the CLI's builders. (The built-in experiment's gain over SFT is asserted in
tests/e2e/test_pipeline.py.)"""

from __future__ import annotations

import lightning as L
import pytest

from dpo_exp.losses import LOSSES
from tests.helpers import FAST_MODEL, SINGLE_RUN, assemble, compose_config

PAIRED = sorted(name for name, spec in LOSSES.items() if spec.paired and not spec.positives_only)
# 480 generated addition pairs (chosen the right sum, rejected a one-digit miss), 64 held out.
DATA = ["data.options.num_examples=480", "data.val_size=64", "data.batch_size=16", "data.eval_batch_size=64"]
STEPS = 40
# beta per loss, where the loss's own default moves too little in 40 steps of a tiny model.
BETA = {"ipo": 0.5, "simpo": 2.0, "orpo": 0.5}


def held_out(trainer: L.Trainer, module, datamodule) -> dict[str, float]:
    (metrics,) = trainer.validate(module, datamodule, verbose=False)
    return {name: metrics[f"val/rewards/{name}"] for name in ("accuracy", "margin")}


@pytest.mark.parametrize("loss", PAIRED)
def test_held_out_accuracy_and_margin_rise_for_every_paired_loss(loss, tmp_path):
    overrides = [*SINGLE_RUN, *FAST_MODEL, *DATA, f"loss={loss}", f"beta={BETA.get(loss, 0.5)}",
                 "optim.lr=3e-3", "optim.warmup_steps=0", f"trainer.max_steps={STEPS}"]  # fmt: skip
    module, datamodule = assemble(compose_config(overrides, fast=False))
    trainer = L.Trainer(
        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    before = held_out(trainer, module, datamodule)
    trainer.fit(module, datamodule)
    after = held_out(trainer, module, datamodule)
    assert after["accuracy"] >= before["accuracy"] + 0.2 and after["accuracy"] >= 0.75, (before, after)
    assert after["margin"] > before["margin"], (before, after)

"""Training learns: on a small fixed preference set, held-out preference accuracy and margin rise
over a few dozen steps, for every paired loss. Measured by the run's own validation before and
after training, on a model and data built by the CLI's builders. (The built-in experiment's gain
over SFT is asserted in tests/e2e/test_pipeline.py.)"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import pytest

from dpo_exp.losses import LOSSES, takes_beta
from tests.helpers import FAST_MODEL, assemble, compose_config

# The first losses in the fast tier; every other paired loss learns in the slow one (`-m slow`),
# which keeps the fast tier near 3 minutes on 2 cores.
FAST_TIER = {"dpo", "ipo", "simpo", "orpo", "rpo", "hinge", "robust"}
PAIRED = [
    name if name in FAST_TIER else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(name for name, spec in LOSSES.items() if spec.paired)
]
STEPS = 40
# Measured at these settings (a 32-wide 2-layer model from scratch): every paired loss ranked
# 62 to 64 of the 64 held-out pairs right after 40 steps, from 0 (ties, for losses against a
# reference) or 29 of 64 (SimPO, ORPO); the thresholds leave room for other CPUs' rounding.
MIN_ACCURACY = 0.85
# Losses that anchor each answer's log-ratio to a target set by 1 / beta (SPPO at +-1 / (2 beta),
# NCA's chosen reward at ln 2 / beta) separate the pairs by a margin of that size: at beta 0.5 it
# is too small for 40 steps to rank 85% right, so they train at beta 0.1. SimPO's beta scales
# per-token means, so it is larger. DiscoPOP's slope at a zero margin (where training from the
# reference starts) points the wrong way (`test_losses_more.py`): measured at beta 0.1 / 0.5 / 1 /
# 2 / 5, 45% / 59% / 75% / 81% / 72% ranked right after 40 steps, so it is held to 70% at beta 2.
BETA = {"simpo": 2.0, "sppo_hard": 0.1, "nca_pair": 0.1, "discopop": 2.0}
LOWER_ACCURACY = {"discopop": 0.7}


def copy_pairs(path: Path, count: int, rng: random.Random) -> str:
    """A preference any model can learn: chosen repeats the prompt's four letters, rejected
    reverses (or rotates) them."""
    rows = []
    for _ in range(count):
        word = "".join(rng.choice("abcdefgh") for _ in range(4))
        other = word[::-1] if word[::-1] != word else word[1:] + word[0]
        # Rewards for the reward-aware losses: a gap of 2 (beta h is fitted to it).
        rows.append(
            {
                "prompt": f"{word}=",
                "chosen": word,
                "rejected": other,
                "score_chosen": 1.0,
                "score_rejected": -1.0,
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def held_out(trainer: L.Trainer, module, datamodule) -> dict[str, float]:
    (metrics,) = trainer.validate(module, datamodule, verbose=False)
    return {name: metrics[f"val/rewards/{name}"] for name in ("accuracy", "margin")}


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> list[str]:
    folder, rng = tmp_path_factory.mktemp("copy"), random.Random(0)
    return [copy_pairs(folder / "train.jsonl", 320, rng), copy_pairs(folder / "val.jsonl", 64, rng)]


@pytest.mark.parametrize("loss", PAIRED)
def test_held_out_accuracy_and_margin_rise_for_every_paired_loss(loss, pair_files, tmp_path):
    train, validation = pair_files
    data = ["data=pairs", f"data.train_path={train}", f"data.validation_path={validation}",
            "data.batch_size=16", "data.eval_batch_size=64", "data.max_length=32",
            "data.max_prompt_length=16"]  # fmt: skip
    beta = [f"beta={BETA.get(loss, 0.5)}"] if takes_beta(loss) else []
    overrides = [*data, *FAST_MODEL, f"loss={loss}", *beta,
                 "optim.lr=1e-2", "optim.warmup_steps=0", f"trainer.max_steps={STEPS}"]  # fmt: skip
    module, datamodule = assemble(compose_config(overrides, fast=False))
    trainer = L.Trainer(
        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    before = held_out(trainer, module, datamodule)
    trainer.fit(module, datamodule)
    after = held_out(trainer, module, datamodule)
    minimum = LOWER_ACCURACY.get(loss, MIN_ACCURACY)
    assert after["accuracy"] >= max(minimum, before["accuracy"] + 0.3), (before, after)
    assert after["margin"] > before["margin"] + 0.1, (before, after)

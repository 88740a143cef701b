"""The LightningModule on a tiny model: reference handling, invariants, every loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from dpo_exp.cli import run
from dpo_exp.data.collate import CachedLogps
from dpo_exp.data.module import PreferenceDataModule
from dpo_exp.losses import LOSSES, get_loss, needs_scores
from dpo_exp.training.module import PreferenceModule
from tests.helpers import assemble, compose_config


def build(overrides: list[str]) -> tuple:
    cfg = compose_config(overrides)
    module, datamodule = assemble(cfg)
    return cfg, module, datamodule


def first_batch(datamodule: PreferenceDataModule) -> dict[str, torch.Tensor]:
    return next(iter(datamodule.train_dataloader()))


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_reference_equal_to_policy_gives_the_textbook_first_loss(beta):
    # h = 0 when policy == reference: DPO ln 2, IPO (1/(2β))², KTO 0.5·weight (z0 = 0, r = 0).
    expected = {"dpo": math.log(2), "ipo": (1 / (2 * beta)) ** 2, "kto": 0.5}
    for loss_name, value in expected.items():
        _, module, datamodule = build([f"loss={loss_name}", f"beta={beta}"])
        module.eval()
        with torch.no_grad():
            loss = _loss(module, datamodule)
        assert_close(loss, torch.tensor(value), rtol=1e-5, atol=1e-6)


def _loss(module: PreferenceModule, datamodule: PreferenceDataModule) -> torch.Tensor:
    batch = first_batch(datamodule)
    step = module._paired_step if module.loss_spec.paired else module._unpaired_step
    _, output, _ = step(batch)
    return output.loss.mean()


def test_reference_is_frozen_in_eval_mode_and_outside_the_optimizer():
    _, module, _ = build(["+model.config.attention_dropout=0.5"])
    module.train()
    assert module.policy.training and not module.reference.training
    assert not any(p.requires_grad for p in module.reference.parameters())
    # What configure_optimizers reads of the trainer.
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "precision": "32-true"})()
    optimizer = module.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.policy.parameters()}


def test_checkpoints_hold_no_reference_and_load_strictly():
    _, module, _ = build([])
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("reference.") for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)


def test_reference_free_losses_load_no_reference():
    for loss_name in ("orpo", "simpo"):
        _, module, _ = build([f"loss={loss_name}"])
        assert module.reference is None


def test_cached_reference_logps_in_the_batch_replace_the_reference_forward():
    _, module, datamodule = build([])
    batch = first_batch(datamodule)
    with torch.no_grad():
        on_the_fly = module.reference_logps(batch)
    batch["ref_logps"] = CachedLogps(on_the_fly.clone())
    module.reference = None
    assert_close(module.reference_logps(batch), on_the_fly)


# The reward-aware losses need rewards in the data: test_reward_data.py trains them.
@pytest.mark.parametrize("loss_name", sorted(name for name, spec in LOSSES.items() if not needs_scores(spec)))
def test_every_loss_trains_two_steps(loss_name, tmp_path: Path):
    cfg = compose_config([f"loss={loss_name}", "trainer.max_steps=2", "trainer.val_check_interval=1"])
    summary = run(cfg, tmp_path)
    assert summary["global_step"] == 2
    metrics = summary["metrics"]
    for name in ("val/loss", "val/rewards/margin", "val/logps/chosen"):
        assert math.isfinite(metrics[name]), name
    if get_loss(loss_name).positives_only:  # rft: no reward that could rank an example right or wrong
        assert "val/rewards/accuracy" not in metrics and math.isfinite(metrics["val/nll"])
    else:
        assert 0.0 <= metrics["val/rewards/accuracy"] <= 1.0
    if get_loss(loss_name).has_grad_weight:
        assert math.isfinite(metrics["val/grad_weight"])


def test_an_unpaired_batch_with_one_label_only_logs_no_nan():
    _, module, datamodule = build(["loss=kto"])
    batch = first_batch(datamodule)
    batch["desirable"] = torch.ones_like(batch["desirable"])
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    module._step(batch, "train")
    assert "train/rewards/rejected" not in logged and "train/rewards/margin" not in logged
    assert all(torch.isfinite(torch.as_tensor(value)) for value in logged.values())
    assert logged["train/rewards/accuracy"] <= 1


def test_rft_batches_carry_no_mismatched_rows_and_count_only_the_rows_run(tmp_path):
    # KTO's KL rows estimate its reference point; RFT has none, so they are neither built nor
    # counted (telemetry counted them for RFT before, crediting it with tokens it never ran).
    _, _, kto = build(["loss=kto"])
    _, _, rft = build(["loss=rft"])
    kto_batch, rft_batch = first_batch(kto), first_batch(rft)
    assert "kl_input_ids" in kto_batch and not any(key.startswith("kl_") for key in rft_batch)
    summary = run(
        compose_config(["loss=rft", "trainer.max_steps=2", "trainer.val_check_interval=2"]), tmp_path
    )
    batches = iter(rft.train_dataloader())
    trained = [next(batches) for _ in range(2)]
    assert summary["tokens"] == sum(int(batch["attention_mask"].sum()) for batch in trained)


@pytest.mark.parametrize(("alias", "name"), [("sigmoid", "dpo"), ("dpo_norm", "sigmoid_norm")])
def test_other_codebases_names_train_our_loss(alias, name, tmp_path: Path):
    summary = run(compose_config([f"loss={alias}", "trainer.max_steps=2"]), tmp_path)
    assert summary["loss"] == name and summary["global_step"] == 2

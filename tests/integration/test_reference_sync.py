"""TR-DPO's moving reference: the soft update, a run whose reference moves and is checkpointed,
and the settings where a moving reference is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.training.reference_sync import soft_update
from tests.helpers import assemble, compose_config


def test_the_soft_update_mixes_the_policy_into_the_reference():
    """ref 0, policy 1, mix 0.6: 0.6 after one update, 0.6 + 0.4 * 0.6 = 0.84 after two."""
    reference, policy = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.zero_()
        for parameter in policy.parameters():
            parameter.fill_(1.0)
    soft_update(reference, policy, 0.6)
    assert torch.allclose(reference.weight, torch.full((2, 2), 0.6))
    soft_update(reference, policy, 0.6)
    assert torch.allclose(reference.bias, torch.full((2,), 0.84))


def test_a_moving_reference_moves_every_sync_steps_and_is_kept_in_checkpoints(tmp_path: Path):
    overrides = [
        "reference.sync_every=2",
        "reference.sync_mix=0.5",
        "trainer.max_steps=4",
        "checkpoint.every_n_steps=2",
    ]
    module, _ = assemble(compose_config(overrides))
    initial = {name: value.clone() for name, value in module.reference.state_dict().items()}
    summary = run(compose_config(overrides), tmp_path)
    assert summary["global_step"] == 4
    (checkpoint,) = sorted((tmp_path / "checkpoints").glob("*.ckpt"))[-1:]
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    moved = [name for name, value in initial.items() if not torch.equal(state[f"reference.{name}"], value)]
    assert moved, "the reference in the checkpoint is the one the run started from"


def test_a_fixed_reference_keeps_its_weights_out_of_checkpoints(tmp_path: Path):
    run(compose_config(["trainer.max_steps=2", "checkpoint.every_n_steps=2"]), tmp_path)
    (checkpoint,) = sorted((tmp_path / "checkpoints").glob("*.ckpt"))[-1:]
    assert not any(
        key.startswith("reference.") for key in torch.load(checkpoint, weights_only=False)["state_dict"]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reference.sync_every=2", "reference.cache=true"], "reference.cache=true holds a fixed reference"),
        (["reference.sync_every=2", "loss=simpo"], "loss=simpo has no reference"),
        (["reference.sync_every=0"], "reference.sync_every must be a positive integer"),
        (["reference.sync_every=2", "reference.sync_mix=1.5"], "reference.sync_mix must be in"),
        (["reference.sync_mix=0.3"], "reference.sync_mix: has no effect: reference.sync_every is null"),
    ],
)
def test_a_moving_reference_is_refused_where_it_cannot_move(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(overrides), overrides=overrides)


def test_a_resumed_moving_reference_is_the_checkpoints_not_the_one_rebuilt_from_config():
    fixed, _ = assemble(compose_config([]))
    moving, _ = assemble(compose_config(["reference.sync_every=2"]))
    saved = {
        f"reference.{name}": torch.full_like(value, 7.0)
        for name, value in fixed.reference.state_dict().items()
    }
    for module, kept in ((fixed, False), (moving, True)):
        checkpoint = {"state_dict": dict(saved)}
        module.on_load_checkpoint(checkpoint)
        values = checkpoint["state_dict"]["reference.model.embed_tokens.weight"]
        assert bool((values == 7.0).all()) == kept

"""BCO's reward shift: the running mean of every reward seen in training, kept by the module."""

from __future__ import annotations

import torch

from tests.helpers import assemble, compose_config


def test_the_reward_shift_is_the_mean_of_every_training_reward_and_validation_leaves_it():
    module, datamodule = assemble(compose_config(["loss=bco", "beta=0.5"]))
    assert "kl_input_ids" not in next(iter(datamodule.train_dataloader()))  # no KTO rows for BCO
    module.log = lambda *args, **kwargs: None
    module.check_step_zero = False  # the policy is moved off its reference below
    batches = iter(datamodule.train_dataloader())
    seen = []
    with torch.no_grad():
        for batch in (next(batches), next(batches)):
            module.policy.get_input_embeddings().weight.add_(0.01)  # a policy off its reference
            module.train()
            tensors = module._step(batch, "train")[1]
            seen.append(0.5 * (tensors["policy_logps"] - tensors["ref_logps"]))
            assert torch.allclose(tensors["reward_shift"], torch.cat(seen).mean(), atol=1e-6)
        count = module.reward_moments[1].item()
        module.eval()
        module._step(next(iter(datamodule.val_dataloader())), "val")
    assert module.reward_moments[1].item() == count == sum(len(rewards) for rewards in seen)
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    fresh, _ = assemble(compose_config(["loss=bco", "beta=0.5"]))
    fresh.on_load_checkpoint(checkpoint)
    assert torch.equal(fresh.reward_moments, module.reward_moments)

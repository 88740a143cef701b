"""TR-DPO's moving reference: every `every` optimizer steps, ref <- mix * policy + (1 - mix) * ref.

Gorbatovski, Shaposhnikov, Malakhov, Surnachev, Aksenov, Maksimov, Balagansky, Gavrilov (2024),
"Learn Your Reference Model for Real Good Alignment", arXiv:2404.09656 (its "soft update"; TRL's
`SyncRefModelCallback`, `ref_model_mixup_alpha`, `ref_model_sync_steps`). The reference then holds
training state: the module keeps it in checkpoints (`PreferenceModule.moving_reference`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dpo_exp.errors import ConfigError


class ReferenceSync(L.Callback):
    """Soft-update the module's reference toward its policy every `every` optimizer steps."""

    def __init__(self, every: int, mix: float) -> None:
        self.every, self.mix = every, mix

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every != 0 or getattr(pl_module, "_synced_at", None) == step:
            return  # with accumulation several batches end at one step: move once
        pl_module._synced_at = step
        soft_update(pl_module.reference, pl_module.policy, self.mix)


@torch.no_grad()
def soft_update(reference: torch.nn.Module, policy: torch.nn.Module, mix: float) -> None:
    """ref <- mix * policy + (1 - mix) * ref, parameter by parameter (matched by name), in the
    reference's own dtype."""
    weights = dict(policy.named_parameters())
    for name, parameter in reference.named_parameters():
        parameter.lerp_(weights[name].detach().to(parameter.dtype), mix)


def check_reference_sync(cfg: Any, needs_reference: bool, changed: list[str]) -> None:
    """Refuse a moving reference where it cannot move or would be undone, and `sync_mix` without it."""
    every, mix = cfg.reference.sync_every, cfg.reference.sync_mix
    if every is None:
        if "reference.sync_mix" in changed:
            raise ConfigError(
                "reference.sync_mix: has no effect: reference.sync_every is null (no moving reference)"
            )
        return
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"reference.sync_every must be a positive integer (or null), got {every!r}")
    if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0 < mix <= 1:
        raise ConfigError(f"reference.sync_mix must be in (0, 1], got {mix!r}")
    sharded = "ModelParallelStrategy" in str(cfg.strategy.get("_target_"))
    why_not = [
        (not needs_reference, f"loss={cfg.loss.name} has no reference"),
        (
            bool(cfg.reference.cache),
            "reference.cache=true holds a fixed reference's log-probs, which it invalidates",
        ),
        (
            (cfg.model.get("lora") or cfg.model.get("adapter_path")) and cfg.model.get("ref_path") is None,
            "a LoRA policy's reference is its own base with the adapter off, not a model that can move",
        ),
        (sharded, "not tested with sharded (FSDP) models"),
    ]
    for refused, reason in why_not:
        if refused:
            raise ConfigError(f"reference.sync_every: a moving reference (TR-DPO) is refused here: {reason}")

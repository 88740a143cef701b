"""The LightningModule: a trainable policy, a frozen reference, and one step for train and eval."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel, get_scheduler

from dpo_exp.logprobs import sequence_logps, split_pairs
from dpo_exp.lora import is_lora, reference_mode
from dpo_exp.losses import LossOutput, get_loss, loss_inputs


class PreferenceModule(L.LightningModule):
    """Preference optimisation of `policy` against a frozen `reference` with a registered loss.

    The reference is `None` for reference-free losses (ORPO, SimPO), when reference log-probs
    arrive with the batch (a precomputed cache), and for a LoRA policy, whose own base (adapter
    off) is the reference. It is kept in eval mode, out of the optimizer and out of checkpoints.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        reference: PreTrainedModel | None,
        *,
        loss: str,
        beta: float,
        loss_options: dict[str, Any],
        optim: dict[str, Any],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["policy", "reference"])
        self.policy = policy
        self.reference = reference
        self.loss_spec = get_loss(loss)
        self.beta = beta
        self.loss_options = loss_options
        self.optim = optim

    # -- modes and checkpoints ---------------------------------------------------------------

    def train(self, mode: bool = True) -> PreferenceModule:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # dropout stays off in the reference, whatever Lightning asks
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("reference.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The reference is rebuilt from config, never read back; restore its keys so loading stays strict.
        if self.reference is not None:
            reference_state = {f"reference.{k}": v for k, v in self.reference.state_dict().items()}
            checkpoint["state_dict"].update(reference_state)

    # -- log-probs ---------------------------------------------------------------------------

    @staticmethod
    def sequence_logps(
        model: PreTrainedModel, batch: dict[str, torch.Tensor], prefix: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and token counts of every row, in one forward pass."""
        logits = model(
            input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"]
        ).logits
        return sequence_logps(logits, batch[f"{prefix}labels"])

    def reference_logps(self, batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        if f"{prefix}ref_logps" in batch:
            return batch[f"{prefix}ref_logps"]
        if self.reference is None and is_lora(self.policy):
            with reference_mode(self.policy):
                return self.sequence_logps(self.policy, batch, prefix)[0]
        if self.reference is None:
            raise RuntimeError(
                "this loss needs reference log-probs, but no reference model or cache was given"
            )
        with torch.no_grad():
            return self.sequence_logps(self.reference, batch, prefix)[0]

    # -- the step ----------------------------------------------------------------------------

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        if self.loss_spec.paired:
            tensors, output, metrics = self._paired_step(batch)
        else:
            tensors, output, metrics = self._unpaired_step(batch)
        loss = output.loss.mean()
        metrics["loss"] = loss.detach()
        for name, value in output.metrics.items():
            metrics[name] = value.float().mean()
        batch_size = int(batch["index"].shape[0])
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}",
                value,
                batch_size=batch_size,
                sync_dist=True,
                on_step=stage == "train",
                on_epoch=stage != "train",
                prog_bar=name == "loss",
            )
        return loss

    def _call_loss(self, tensors: dict[str, torch.Tensor]) -> LossOutput:
        inputs = {name: tensors[name] for name in loss_inputs(self.loss_spec)}
        return self.loss_spec.fn(**inputs, beta=self.beta, **self.loss_options)

    def _paired_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict, LossOutput, dict]:
        logps, ntokens = self.sequence_logps(self.policy, batch)
        policy_chosen_logps, policy_rejected_logps = split_pairs(logps)
        chosen_ntokens, rejected_ntokens = split_pairs(ntokens)
        tensors = {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "chosen_ntokens": chosen_ntokens,
            "rejected_ntokens": rejected_ntokens,
            "chosen_nll": -policy_chosen_logps / chosen_ntokens,
        }
        metrics = {
            "logps/chosen": policy_chosen_logps.detach().mean(),
            "logps/rejected": policy_rejected_logps.detach().mean(),
        }
        if self.loss_spec.needs_reference:
            ref_chosen_logps, ref_rejected_logps = split_pairs(self.reference_logps(batch))
            tensors.update(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
            metrics["logratio/chosen"] = (policy_chosen_logps.detach() - ref_chosen_logps).mean()
            metrics["logratio/rejected"] = (policy_rejected_logps.detach() - ref_rejected_logps).mean()
        output = self._call_loss(tensors)
        margins = output.chosen_rewards - output.rejected_rewards
        metrics.update(
            {
                "rewards/chosen": output.chosen_rewards.mean(),
                "rewards/rejected": output.rejected_rewards.mean(),
                "rewards/margin": margins.mean(),
                "rewards/accuracy": (margins > 0).float().mean(),
            }
        )
        return tensors, output, metrics

    def _unpaired_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict, LossOutput, dict]:
        policy_logps, _ = self.sequence_logps(self.policy, batch)
        ref_logps = self.reference_logps(batch)
        desirable = batch["desirable"]
        tensors = {
            "policy_logps": policy_logps,
            "ref_logps": ref_logps,
            "desirable": desirable,
            "kl_baseline": self._kl_baseline(batch),
        }
        output = self._call_loss(tensors)
        logratio = policy_logps.detach() - ref_logps
        # An unpaired reward is "right" when it sits on its label's side of the reference point.
        above_baseline = self.beta * logratio > self.beta * tensors["kl_baseline"]
        metrics = {
            "logps/chosen": policy_logps.detach()[desirable].mean(),
            "logps/rejected": policy_logps.detach()[~desirable].mean(),
            "logratio/chosen": logratio[desirable].mean(),
            "logratio/rejected": logratio[~desirable].mean(),
            "rewards/chosen": output.chosen_rewards.mean(),
            "rewards/rejected": output.rejected_rewards.mean(),
            "rewards/margin": output.chosen_rewards.mean() - output.rejected_rewards.mean(),
            "rewards/accuracy": (above_baseline == desirable).float().mean(),
        }
        # A batch holding one label only has no mean for the other: leave it out, never log NaN.
        metrics = {name: value for name, value in metrics.items() if torch.isfinite(value)}
        return tensors, output, metrics

    def _kl_baseline(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """KTO's z0: mean log-ratio on mismatched pairs, clamped at 0, averaged over processes."""
        with torch.no_grad():
            policy_logps, _ = self.sequence_logps(self.policy, batch, prefix="kl_")
            ref_logps = self.reference_logps(batch, prefix="kl_")
            kl = (policy_logps - ref_logps).mean()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                kl = self.all_gather(kl).mean()
        return kl.clamp(min=0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    # -- optimisation ------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=optim["lr"], weight_decay=optim["weight_decay"], betas=tuple(optim["betas"])
        )
        scheduler = get_scheduler(
            optim["scheduler"],
            optimizer,
            num_warmup_steps=optim["warmup_steps"],
            num_training_steps=self.trainer.estimated_stepping_batches,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

"""The LightningModule: a trainable policy, a frozen reference, and one step for train and eval."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel, get_scheduler

from dpo_exp.losses import SCORE_INPUTS, LossOutput, get_loss, loss_hyperparameters, loss_inputs
from dpo_exp.losses.logprobs import split_pairs
from dpo_exp.models.lora import is_lora, reference_mode
from dpo_exp.models.scoring import head_on_completions_supported, score_batch
from dpo_exp.training.checkpoints import restore_rng_state, rng_state
from dpo_exp.training.invariants import (
    StepZeroMismatch,
    coarsest_dtype,
    step_zero_figures,
    step_zero_problem,
    zero_logratio_inputs,
)
from dpo_exp.training.master_weights import MasterWeightAdamW
from dpo_exp.training.schedule import warmup_steps


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
        head_on_completions: bool = True,
        logits_chunk: int | None = None,
        check_step_zero: bool = False,
        moving_reference: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["policy", "reference"])
        self.policy = policy
        self.reference = reference
        self.loss_spec = get_loss(loss)
        self.inputs = loss_inputs(self.loss_spec)
        # BCO's running (sum, count) of rewards: fp64 on the host, kept in checkpoints by hand (as a
        # buffer a half-precision plugin would cast it).
        self.reward_moments = torch.zeros(2, dtype=torch.float64)
        # Whether the loss takes beta (rft does not), read off its signature once, not every step.
        self.beta_option = {"beta": beta} if "beta" in loss_hyperparameters(self.loss_spec) else {}
        self.beta = beta
        self.loss_options = loss_options
        self.optim = optim
        self.head_on_completions = head_on_completions
        self.logits_chunk = logits_chunk  # LM-head positions scored at once (`head_token_logps`)
        # Whether the first training batch checks the step-0 invariant (`invariants.py`); its figures.
        self.check_step_zero = check_step_zero
        self.step_zero: dict[str, Any] | None = None
        # TR-DPO's reference moves (`reference_sync.py`): it is training state, kept in checkpoints.
        self.moving_reference = moving_reference

    # -- modes and checkpoints ---------------------------------------------------------------

    def train(self, mode: bool = True) -> PreferenceModule:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # dropout stays off in the reference, whatever Lightning asks
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_state"] = rng_state()
        checkpoint["reward_moments"] = self.reward_moments.clone()
        if self.device_mesh is not None or self.moving_reference:
            return  # a sharded checkpoint is loaded into the whole module: it keeps the reference's shards
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("reference.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_state" in checkpoint:
            restore_rng_state(checkpoint["rng_state"])
        if "reward_moments" in checkpoint:
            self.reward_moments = checkpoint["reward_moments"].clone()
        # The reference is rebuilt from config, never read back; restore its keys so loading stays strict.
        # (A sharded checkpoint's tensors are read by the strategy, not through `checkpoint`.)
        if self.reference is not None and "state_dict" in checkpoint and not self.moving_reference:
            reference_state = {f"reference.{k}": v for k, v in self.reference.state_dict().items()}
            checkpoint["state_dict"].update(reference_state)

    # -- log-probs ---------------------------------------------------------------------------

    def sequence_logps(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], prefix: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and token counts of every sequence, in one forward pass."""
        return score_batch(
            model, batch, prefix, head_on_completions=self.head_on_completions, logits_chunk=self.logits_chunk
        )

    def reference_logps(self, batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        if f"{prefix}ref_logps" in batch:
            return batch[f"{prefix}ref_logps"].values  # a `CachedLogps`: fp32 whatever the precision
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

    def _step(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Log the stage's metrics; return the mean loss and the per-example loss inputs."""
        step = self._paired_step if self.loss_spec.paired else self._unpaired_step
        tensors, output, per_example = step(batch)
        if stage == "train" and self.check_step_zero and self.global_step == 0 and self.step_zero is None:
            self._check_step_zero(tensors, output)
        per_example["loss"] = output.loss.detach()
        for name, value in output.metrics.items():
            per_example[name] = value
        self._log_means(per_example, stage)
        if "pair_weights" in batch:  # the data's weights: a pair of weight 2 counts as two
            return (output.loss * batch["pair_weights"].values).mean(), tensors
        return output.loss.mean(), tensors

    def _log_means(self, per_example: dict[str, torch.Tensor], stage: str) -> None:
        """Log each metric as its mean over all examples of all processes (not a mean of means)."""
        names = sorted(per_example)
        values = [per_example[name].detach().float().reshape(-1) for name in names]
        sums = torch.stack([value.sum() for value in values])
        counts = torch.tensor([value.numel() for value in values], dtype=torch.float32, device=sums.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sums, counts = self.all_gather(sums).sum(0), self.all_gather(counts).sum(0)
        means = {name: total / count for name, total, count in zip(names, sums, counts, strict=True) if count}
        weights = dict(zip(names, counts.tolist(), strict=True))
        # The margin of means is the mean of margins for pairs, and stays defined for unpaired data.
        if "rewards/chosen" in means and "rewards/rejected" in means:
            means["rewards/margin"] = means["rewards/chosen"] - means["rewards/rejected"]
            weights["rewards/margin"] = weights["loss"]
        for name, mean in means.items():
            self.log(
                f"{stage}/{name}",
                mean,
                batch_size=int(weights[name]),  # weights the validation epoch's mean by examples
                on_step=stage == "train",
                on_epoch=stage != "train",
                # Already global (every rank logs the same means and weights): the epoch's mean
                # across ranks is that mean again; reducing it says so to Lightning.
                sync_dist=stage != "train",
                prog_bar=name == "loss",
            )

    def _check_step_zero(self, tensors: dict[str, torch.Tensor], output: LossOutput) -> None:
        with torch.no_grad():
            loss_at_zero = self._call_loss(zero_logratio_inputs(tensors)).loss
        # The tolerance follows what the policy computed in: its weights after the precision plugin
        # cast them (bf16-true, model.dtype), or autocast's dtype under a *-mixed precision.
        device = self.device.type
        dtypes = {p.dtype for p in self.policy.parameters() if p.is_floating_point()}
        if torch.is_autocast_enabled(device):
            dtypes.add(torch.get_autocast_dtype(device))
        dtype = coarsest_dtype(dtypes)
        self.step_zero = step_zero_figures(tensors, output.loss.detach(), loss_at_zero, dtype)
        problem = step_zero_problem(self.step_zero)
        if problem is not None:
            raise StepZeroMismatch(problem)

    def _call_loss(self, tensors: dict[str, torch.Tensor]) -> LossOutput:
        inputs = {name: tensors[name] for name in self.inputs}
        return self.loss_spec.fn(**inputs, **self.beta_option, **self.loss_options)

    def _paired_step(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], LossOutput, dict[str, torch.Tensor]]:
        """The loss on chosen‖rejected rows, and per-pair metric values."""
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
        tensors.update({name: batch[name].values for name in SCORE_INPUTS if name in batch})
        per_example = {"logps/chosen": policy_chosen_logps, "logps/rejected": policy_rejected_logps}
        if self.loss_spec.needs_reference:
            ref_chosen_logps, ref_rejected_logps = split_pairs(self.reference_logps(batch))
            tensors.update(ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
            per_example["logratio/chosen"] = policy_chosen_logps - ref_chosen_logps
            per_example["logratio/rejected"] = policy_rejected_logps - ref_rejected_logps
        output = self._call_loss(tensors)
        per_example.update(
            {
                "rewards/chosen": output.chosen_rewards,
                "rewards/rejected": output.rejected_rewards,
                "rewards/accuracy": (output.chosen_rewards > output.rejected_rewards).float(),
            }
        )
        return tensors, output, per_example

    def _unpaired_step(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], LossOutput, dict[str, torch.Tensor]]:
        """The loss on labelled completions; "chosen" metrics are the desirable examples'."""
        policy_logps, ntokens = self.sequence_logps(self.policy, batch)
        desirable = batch["desirable"]
        tensors = {"policy_logps": policy_logps, "ntokens": ntokens, "desirable": desirable}
        per_example = {"logps/chosen": policy_logps[desirable], "logps/rejected": policy_logps[~desirable]}
        # The desirable completions' NLL per token, weighted by tokens (SFT's figure, whose exp is the
        # perplexity): each completion's mean repeated once per token, so the logged mean over every
        # value of every process is their summed NLL over their summed token count.
        counts = ntokens[desirable].long()
        per_example["nll_per_token"] = (-policy_logps[desirable] / counts).repeat_interleave(counts)
        if self.loss_spec.needs_reference:
            tensors["ref_logps"] = self.reference_logps(batch)
            logratio = policy_logps - tensors["ref_logps"]
            per_example["logratio/chosen"] = logratio[desirable]
            per_example["logratio/rejected"] = logratio[~desirable]
            # Each example's reference point, in log-ratio units: KTO's KL estimate, BCO's reward shift.
            if "kl_baseline" in self.inputs:
                tensors["kl_baseline"] = point = self._kl_baseline(batch)
            else:
                tensors["reward_shift"] = self._reward_shift(logratio.detach(), update=self.training)
                point = tensors["reward_shift"] / self.beta
        output = self._call_loss(tensors)
        per_example["rewards/chosen"] = output.chosen_rewards
        per_example["rewards/rejected"] = output.rejected_rewards
        if self.loss_spec.needs_reference:
            # An unpaired reward is "right" when it sits on its label's side of the reference point.
            per_example["rewards/accuracy"] = ((logratio > point) == desirable).float()
        return tensors, output, per_example

    def _reward_shift(self, logratio: torch.Tensor, *, update: bool) -> torch.Tensor:
        """BCO's delta: the mean of every reward beta * log-ratio seen in training, this batch's and
        every process's included (updated in training only; kept in checkpoints as buffers)."""
        if update:
            count = torch.tensor(float(logratio.numel()), dtype=torch.float64, device=logratio.device)
            sums = torch.stack([self.beta * logratio.double().sum(), count])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                sums = self.all_gather(sums).sum(0)
            self.reward_moments += sums.cpu()
        total, count = self.reward_moments
        return (total / count.clamp(min=1)).float().to(logratio.device)

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
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        # The per-example loss inputs go to callbacks (EvalLogpsWriter keeps them for re-scoring).
        _, tensors = self._step(batch, "val")
        return {"index": batch["index"], **{name: value.detach() for name, value in tensors.items()}}

    def configure_model(self) -> None:
        """Shard policy and reference with FSDP2 when the strategy provides a device mesh.

        Under Lightning's ModelParallelStrategy each decoder layer (the model's own
        `_no_split_modules` classes) and then the whole model are wrapped with `fully_shard`, the
        frozen reference alongside the policy. Other strategies leave the models as they are.
        """
        mesh = self.device_mesh
        if mesh is None:
            return
        models = [model for model in (self.policy, self.reference) if model is not None]
        for model in models:
            shard_model(model, mesh["data_parallel"])
        # The head-only path calls the decoder and the head apart: each must be its own FSDP unit.
        self.head_on_completions = self.head_on_completions and all(map(head_sharded_apart, models))

    # -- optimisation ------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        options = {
            "lr": optim["lr"],
            "weight_decay": optim["weight_decay"],
            "betas": tuple(optim["betas"]),
            "eps": optim["eps"],
            # One pass over each parameter instead of a dozen elementwise ops with their temporaries:
            # at 0.5B parameters on CPU, 0.32 s a step against 1.3-2.2 s, and 1.1 GB less peak
            # memory (docs/speed.md, "Real size"). Sharded parameters (FSDP2's DTensors) take the default,
            # and so does mixed precision: Lightning's AMP plugin refuses to clip the gradients of
            # an optimizer that unscales them itself, which a fused one declares it does.
            "fused": self.device_mesh is None and not str(self.trainer.precision).endswith("-mixed"),
        }
        if optim["master_weights"] and any(p.dtype != torch.float32 for p in parameters):
            optimizer: torch.optim.Optimizer = MasterWeightAdamW(parameters, **options)
        else:
            optimizer = torch.optim.AdamW(parameters, **options)
        steps = self.trainer.estimated_stepping_batches
        scheduler = get_scheduler(
            optim["scheduler"],
            optimizer,
            num_warmup_steps=warmup_steps(optim, steps),
            num_training_steps=steps,
        )
        # The name is the column LearningRateMonitor logs the rate under.
        schedule = {"scheduler": scheduler, "interval": "step", "name": "train/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def shard_model(model: torch.nn.Module, mesh: Any) -> None:
    """FSDP2: each decoder layer its own shard group; then, where the LM head is not tied to the
    embeddings, the decoder (embeddings, final norm) and the head each their own, so the head-only
    path can run the decoder alone and the head a chunk of scored positions at a time, each
    gathering its own parameters; then the rest at the root."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, mesh=mesh)
    if head_sharded_apart(model):
        fully_shard(model.get_decoder(), mesh=mesh)
        fully_shard(model.get_output_embeddings(), mesh=mesh)
    fully_shard(model, mesh=mesh)


def head_sharded_apart(model: torch.nn.Module) -> bool:
    """Whether the decoder and the LM head can be sharded as units apart: a plain head whose weight
    is not the embeddings' (one parameter cannot belong to two units)."""
    if not head_on_completions_supported(model):
        return False
    return model.get_output_embeddings().weight is not model.get_input_embeddings().weight

"""β-free re-scoring: keep the validation set's per-example log-probs, recompute any loss later.

With `save_eval_logps=true` every evaluation writes `<run>/eval_logps/step_<step>.safetensors`:
per-example policy and reference log-probs, token counts and the example index, each of shape (N,).
Any paired loss of the registry can then be evaluated on them at any β without a model: DPO-family
losses see the policy only through these per-sequence numbers. Runs of unpaired losses (kto, rft)
save no pairs, and reference-free ones (orpo, simpo) no reference log-probs: `rescore_refusal` says
which re-scoring a run's log-probs cannot support, and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from dpo_exp.losses import get_loss, loss_inputs

EVAL_LOGPS_DIR = "eval_logps"
_STEP_FILE = re.compile(r"step_(\d+)(?:\.rank\d+)?\.safetensors$")


class EvalLogpsWriter(L.Callback):
    """Collects what `validation_step` returns and writes it once per evaluation."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = Path(run_dir) / EVAL_LOGPS_DIR
        self._batches: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._batches = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Per-example tensors only; batch-level ones (KTO's reference point) do not concatenate.
        size = outputs["index"].shape
        self._batches.append({name: value.cpu() for name, value in outputs.items() if value.shape == size})

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._batches:
            return
        names = set.intersection(*(set(batch) for batch in self._batches))
        tensors = {name: torch.cat([batch[name] for batch in self._batches]).contiguous() for name in names}
        rank = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, self.directory / f"step_{trainer.global_step:06d}{rank}.safetensors")


def saved_steps(run_dir: Path) -> list[int]:
    """The steps at which a run saved its validation log-probs, in order."""
    directory = Path(run_dir) / EVAL_LOGPS_DIR
    if not directory.is_dir():
        return []
    steps = {int(match[1]) for path in directory.iterdir() if (match := _STEP_FILE.match(path.name))}
    return sorted(steps)


def load_eval_logps(run_dir: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    """The saved per-example tensors of one evaluation (the last one by default), all ranks joined."""
    steps = saved_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"{run_dir} holds no {EVAL_LOGPS_DIR}/ (train with save_eval_logps=true)")
    step = steps[-1] if step is None else step
    files = sorted((Path(run_dir) / EVAL_LOGPS_DIR).glob(f"step_{step:06d}*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{run_dir} saved no log-probs at step {step}; saved steps: {steps}")
    parts = [load_file(path) for path in files]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def rescore_refusal(tensors: Mapping[str, torch.Tensor], loss: str) -> str | None:
    """Why the saved log-probs of a run cannot be re-scored as `loss`, or None when they can.

    Re-scoring compares a chosen with a rejected answer, so a run of an unpaired loss (kto, rft),
    which saved single labelled examples, has nothing to re-score; and a loss that needs a
    reference needs its log-probs, which a reference-free run (orpo, simpo) never computed.
    """
    spec = get_loss(loss)
    if "desirable" in tensors:  # what the unpaired step saves, in place of chosen/rejected pairs
        return "the run trained on unpaired examples: its saved log-probs hold no pairs"
    if not spec.paired:
        return f"{loss} trains on unpaired examples; re-scoring needs a paired loss"
    missing = [name for name in loss_inputs(spec) if name not in tensors]
    if spec.needs_reference and any(name.startswith("ref_") for name in missing):
        return f"{loss} needs reference log-probs; the run trained without a reference and saved none"
    if missing:
        return f"loss {loss!r} needs {', '.join(missing)}, which this run did not save"
    return None


def rescore(
    tensors: Mapping[str, torch.Tensor],
    *,
    loss: str,
    beta: float,
    loss_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Mean loss, reward margin and reward accuracy of a paired loss at `beta` on saved log-probs;
    ValueError, with the reason, where `rescore_refusal` names one."""
    refusal = rescore_refusal(tensors, loss)
    if refusal is not None:
        raise ValueError(refusal)
    spec = get_loss(loss)
    inputs = {name: tensors[name].double() for name in loss_inputs(spec)}
    output = spec.fn(**inputs, beta=beta, **(loss_options or {}))
    margins = output.chosen_rewards - output.rejected_rewards
    return {
        "loss": float(output.loss.mean()),
        "rewards/margin": float(margins.mean()),
        "rewards/accuracy": float((margins > 0).double().mean()),
    }

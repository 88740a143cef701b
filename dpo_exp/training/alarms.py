"""Alarms on held-out figures that a loss curve hides, raised once per run.

Likelihood displacement (Razin et al. 2024; Pal et al. 2024, "Smaug"): DPO can widen the margin
between chosen and rejected answers while making both less likely than under the reference, so
the chosen answers the data prefers lose probability mass to text neither side holds. On held-out
pairs it shows as a chosen log-ratio that falls while the margin grows.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from dpo_exp.console import warn

CHOSEN = "val/logratio/chosen"
MARGIN = "val/rewards/margin"
ALARM_METRIC = "alarm/likelihood_displacement"
# Nats of mean held-out chosen log-ratio: below -DROP, and fallen by DROP since the last evaluation.
# A drift of a few hundredths between evaluations of the same pairs is not displacement.
DROP = 0.1


def displacement(previous: dict[str, float], current: dict[str, float]) -> bool:
    """Whether, between two evaluations, the held-out chosen log-ratio fell by more than DROP to
    below -DROP while the margin grew."""
    fell = current["chosen"] < min(previous["chosen"] - DROP, -DROP)
    return fell and current["margin"] > previous["margin"]


# The remedy that fits the loss: a term holding the chosen answers up, or a stronger pull to the reference.
REMEDIES = {
    "rpo": "a larger loss.alpha (the weight of the chosen answers' NLL), or a larger beta",
    "kto": "a larger loss.desirable_weight, or a larger beta",
    "bco": "a larger beta, or loss=kto with a larger loss.desirable_weight",
}
PAIRED_REMEDY = "loss=rpo (its loss.alpha weighs the chosen answers' NLL), or a larger beta"


def displacement_message(previous: dict[str, float], current: dict[str, float], loss: str = "dpo") -> str:
    what = "the policy makes the chosen answers less likely than the reference does"
    if current["margin"] > 0:
        what += ", only less so than the rejected ones"
    else:
        what += ", and the margin, though growing, is still negative"
    return (
        f"likelihood displacement: the held-out chosen log-ratio fell from {previous['chosen']:+.3f} "
        f"to {current['chosen']:+.3f} (step {previous['step']} -> {current['step']}) while the margin "
        f"grew from {previous['margin']:.3f} to {current['margin']:.3f}: {what}. "
        f"Remedies: {REMEDIES.get(loss, PAIRED_REMEDY)}"
    )


class LikelihoodDisplacementAlarm(L.Callback):
    """Watches `val/logratio/chosen` and `val/rewards/margin` after every validation; the first
    time they show displacement it warns on the console, logs `alarm/likelihood_displacement` = 1
    to every logger (W&B included), and keeps the figures in `fired` for summary.json."""

    def __init__(self, loss: str = "dpo") -> None:
        self.loss = loss  # the remedy named fits it
        self.previous: dict[str, float] | None = None
        self.fired: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:  # kept in checkpoints: a resumed run compares on
        return {"previous": self.previous, "fired": self.fired}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous, self.fired = state_dict["previous"], state_dict["fired"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or CHOSEN not in metrics or MARGIN not in metrics:
            return
        current = {
            "chosen": float(metrics[CHOSEN]),
            "margin": float(metrics[MARGIN]),
            "step": trainer.global_step,
        }
        previous, self.previous = self.previous, current
        if self.fired is not None or previous is None or not displacement(previous, current):
            return
        message = displacement_message(previous, current, self.loss)
        self.fired = {"from": previous, "to": current, "message": message}
        if trainer.is_global_zero:
            warn(self.fired["message"])
            for logger in trainer.loggers:
                logger.log_metrics({ALARM_METRIC: 1.0}, step=trainer.global_step)

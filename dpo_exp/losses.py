"""Preference losses as pure functions on per-sequence log-probs, plus the registry of them.

Every log-prob argument is a ``(B,)`` tensor holding the SUM of token log-probs over the
completion (what ``logprobs.py`` returns). Losses that length-normalise also take the token
counts (``chosen_ntokens``, ``rejected_ntokens``, each ``(B,)`` and >= 1) and divide themselves,
so the caller never has to know which loss wants means. Each function returns a per-example
loss ``(B,)`` to minimise; the caller reduces it. Rewards and metrics are detached.

This module imports only torch and the standard library: no config, logging or collectives.
KTO's reference point ``kl_baseline`` is an input that the caller computes and all-reduces.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ORPO's log-odds log(p / (1 - p)) is infinite at p = 1, i.e. at mean log-prob m = 0.
# Clamping m to at most this keeps log(1 - exp(m)) >= log(1e-6) ~ -13.8.
_MAX_MEAN_LOGPS = -1e-6


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    loss: (B,) per-example loss to minimise; the caller reduces (mean).
    chosen_rewards: (B,) detached implicit rewards of the chosen responses
        (KTO: of the desirable examples, shape (n_desirable,), possibly empty).
    rejected_rewards: (B,) detached implicit rewards of the rejected responses
        (KTO: of the undesirable examples, shape (n_undesirable,), possibly empty).
    metrics: loss-specific terms, each detached; (B,) per example, or a scalar for
        batch-level terms such as KTO's ``kl``.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    metrics: dict[str, torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _check_shapes(*tensors: torch.Tensor) -> None:
    """All per-sequence inputs must be 1-D and the same length: (B,) vs (B, 1) would
    broadcast silently to (B, B)."""
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"loss inputs must all have the same shape (B,); got {shapes}")


def _margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected), shape (B,)."""
    _check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def _ref_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Implicit reward beta * (policy - ref), detached, shape (B,)."""
    return (beta * (policy_logps - ref_logps)).detach()


def _mean_logps(logps: torch.Tensor, ntokens: torch.Tensor) -> torch.Tensor:
    """Per-token mean log-prob m = summed logps / ntokens (ntokens may be an int tensor)."""
    return logps / ntokens.to(logps.dtype)


def _log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) with p = exp(m): m - log(1 - exp(m)), computed as m - log(-expm1(m)).

    m is clamped to <= -1e-6 so that m -> 0 (p -> 1) stays finite; for very negative m
    expm1(m) -> -1 and the result tends to m, also finite.
    """
    m = mean_logps.clamp(max=_MAX_MEAN_LOGPS)
    return m - torch.log(-torch.expm1(m))


def _dpo_style_output(
    loss: torch.Tensor,
    logits: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    **metrics: torch.Tensor,
) -> LossOutput:
    """Output for the reference-based pairwise losses: rewards beta * (policy - ref) and
    grad_weight = sigmoid(-logits), the weight DPO's gradient puts on the pair."""
    return LossOutput(
        loss=loss,
        chosen_rewards=_ref_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=_ref_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        metrics={"grad_weight": torch.sigmoid(-logits).detach(), **metrics},
    )


# --------------------------------------------------------------------------- losses


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Direct Preference Optimization, with optional conservative label smoothing.

    loss = -(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)
    with h = (pi_c - ref_c) - (pi_r - ref_r).

    Rafailov, Sharma, Mitchell, Ermon, Manning, Finn (2023), arXiv:2305.18290.
    eps > 0 is conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"):
    eps is the assumed probability that a preference label is flipped, 0 <= eps < 0.5.
    Log-probs: SUMMED over completion tokens.
    metrics: grad_weight = sigmoid(-beta * h).
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = beta * _margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return _dpo_style_output(
        loss,
        logits,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    length_normalize: bool = True,
) -> LossOutput:
    """Identity Preference Optimisation (IPO).

    loss = (h' - 1 / (2 * beta))^2, where beta is the paper's tau and
      h' = (pi_c - ref_c) / chosen_ntokens - (pi_r - ref_r) / rejected_ntokens
           if length_normalize (per-token-mean log-probs, as TRL does), else
      h' = h = (pi_c - ref_c) - (pi_r - ref_r) (summed log-probs, as the original DPO repo).

    Azar, Rowland, Piot, Guo, Calandriello, Valko, Munos (2023), arXiv:2310.12036.
    Log-probs: pass SUMMED log-probs; this function divides by the token counts itself when
    length_normalize is True (the default).
    Rewards: beta * (policy - ref), per-token mean when length_normalize.
    metrics: grad_weight = sigmoid(-beta * h').
    """
    _check_beta(beta)
    _check_shapes(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_ntokens,
        rejected_ntokens,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if length_normalize:
        chosen_logratios = _mean_logps(chosen_logratios, chosen_ntokens)
        rejected_logratios = _mean_logps(rejected_logratios, rejected_ntokens)
    h = chosen_logratios - rejected_logratios
    loss = (h - 1 / (2 * beta)) ** 2
    return LossOutput(
        loss=loss,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
        metrics={"grad_weight": torch.sigmoid(-beta * h).detach()},
    )


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_baseline: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """Kahneman-Tversky Optimization (KTO), unpaired.

    With r = policy - ref and reference point z0 = kl_baseline (a scalar, treated as a
    constant and detached here):
      desirable:   loss = w_D * (1 - sigmoid(beta * (r - z0)))
      undesirable: loss = w_U * (1 - sigmoid(beta * (z0 - r)))

    Ethayarajh, Xu, Muennighoff, Jurafsky, Kiela (2024), arXiv:2402.01306.
    Log-probs: SUMMED over completion tokens. ``desirable`` is a bool tensor (B,).
    ``kl_baseline`` is computed (e.g. from mismatched prompt/completion pairs, clamped at 0)
    and all-reduced by the caller; this function holds no state.
    Rewards: beta * r of the desirable (chosen_rewards) and undesirable (rejected_rewards)
    examples; either may be empty. metrics: kl = z0 (scalar).
    """
    _check_beta(beta)
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError(
            "desirable_weight and undesirable_weight must be >= 0, "
            f"got {desirable_weight} and {undesirable_weight}"
        )
    _check_shapes(policy_logps, ref_logps, desirable)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    if kl_baseline.numel() != 1:
        raise ValueError(f"kl_baseline must be a scalar, got shape {tuple(kl_baseline.shape)}")
    z0 = kl_baseline.detach().reshape(())
    r = policy_logps - ref_logps
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))),
    )
    rewards = (beta * r).detach()
    return LossOutput(
        loss=loss,
        chosen_rewards=rewards[desirable],
        rejected_rewards=rewards[~desirable],
        metrics={"kl": z0},
    )


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Odds Ratio Preference Optimization (ORPO), reference-free.

    With per-token mean log-probs m = logps / ntokens and log-odds(m) = m - log(1 - exp(m)):
      log_odds_ratio = log-odds(m_c) - log-odds(m_r)
      loss = chosen_nll - beta * logsigmoid(log_odds_ratio)
    where beta is the paper's lambda and chosen_nll (B,) is the per-token-mean NLL of the
    chosen response (usually -m_c), passed in by the caller.

    Hong, Lee, Thorne (2024), arXiv:2403.07691.
    Log-probs: pass SUMMED log-probs; the function takes per-token means itself.
    m is clamped to <= -1e-6 so the log-odds stay finite as p -> 1.
    Rewards: beta * m. metrics: nll, log_odds_ratio, or_loss = -logsigmoid(log_odds_ratio).
    """
    _check_beta(beta)
    _check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens, chosen_nll)
    chosen_mean = _mean_logps(policy_chosen_logps, chosen_ntokens)
    rejected_mean = _mean_logps(policy_rejected_logps, rejected_ntokens)
    log_odds_ratio = _log_odds(chosen_mean) - _log_odds(rejected_mean)
    or_loss = -F.logsigmoid(log_odds_ratio)
    return LossOutput(
        loss=chosen_nll + beta * or_loss,
        chosen_rewards=(beta * chosen_mean).detach(),
        rejected_rewards=(beta * rejected_mean).detach(),
        metrics={
            "nll": chosen_nll.detach(),
            "log_odds_ratio": log_odds_ratio.detach(),
            "or_loss": or_loss.detach(),
        },
    )


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Hinge (SLiC-style calibration) loss on the reference-adjusted margin.

    loss = relu(1 - beta * h), h = (pi_c - ref_c) - (pi_r - ref_r).

    Zhao, Joshi, Liu, Khalman, Saleh, Liu (2023), SLiC-HF, arXiv:2305.10425.
    Log-probs: SUMMED over completion tokens.
    metrics: grad_weight = 1 where beta * h < 1 (the pair still gets a gradient), else 0.
    """
    _check_beta(beta)
    logits = beta * _margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(
        loss=torch.relu(1 - logits),
        chosen_rewards=_ref_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=_ref_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        metrics={"grad_weight": (logits < 1).to(logits.dtype).detach()},
    )


def robust_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
) -> LossOutput:
    """Robust DPO: an unbiased estimate of the DPO loss under label-flip noise rate eps.

    loss = (-(1 - eps) * logsigmoid(beta * h) + eps * logsigmoid(-beta * h)) / (1 - 2 * eps),
    h = (pi_c - ref_c) - (pi_r - ref_r), 0 <= eps < 0.5.

    Chowdhury, Kini, Natarajan (2024), "Provably Robust DPO", arXiv:2403.00409.
    Log-probs: SUMMED over completion tokens.
    metrics: grad_weight = sigmoid(-beta * h).
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = beta * _margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = (-(1 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)) / (
        1 - 2 * label_smoothing
    )
    return _dpo_style_output(
        loss,
        logits,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    gamma: float = 0.5,
) -> LossOutput:
    """Simple Preference Optimization (SimPO), reference-free and length-averaged.

    loss = -logsigmoid(beta * (m_c - m_r) - gamma), with m = logps / ntokens.
    (Here gamma is the margin itself, not gamma / beta as in some implementations.)

    Meng, Xia, Chen (2024), arXiv:2405.14734.
    Log-probs: pass SUMMED log-probs; the function takes per-token means itself.
    Rewards: beta * m. metrics: grad_weight = sigmoid(-(beta * (m_c - m_r) - gamma)).
    """
    _check_beta(beta)
    _check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens)
    chosen_mean = _mean_logps(policy_chosen_logps, chosen_ntokens)
    rejected_mean = _mean_logps(policy_rejected_logps, rejected_ntokens)
    logits = beta * (chosen_mean - rejected_mean) - gamma
    return LossOutput(
        loss=-F.logsigmoid(logits),
        chosen_rewards=(beta * chosen_mean).detach(),
        rejected_rewards=(beta * rejected_mean).detach(),
        metrics={"grad_weight": torch.sigmoid(-logits).detach()},
    )


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    *,
    beta: float,
    alpha: float = 1.0,
) -> LossOutput:
    """DPO plus a per-token NLL term on the chosen response (iterative RPO).

    loss = -logsigmoid(beta * h) + alpha * nll, nll = -policy_chosen_logps / chosen_ntokens,
    h = (pi_c - ref_c) - (pi_r - ref_r).

    Pang, Yuan, Cho, He, Sukhbaatar, Weston (2024), "Iterative Reasoning Preference
    Optimization", arXiv:2404.19733.
    Log-probs: SUMMED; the DPO term uses sums, the NLL term divides by chosen_ntokens itself.
    metrics: grad_weight = sigmoid(-beta * h), nll.
    """
    _check_beta(beta)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    _check_shapes(policy_chosen_logps, chosen_ntokens)
    logits = beta * _margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    nll = -_mean_logps(policy_chosen_logps, chosen_ntokens)
    return _dpo_style_output(
        -F.logsigmoid(logits) + alpha * nll,
        logits,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        nll=nll.detach(),
    )


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LossSpec:
    """What the rest of the program needs to know about a loss, so nothing else branches
    on its name.

    name: the name used in YAML.
    fn: the loss function; its positional parameters name the tensors it needs
        (see ``loss_inputs``) and its keyword-only ones the hyperparameters
        (see ``loss_hyperparameters``).
    needs_reference: whether the inputs include ``ref_*_logps`` (False for orpo, simpo).
    paired: False for kto, which takes unpaired examples with a ``desirable`` flag.
    has_grad_weight: whether ``metrics`` includes ``grad_weight``.
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    paired: bool
    has_grad_weight: bool


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("dpo", dpo_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("ipo", ipo_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("kto", kto_loss, needs_reference=True, paired=False, has_grad_weight=False),
        LossSpec("orpo", orpo_loss, needs_reference=False, paired=True, has_grad_weight=False),
        LossSpec("hinge", hinge_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("robust", robust_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("simpo", simpo_loss, needs_reference=False, paired=True, has_grad_weight=True),
        LossSpec("rpo", rpo_loss, needs_reference=True, paired=True, has_grad_weight=True),
    )
}


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; an unknown name raises ValueError listing the
    valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r}; valid losses: {valid}") from None


def loss_inputs(spec: LossSpec) -> tuple[str, ...]:
    """Names of the tensor (positional) parameters of ``spec.fn``, in order."""
    return tuple(
        p.name
        for p in inspect.signature(spec.fn).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def loss_hyperparameters(spec: LossSpec) -> dict[str, object]:
    """Keyword-only parameter names of ``spec.fn`` -> default value
    (``inspect.Parameter.empty`` for required ones such as ``beta``)."""
    return {
        p.name: p.default
        for p in inspect.signature(spec.fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }

"""AdamW that steps fp32 master copies of bf16 (or fp16) weights and writes them back rounded.

A bf16 weight stepped in place loses every update smaller than half its ulp (2^-9 of its size): at a
DPO learning rate (5e-7), an AdamW step moves a weight by about the learning rate, so 4 steps of a
bf16-true run changed 0.96% of the weights against 97.7% in fp32. Here each low-precision parameter
has an fp32 copy in the optimizer state; torch's AdamW (the kernel fp32 training uses) steps the
copy, and the parameter becomes the copy rounded to its dtype. Small updates add up in fp32 until
they move the bf16 weight. fp32 parameters (a LoRA adapter that peft keeps in fp32) are stepped as
they are. The moments are fp32 for every parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adamw import adamw

# State kept in fp32 whatever the parameter's dtype. `Optimizer.load_state_dict` casts floating
# state to the parameter's dtype, which would round a bf16 parameter's master copy to bf16.
FP32_STATE = ("master", "exp_avg", "exp_avg_sq")


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, no amsgrad) on fp32 masters of low-precision parameters.

    The parameter groups hold the model's own parameters, so gradient clipping, learning-rate
    schedulers and `zero_grad` act on them as with any optimizer; the masters live in `state`.
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        fused: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "fused": fused}
        super().__init__(params, defaults)

    def master(self, param: torch.Tensor) -> torch.Tensor:
        """The fp32 weights that `param` is the rounding of (`param` itself when it is fp32)."""
        return self.state[param].get("master", param)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for param in params:
                self._init_state(param, group["fused"])
            states = [self.state[p] for p in params]
            targets = [self.master(p) for p in params]
            adamw(
                targets,
                [p.grad if p.dtype == torch.float32 else p.grad.float() for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                fused=group["fused"],
                amsgrad=False,
                beta1=group["betas"][0],
                beta2=group["betas"][1],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )
            for param, target in zip(params, targets, strict=True):
                if target is not param:
                    param.copy_(target)  # round to nearest, the weight the next forward uses
        return loss

    def _init_state(self, param: torch.Tensor, fused: bool) -> None:
        """Each missing entry: a fresh run's, or a master for a checkpoint saved by torch's AdamW."""
        state = self.state[param]
        if "master" not in state and param.dtype != torch.float32:
            state["master"] = param.detach().float()
        if "step" not in state:  # as torch's AdamW: on the parameter's device for the fused kernel
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device if fused else "cpu")
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in state:
                state[key] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As `Optimizer.load_state_dict`, with the masters and moments kept in fp32."""
        kept = {
            index: {k: v for k, v in s.items() if k in FP32_STATE} for index, s in state_dict["state"].items()
        }
        rest = {
            index: {k: v for k, v in s.items() if k not in FP32_STATE}
            for index, s in state_dict["state"].items()
        }
        super().load_state_dict({**state_dict, "state": rest})
        indices = [index for group in state_dict["param_groups"] for index in group["params"]]
        params = [param for group in self.param_groups for param in group["params"]]
        for index, param in zip(indices, params, strict=True):
            for key, value in kept.get(index, {}).items():
                self.state[param][key] = value.to(device=param.device, dtype=torch.float32)

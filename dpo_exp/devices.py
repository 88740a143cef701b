"""Where a run computes, and in what precision by default: what fits the device it runs on.

`trainer.precision: auto` (the default) is bf16-mixed on a CUDA GPU with bf16 units (Ampere and
newer): fp32 master weights and optimizer state, matrix products in bf16, as DPO recipes train.
Elsewhere it is 32-true, with TF32 matrix products on a CUDA GPU that has them (`speed.tf32`).
On a CPU the default stays 32-true: bf16 there is only faster on some CPUs (AMX), and the
built-in experiment's figures are fp32's.
"""

from __future__ import annotations

import torch

GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def device_type(accelerator: str) -> str:
    """`cuda` where Lightning's `accelerator` picks a CUDA GPU, else `cpu` (or the one named)."""
    accelerator = str(accelerator)
    if accelerator in GPU_ACCELERATORS and torch.cuda.is_available():
        return "cuda"
    return "cpu" if accelerator in GPU_ACCELERATORS else accelerator


def run_precision(precision: str, accelerator: str) -> str:
    """`trainer.precision` with `auto` made the precision that fits the device."""
    if str(precision) != "auto":
        return str(precision)
    if device_type(accelerator) == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def weights_dtype(precision: str, model_dtype: str | None) -> torch.dtype:
    """The dtype trained weights are kept in: a `*-true` precision casts them, else `model.dtype`."""
    precision = str(precision)
    if precision == "bf16-true":
        return torch.bfloat16
    if precision == "16-true":
        return torch.float16
    return HALF_DTYPES.get(str(model_dtype), torch.float32)


def compute_dtype(precision: str, model_dtype: str | None) -> torch.dtype:
    """The dtype matrix products run in: autocast's under `*-mixed` (`bf16`, `16` are Lightning's
    spellings of those), else the weights'."""
    precision = str(precision)
    if precision in ("bf16-mixed", "bf16"):
        return torch.bfloat16
    if precision in ("16-mixed", "16"):
        return torch.float16
    return weights_dtype(precision, model_dtype)


def allow_tf32(accelerator: str, allowed: bool) -> bool:
    """Let fp32 matrix products and convolutions on a CUDA GPU use TF32 (10-bit mantissa inputs,
    fp32 accumulation); returns whether they do. Nothing changes on a CPU."""
    if device_type(accelerator) != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    return allowed


def describe_device(precision: str, accelerator: str, devices: object) -> str:
    """`bf16-mixed on cuda ×8`, `32-true (TF32 products) on cuda`, `32-true on cpu`: for the run's line."""
    kind = device_type(accelerator)
    tf32 = (
        " (TF32 products)"
        if kind == "cuda" and "32" in precision and torch.backends.cuda.matmul.allow_tf32
        else ""
    )
    count = f" ×{devices}" if isinstance(devices, int) and devices > 1 else ""
    return f"{precision}{tf32} on {kind}{count}"

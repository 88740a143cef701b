"""LoRA through peft: a new or saved adapter on the policy, and the policy's own base as reference.

With LoRA the base weights are frozen, so the reference needs no second model: it is the policy
with its adapter switched off (or switched to a frozen copy of the starting adapter).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import PreTrainedModel

from dpo_exp.world import cluster_environment

TRAINED_ADAPTER = "default"  # peft's name for the adapter a PeftModel trains
REFERENCE_ADAPTER = "reference"  # the starting adapter again, frozen, when it is the reference


def uses_lora(model_cfg: Any) -> bool:
    """Whether the policy is trained through a LoRA adapter (new, or loaded from `adapter_path`)."""
    return model_cfg.get("lora") is not None or model_cfg.get("adapter_path") is not None


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def apply_lora(model: PreTrainedModel, model_cfg: Any) -> PreTrainedModel | PeftModel:
    """Wrap `model` in a trainable LoRA adapter as the config says; return it unchanged without LoRA."""
    if not uses_lora(model_cfg):
        return model
    if model_cfg.get("quantization") is not None:
        # Casts norms to fp32 and freezes the quantized base; checkpointing is applied here or not at all.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(model_cfg.get("activation_checkpointing"))
        )
    if model_cfg.get("adapter_path") is not None:
        return load_adapter(model, model_cfg.adapter_path, reference=model_cfg.adapter_reference)
    return get_peft_model(model, lora_config(model_cfg.lora))


def lora_config(lora_cfg: Any) -> LoraConfig:
    options = OmegaConf.to_container(lora_cfg, resolve=True) if OmegaConf.is_config(lora_cfg) else lora_cfg
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        target_modules=options["target_modules"],
    )


def load_adapter(model: PreTrainedModel, adapter_path: str, *, reference: str) -> PeftModel:
    """The saved adapter, trainable; loaded a second time, frozen, when it is also the reference."""
    policy = PeftModel.from_pretrained(model, adapter_path, adapter_name=TRAINED_ADAPTER, is_trainable=True)
    if reference == "adapter":
        policy.load_adapter(adapter_path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        policy.set_adapter(TRAINED_ADAPTER)  # trainable again, the reference copy stays frozen
    return policy


@contextlib.contextmanager
def reference_mode(policy: PeftModel) -> Iterator[None]:
    """Inside, `policy` computes the reference: its base model, or the frozen reference adapter.

    Eval mode (no dropout) and no gradients, as for a separately loaded reference; the policy's
    training mode and active adapter are restored on exit.
    """
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad(), _reference_weights(policy):
            yield
    finally:
        policy.train(was_training)


@contextlib.contextmanager
def _reference_weights(policy: PeftModel) -> Iterator[None]:
    if REFERENCE_ADAPTER not in policy.peft_config:
        with policy.disable_adapter():
            yield
        return
    policy.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
    try:
        yield
    finally:
        policy.set_adapter(TRAINED_ADAPTER)


def quantization_config(model_cfg: Any) -> dict[str, Any]:
    """`from_pretrained` arguments for QLoRA's 4-bit NF4 base on this process's GPU; empty without it."""
    if model_cfg.get("quantization") is None:
        return {}
    from transformers import BitsAndBytesConfig

    # One GPU per process: its rank on this node, as the launcher states it (srun sets
    # SLURM_LOCALID, not LOCAL_RANK, before Lightning's environment exports it).
    launcher = cluster_environment()
    local_rank = launcher.local_rank() if launcher is not None else int(os.environ.get("LOCAL_RANK", 0))
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
        "device_map": {"": local_rank},
    }

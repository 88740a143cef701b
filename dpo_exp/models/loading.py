"""Policy, reference and tokenizer from a `model` config (a pretrained path, or a tiny config)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from dpo_exp.models.checks import check_vocabulary
from dpo_exp.models.lora import apply_lora, quantization_config, uses_lora
from dpo_exp.models.tokenizer import build_char_tokenizer


def model_label(model_cfg: Any) -> str:
    """The model group's name; for `model=hf`, the model's own folder or hub name instead."""
    name = str(model_cfg.name)
    if name == "hf" and model_cfg.get("path"):
        name = Path(str(model_cfg.path).rstrip("/")).name or name
    return name


def load_tokenizer(model_cfg: Any) -> Any:
    """The model's own tokenizer, or the offline character tokenizer for models built from a config."""
    path = model_cfg.get("tokenizer_path") or model_cfg.get("path")
    if path is None:
        return build_char_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=model_cfg.get("revision"), trust_remote_code=bool(model_cfg.get("trust_remote_code"))
    )
    if tokenizer.pad_token is None:
        # Padding is masked out of every loss, so any id will do; EOS is what most recipes use.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else getattr(torch, name)


def load_policy(model_cfg: Any, tokenizer: Any) -> PreTrainedModel:
    """The trainable policy: the base model, checkpointed and wrapped in LoRA as the config says.

    In train mode whatever its source (`from_pretrained` returns eval mode, `from_config` train
    mode), with its own dropout switched off unless `model.dropout` is true.
    """
    model = load_base(model_cfg, tokenizer)
    check_vocabulary(model, tokenizer, model_cfg)
    if not model_cfg.get("dropout", False):
        disable_dropout(model)
    model.train()
    if model_cfg.get("activation_checkpointing") and model_cfg.get("quantization") is None:
        model.activation_checkpointing_enable()  # QLoRA's preparation enables it itself
    return apply_lora(model, model_cfg)


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout rate of the model set to 0, as TRL's `disable_dropout` and the DPO authors' code
    do: its `nn.Dropout` modules, and the `attention_dropout` rate attention modules pass to their
    attention kernel (Llama, Qwen2, Mistral). Called before LoRA wraps the model: LoRA's own dropout
    is `model.lora.dropout`."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def load_base(model_cfg: Any, tokenizer: Any) -> PreTrainedModel:
    """`from_pretrained(path)` when the config names a path or hub id, else a fresh tiny model."""
    if model_cfg.get("path") is not None:
        return load_pretrained(
            model_cfg.path, model_cfg, dtype=model_cfg.get("dtype"), **quantization_config(model_cfg)
        )
    architecture = OmegaConf.to_container(model_cfg.config, resolve=True)
    config = AutoConfig.for_model(
        model_cfg.architecture,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **architecture,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=_dtype(model_cfg.get("dtype")))
    return model


def load_pretrained(path: str, model_cfg: Any, *, dtype: str | None, **extra: Any) -> PreTrainedModel:
    kwargs = {
        **extra,
        "revision": model_cfg.get("revision"),
        "dtype": _dtype(dtype),
        "trust_remote_code": bool(model_cfg.get("trust_remote_code")),
    }
    if model_cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_reference(model_cfg: Any, policy: PreTrainedModel) -> PreTrainedModel | None:
    """The frozen reference: `ref_path` when given, else a copy of the initial policy.

    None for a LoRA policy without `ref_path`: its own base (adapter off) is the reference.
    """
    if model_cfg.get("ref_path") is None and uses_lora(model_cfg):
        return None
    if model_cfg.get("ref_path") is not None:
        # `ref_dtype: null` means the policy's dtype; passed on, since without a dtype
        # `from_pretrained` keeps the checkpoint's (a bf16 checkpoint would give a bf16 reference).
        dtype = model_cfg.get("ref_dtype") or model_cfg.get("dtype")
        reference = load_pretrained(model_cfg.ref_path, model_cfg, dtype=dtype)
    else:
        reference = copy.deepcopy(policy)
        if model_cfg.get("ref_dtype") is not None:
            reference.to(_dtype(model_cfg.ref_dtype))
    return freeze(reference)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (dropout off) and no gradients."""
    model.eval()
    model.requires_grad_(False)
    return model

"""Checks on the `model` and `export` config (dtypes, saved model folders, LoRA, QLoRA, starting
adapter, export format).

They run with the rest of the config checks, before any model loads, and name the key at fault.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dpo_exp.errors import ConfigError
from dpo_exp.models.lora import uses_lora

LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
ADAPTER_REFERENCES = ("base", "adapter")
QUANTIZATIONS = ("4bit",)
EXPORT_LORA = ("merged", "adapter")
CASTING_PRECISIONS = ("bf16-true", "16-true", "64-true")  # Lightning casts every weight to these


# Saved folders the config names, and the file that makes each one what it claims to be.
SAVED_FOLDERS = {"path": "config.json", "ref_path": "config.json", "adapter_path": "adapter_config.json"}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class ModelConfigError(ConfigError):
    """A model or export setting that cannot work, named by its dotted key."""


def check_dtypes(model_cfg: Any) -> None:
    for key in ("dtype", "ref_dtype"):
        name = model_cfg.get(key)
        if name is not None and not (
            isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            raise ModelConfigError(
                f"model.{key}: {name!r} is not a torch dtype (e.g. float32, bfloat16, float16)"
            )


def looks_local(path: str) -> bool:
    """A path on this machine rather than a hub id (`org/name`)."""
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path)


def check_model_files(model_cfg: Any) -> None:
    """Every saved folder the config names exists, is a saved folder, and has no truncated weights."""
    for key, marker in SAVED_FOLDERS.items():
        path = model_cfg.get(key)
        if path is None or not looks_local(str(path)):
            continue
        folder = Path(str(path)).expanduser()
        if not folder.is_dir():
            raise ModelConfigError(f"model.{key}: no such folder: {path}")
        if not (folder / marker).is_file():
            empty = "it is empty" if not any(folder.iterdir()) else f"it has no {marker}"
            raise ModelConfigError(f"model.{key}: {path} is not a saved model folder ({empty})")
        weights = sorted(file for pattern in WEIGHT_FILES for file in folder.glob(pattern))
        if not weights:
            raise ModelConfigError(f"model.{key}: {path} holds no weight files (*.safetensors, *.bin)")
        for file in weights:
            problem = safetensors_problem(file) if file.suffix == ".safetensors" else None
            if problem is not None:
                raise ModelConfigError(f"model.{key}: {file} {problem}; save or download the model again")


def safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot be whole (cut short, not safetensors), from its header alone."""
    size = file.stat().st_size
    with file.open("rb") as stream:
        head = stream.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or 8 + length > size:
            return f"is truncated ({size} bytes, shorter than its own header)"
        try:
            header = json.loads(stream.read(length))
            end = max(
                (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError):
            return "is not a safetensors file (unreadable header)"
    if 8 + length + end > size:
        return f"is truncated ({size} bytes of {8 + length + end})"
    return None


def check_model_config(cfg: DictConfig) -> None:
    model_cfg = cfg.model
    if not isinstance(model_cfg.get("dropout", False), bool):
        raise ModelConfigError(f"model.dropout must be true or false, got {model_cfg.dropout!r}")
    check_dtypes(model_cfg)
    if model_cfg.get("lora") is not None:
        check_lora(model_cfg.lora)
    if model_cfg.get("adapter_path") is not None:
        check_adapter(model_cfg)
    elif model_cfg.get("adapter_reference") is not None:
        raise ModelConfigError("model.adapter_reference is set, but no model.adapter_path to start from")
    if model_cfg.get("quantization") is not None:
        check_quantization(model_cfg, cfg.trainer.precision)
    if cfg.get("export") is not None:
        check_export(cfg.export, model_cfg)
    check_model_files(model_cfg)


def check_lora(lora_cfg: Any) -> None:
    options = OmegaConf.to_container(lora_cfg, resolve=True)
    if not isinstance(options, dict):
        raise ModelConfigError(f"model.lora must be null or a mapping of {sorted(LORA_KEYS)}")
    unknown = sorted(set(options) - LORA_KEYS)
    missing = sorted(LORA_KEYS - set(options))
    if unknown or missing:
        raise ModelConfigError(
            f"model.lora takes exactly {sorted(LORA_KEYS)}; "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    r, alpha = options["r"], options["alpha"]
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ModelConfigError(f"model.lora.r must be a positive integer, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise ModelConfigError(f"model.lora.alpha must be a number > 0, got {alpha!r}")
    if not isinstance(options["dropout"], int | float) or not 0 <= options["dropout"] < 1:
        raise ModelConfigError(f"model.lora.dropout must be in [0, 1), got {options['dropout']!r}")
    if not options["target_modules"]:
        raise ModelConfigError("model.lora.target_modules must name modules (a list, or 'all-linear')")


def check_adapter(model_cfg: Any) -> None:
    """A saved adapter to continue: its own config fixes the LoRA shape; the reference must be named."""
    if model_cfg.get("lora") is not None:
        raise ModelConfigError(
            "set model.lora (a new adapter) or model.adapter_path (continue a saved one), not both"
        )
    if model_cfg.get("path") is None:
        raise ModelConfigError("model.adapter_path needs model.path, the base the adapter was trained on")
    config_file = os.path.join(model_cfg.adapter_path, "adapter_config.json")
    if not os.path.isfile(config_file):
        raise ModelConfigError(f"model.adapter_path: no adapter_config.json in {model_cfg.adapter_path}")
    if model_cfg.get("adapter_reference") not in ADAPTER_REFERENCES:
        raise ModelConfigError(
            "model.adapter_reference must say what the reference is when starting from an adapter: "
            f"'base' (the base model, adapter off) or 'adapter' (the saved adapter, frozen); "
            f"got {model_cfg.get('adapter_reference')!r}"
        )


def check_quantization(model_cfg: Any, precision: Any) -> None:
    """QLoRA: a 4-bit base under a LoRA adapter, which needs bitsandbytes and a CUDA GPU."""
    if model_cfg.quantization not in QUANTIZATIONS:
        raise ModelConfigError(
            f"model.quantization must be null or one of {QUANTIZATIONS}, got {model_cfg.quantization!r}"
        )
    if not uses_lora(model_cfg):
        raise ModelConfigError("model.quantization trains through LoRA: set model.lora or model.adapter_path")
    if model_cfg.get("path") is None:
        raise ModelConfigError("model.quantization needs a pretrained model.path to quantize")
    if str(precision) in CASTING_PRECISIONS:
        raise ModelConfigError(
            f"model.quantization: trainer.precision={precision} would cast the 4-bit weights; use bf16-mixed"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelConfigError("model.quantization needs the bitsandbytes package (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        raise ModelConfigError("model.quantization needs a CUDA GPU; none is available here")


def check_export(export_cfg: Any, model_cfg: Any) -> None:
    if export_cfg.lora not in EXPORT_LORA:
        raise ModelConfigError(f"export.lora must be one of {EXPORT_LORA}, got {export_cfg.lora!r}")
    if not export_cfg.save:
        return
    if export_cfg.lora == "adapter" and not uses_lora(model_cfg):
        raise ModelConfigError("export.lora=adapter exports a LoRA adapter, but model.lora is not set")
    if export_cfg.lora == "adapter" and model_cfg.get("path") is None:
        raise ModelConfigError("export.lora=adapter needs model.path: an adapter loads its base by path")
    if export_cfg.lora == "merged" and model_cfg.get("quantization") is not None:
        raise ModelConfigError("export.lora=merged would merge into 4-bit weights; use export.lora=adapter")


def check_vocabulary(model: Any, tokenizer: Any, model_cfg: Any) -> None:
    """A model whose embeddings have fewer rows than its tokenizer has tokens would index past them
    on the first token id beyond its vocabulary (an IndexError on a CPU, a device assert on a GPU);
    more rows than tokens (a vocabulary padded for speed) is fine."""
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or rows >= len(tokenizer):
        return
    source = model_cfg.get("tokenizer_path") or model_cfg.get("path")
    key = "model.tokenizer_path" if model_cfg.get("tokenizer_path") else "model.path"
    raise ModelConfigError(
        f"{key}: the model's vocabulary has {rows} tokens but the tokenizer of {source} has "
        f"{len(tokenizer)}: ids from {rows} up would index past its embeddings; use the tokenizer the "
        "model was trained with (model.tokenizer_path), or a model whose embeddings cover it"
    )

"""Reference log-probs computed once, stored on disk, verified on load, and reused by every run.

The reference model's log-probs depend on neither β nor the loss, so every run and sweep member
sharing (reference weights, tokenizer and chat template, tokenised data, truncation settings,
log-prob code version) can share them. The file is named by the digest of that key, written
atomically under a lock (sweep members may start together), and checked on load: the stored key
must equal the expected one and every example of both splits must have a finite value. Anything
else is refused with a message, never used. A run that uses the cache loads no reference model.

Only paired losses are cached: KTO's reference point is scored on mismatched rows that depend
on how a batch is drawn, so it keeps its on-the-fly reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from dpo_exp.data.collate import IndexedItem, SplitLogps
from dpo_exp.data.module import PreparedData, pair_collator
from dpo_exp.logprobs import split_pairs
from dpo_exp.lora import REFERENCE_ADAPTER, is_lora, reference_mode
from dpo_exp.losses import LossSpec
from dpo_exp.scoring import score_batch, shared_prompt_supported

# Bump when the numbers `score_sequences` gives for the same inputs change (label shift, dtype,
# masking): caches written by older code then stop matching.
LOGPS_VERSION = 1
SPLITS = ("train", "validation")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class CacheError(RuntimeError):
    """A reference log-prob cache that cannot be used: mismatched key, missing or partial values."""


@dataclass
class ReferenceCache:
    train: SplitLogps
    validation: SplitLogps


# -- config ------------------------------------------------------------------------------------


def check_cache_config(reference_cfg: Any, spec: LossSpec) -> None:
    """Refuse `reference.cache=true` where it cannot apply, before anything is loaded."""
    if reference_cfg.cache and spec.needs_reference and not spec.paired:
        raise ValueError(
            f"reference.cache: loss '{spec.name}' trains on unpaired data, whose KL rows are drawn per "
            "batch and cannot be cached; set reference.cache=false"
        )


def cache_wanted(reference_cfg: Any, spec: LossSpec) -> bool:
    """Whether this run reads reference log-probs from the cache (reference-free losses need none)."""
    return bool(reference_cfg.cache) and spec.needs_reference and spec.paired


# -- the key -----------------------------------------------------------------------------------


def _sha256(chunks: Any) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(model_cfg: Any, policy: torch.nn.Module) -> str:
    """The reference's weights: the bytes of `ref_path`'s weight files, else the initial policy's tensors.

    Call before training: without `ref_path` the reference is a copy of the initial policy.
    """
    ref_path = model_cfg.get("ref_path")
    if ref_path is not None:
        files = sorted(p for p in Path(ref_path).rglob("*") if p.name.endswith(WEIGHT_SUFFIXES))
        if not files:
            raise CacheError(f"model.ref_path: no weight files found under {ref_path}")
        return _sha256(_file_chunks(files))
    state = policy.state_dict()
    if is_lora(policy) and REFERENCE_ADAPTER not in policy.peft_config:
        # The reference is the base with the adapter off: the new adapter's random start is not part of it.
        state = {name: tensor for name, tensor in state.items() if "lora_" not in name}
    return _sha256(
        name.encode()
        + str(tensor.dtype).encode()
        + tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        for name, tensor in sorted(state.items())
    )


def _file_chunks(files: list[Path]) -> Any:
    for path in files:
        yield path.name.encode()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                yield chunk


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Vocabulary, special tokens and chat template."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]
    template = getattr(tokenizer, "chat_template", None)
    return _sha256([json.dumps([vocab, specials, template]).encode()])


def data_fingerprint(items: list[IndexedItem]) -> str:
    """The tokenised ids of every example, in index order."""
    return _sha256(
        json.dumps(
            [item.index, item.record.prompt_ids, item.record.chosen_ids, item.record.rejected_ids]
        ).encode()
        for item in items
    )


def cache_key(
    model_cfg: Any, data_cfg: Any, policy: torch.nn.Module, tokenizer: Any, data: PreparedData
) -> dict:
    """Everything the reference log-probs depend on, as strings."""
    return {
        "reference_weights": weights_fingerprint(model_cfg, policy),
        "reference_dtype": str(model_cfg.get("ref_dtype") or model_cfg.get("dtype")),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data_train": data_fingerprint(data.train.items),
        "data_validation": data_fingerprint(data.validation.items),
        "truncation": f"max_length={data_cfg.max_length},max_prompt_length={data_cfg.max_prompt_length}",
        "logps_version": str(LOGPS_VERSION),
    }


def cache_path(cache_dir: str | Path, key: dict) -> Path:
    digest = _sha256([json.dumps(key, sort_keys=True).encode()])
    return Path(cache_dir) / f"ref_logps_{digest[:24]}.safetensors"


# -- compute, store, verify --------------------------------------------------------------------


@torch.no_grad()
def compute_split(
    reference: torch.nn.Module,
    items: list[IndexedItem],
    *,
    pad_id: int,
    batch_size: int,
    share_prompt: bool = False,
) -> SplitLogps:
    """Score every pair of a split with the reference; NaN marks anything left unscored."""
    chosen = torch.full((len(items),), float("nan"))
    rejected = torch.full((len(items),), float("nan"))
    device = next(reference.parameters()).device
    share_prompt = share_prompt and shared_prompt_supported(reference)
    for batch in DataLoader(items, batch_size=batch_size, collate_fn=pair_collator(pad_id, share_prompt)):
        logps, _ = score_batch(reference, {name: value.to(device) for name, value in batch.items()})
        chosen_logps, rejected_logps = split_pairs(logps.float().cpu())
        chosen[batch["index"]] = chosen_logps
        rejected[batch["index"]] = rejected_logps
    return SplitLogps(chosen, rejected)


def save_cache(path: Path, key: dict, cache: ReferenceCache) -> None:
    """Write atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{split}.{side}": getattr(getattr(cache, split), side).contiguous()
        for split in SPLITS
        for side in ("chosen", "rejected")
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"key": json.dumps(key, sort_keys=True)})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_cache(path: Path, key: dict, sizes: dict[str, int]) -> ReferenceCache:
    """Read and verify a cache: same key, one finite value per example of each split."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        stored_key = json.loads((handle.metadata() or {}).get("key", "{}"))
    if stored_key != key:
        differing = sorted(
            name for name in set(key) | set(stored_key) if key.get(name) != stored_key.get(name)
        )
        raise CacheError(
            f"reference cache {path} was made for other inputs (differs in: {', '.join(differing)})"
        )
    tensors = load_file(str(path))
    splits = {}
    for split in SPLITS:
        sides = {}
        for side in ("chosen", "rejected"):
            values = tensors.get(f"{split}.{side}")
            if values is None or values.shape != (sizes[split],) or not torch.isfinite(values).all():
                raise CacheError(
                    f"reference cache {path} does not cover every {split} example ({side}); "
                    "delete it to recompute"
                )
            sides[side] = values
        splits[split] = SplitLogps(**sides)
    return ReferenceCache(**splits)


def load_or_compute(
    cfg: Any, policy: torch.nn.Module, tokenizer: Any, data: PreparedData, load_reference: Any
) -> ReferenceCache:
    """The verified cache for this run's inputs, computed (with `load_reference()`) if absent."""
    key = cache_key(cfg.model, cfg.data, policy, tokenizer, data)
    path = cache_path(cfg.reference.cache_dir, key)
    sizes = {"train": len(data.train.items), "validation": len(data.validation.items)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            print(f"reference log-probs: read from {path}")
            return load_cache(path, key, sizes)
        reference = load_reference()
        options = {
            "pad_id": tokenizer.pad_token_id,
            "batch_size": int(cfg.data.eval_batch_size),
            "share_prompt": bool(cfg.speed.share_prompt),
        }
        # A LoRA policy without a separate reference is its own reference, adapter off.
        scorer = policy if reference is None and is_lora(policy) else reference
        with reference_mode(scorer) if scorer is policy else contextlib.nullcontext():
            cache = ReferenceCache(
                train=compute_split(scorer, data.train.items, **options),
                validation=compute_split(scorer, data.validation.items, **options),
            )
        del reference, scorer
        save_cache(path, key, cache)
        print(f"reference log-probs: computed and written to {path}")
    return load_cache(path, key, sizes)

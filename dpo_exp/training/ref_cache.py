"""Reference log-probs computed once, stored on disk, verified on load, and reused by every run.

The reference model's log-probs depend on neither β nor the loss, so every run and sweep member
sharing (reference weights, tokenizer and chat template, tokenised data, truncation settings,
log-prob code version) can share them. The file is named by the digest of that key, written
atomically under a lock (sweep members may start together), and checked on load: the stored key
must equal the expected one, the values must match the digest stored with them, and every example
of both splits must have a finite value. A file that fails any check (or is cut short) is never
used: it is recomputed, with a one-line message. Where and when it is scored: `ref_scoring.py`.

Paired data stores `chosen` and `rejected` per example; unpaired data (KTO) stores `completion`
and `mismatched`, the latter on the example's fixed mismatched row (`mismatch_partners`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from dpo_exp.console import progress
from dpo_exp.data.collate import IndexedItem, SplitLogps, UnpairedLogps
from dpo_exp.data.module import PreparedData, split_collator
from dpo_exp.errors import ConfigError
from dpo_exp.losses import LossSpec
from dpo_exp.losses.logprobs import split_pairs
from dpo_exp.models.lora import REFERENCE_ADAPTER, is_lora
from dpo_exp.models.scoring import score_batch, shared_prompt_supported
from dpo_exp.storage import temporary_name, writing

# Bump when the numbers `score_sequences` gives for the same inputs change (label shift, dtype,
# masking): caches written by older code then stop matching.
LOGPS_VERSION = 1
SPLITS = ("train", "validation")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class CacheError(ConfigError):
    """A reference log-prob cache that cannot be used: unreadable, another key, values that do not
    match their digest, missing or non-finite values. Such a file is recomputed (`ref_scoring.py`)."""


@dataclass
class ReferenceCache:
    train: SplitLogps | UnpairedLogps
    validation: SplitLogps | UnpairedLogps


# -- config ------------------------------------------------------------------------------------


def cache_wanted(reference_cfg: Any, spec: LossSpec) -> bool:
    """Whether this run reads reference log-probs from the cache (reference-free losses need none)."""
    return bool(reference_cfg.cache) and spec.needs_reference


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
    """The tokenised ids (and labels) of every example, in index order."""
    return _sha256(json.dumps([item.index, *vars(item.record).values()]).encode() for item in items)


def cache_key(cfg: Any, policy: torch.nn.Module, tokenizer: Any, data: PreparedData) -> dict:
    """Everything the reference log-probs depend on, as strings.

    The reference's dtype is `ref_dtype`, else the policy's (`load_reference`); the precision
    decides the dtype it computes in (it is scored under the run's precision plugin, `ref_scoring.py`).
    """
    model_cfg, data_cfg = cfg.model, cfg.data
    return {
        "reference_weights": weights_fingerprint(model_cfg, policy),
        "reference_dtype": str(model_cfg.get("ref_dtype") or model_cfg.get("dtype")),
        "precision": str(cfg.trainer.precision),
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


def split_logps_type(paired: bool) -> type[SplitLogps] | type[UnpairedLogps]:
    """What a split's cache holds: chosen and rejected, or completion and mismatched, per example."""
    return SplitLogps if paired else UnpairedLogps


@torch.no_grad()
def compute_split(
    reference: torch.nn.Module,
    items: list[IndexedItem],
    *,
    pad_id: int,
    batch_size: int,
    paired: bool = True,
    share_prompt: bool = False,
    logits_chunk: int | None = None,
    size: int | None = None,
) -> SplitLogps | UnpairedLogps:
    """Score `items` with the reference, into tensors of the split's `size` (the items' count by
    default) indexed by each item's index; NaN marks anything left unscored (another rank's share)."""
    # fp32 whatever the default dtype (a half-precision plugin's `forward_context` changes it).
    first = torch.full((size or len(items),), float("nan"), dtype=torch.float32)
    second = torch.full((size or len(items),), float("nan"), dtype=torch.float32)
    device = next(reference.parameters()).device
    share_prompt = share_prompt and shared_prompt_supported(reference)
    collate = split_collator(items, pad_id, paired=paired, share_prompt=share_prompt)
    batches = DataLoader(items, batch_size=batch_size, collate_fn=collate)
    for batch in progress(batches, desc="ref", unit="batches"):
        batch = {name: value.to(device) for name, value in batch.items()}
        logps = score_batch(reference, batch, logits_chunk=logits_chunk)[0].float().cpu()
        if paired:
            first_logps, second_logps = split_pairs(logps)
        else:
            kl_logps = score_batch(reference, batch, "kl_", logits_chunk=logits_chunk)[0]
            first_logps, second_logps = logps, kl_logps.float().cpu()
        index = batch["index"].cpu()
        first[index], second[index] = first_logps, second_logps
    return split_logps_type(paired)(first, second)


def values_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every stored tensor: its name, dtype, shape and bytes, in name order."""
    return _sha256(
        f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode() + tensor.contiguous().numpy().tobytes()
        for name, tensor in sorted(tensors.items())
    )


def save_cache(path: Path, key: dict, cache: ReferenceCache) -> None:
    """Write atomically, with the digest of the values: a reader sees the whole file or none."""
    tensors = {
        f"{split}.{field.name}": getattr(getattr(cache, split), field.name).contiguous()
        for split in SPLITS
        for field in dataclasses.fields(getattr(cache, split))
    }
    metadata = {"key": json.dumps(key, sort_keys=True), "digest": values_digest(tensors)}
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_name(path))
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata=metadata)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


def read_cache_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a cache file; CacheError if it cannot be read whole."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:  # SafetensorError, OSError: cut short, or not a safetensors file
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CacheError(f"reference cache {path} cannot be read ({reason})") from error
    return metadata, tensors


def load_cache(path: Path, key: dict, sizes: dict[str, int], *, paired: bool = True) -> ReferenceCache:
    """Read and verify a cache: same key, values matching their digest, one finite value per example."""
    metadata, tensors = read_cache_file(path)
    stored_key = json.loads(metadata.get("key", "{}"))
    if stored_key != key:
        differing = sorted(
            name for name in set(key) | set(stored_key) if key.get(name) != stored_key.get(name)
        )
        raise CacheError(
            f"reference cache {path} was made for other inputs (differs in: {', '.join(differing)})"
        )
    if metadata.get("digest") != values_digest(tensors):
        raise CacheError(f"reference cache {path} does not match the digest of its values")
    logps_type = split_logps_type(paired)
    splits = {}
    for split in SPLITS:
        values = {
            field.name: tensors.get(f"{split}.{field.name}") for field in dataclasses.fields(logps_type)
        }
        for side, value in values.items():
            if value is None or value.shape != (sizes[split],) or not value.isfinite().all():
                raise CacheError(f"reference cache {path} does not cover every {split} example ({side})")
        splits[split] = logps_type(**values)
    return ReferenceCache(**splits)


def placeholder(sizes: dict[str, int], *, paired: bool) -> ReferenceCache:
    """A cache of NaNs of the splits' sizes, for the data module to hold until it is filled in place."""
    logps_type = split_logps_type(paired)
    return ReferenceCache(
        **{
            split: logps_type(
                *(torch.full((sizes[split],), float("nan")) for _ in dataclasses.fields(logps_type))
            )
            for split in SPLITS
        }
    )


def fill(cache: ReferenceCache, values: ReferenceCache) -> None:
    """Copy `values` into `cache`'s tensors, which data modules and collators already hold."""
    for split in SPLITS:
        for field in dataclasses.fields(getattr(cache, split)):
            getattr(getattr(cache, split), field.name).copy_(getattr(getattr(values, split), field.name))

"""Every fast path against the plain one on tiny models: head on completions, shared prompts, the cache."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.plugins.precision import HalfPrecision
from torch.testing import assert_close

from dpo_exp.cli import run
from dpo_exp.data.collate import SplitLogps
from dpo_exp.data.module import PreferenceDataModule
from dpo_exp.models.loading import load_tokenizer
from dpo_exp.models.scoring import score_sequences
from dpo_exp.training import ref_scoring
from dpo_exp.training.ref_cache import (
    CacheError,
    ReferenceCache,
    cache_key,
    cache_path,
    compute_split,
    load_cache,
    save_cache,
)
from tests.helpers import compose_config, train_losses
from tests.integration.test_module import build, first_batch


def test_head_on_completions_equals_full_logits_on_a_tiny_llama():
    _, module, datamodule = build(["model.config.tie_word_embeddings=false", "speed.share_prompt=false"])
    batch = first_batch(datamodule)
    args = (module.policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
    fast = score_sequences(*args, head_on_completions=True)
    plain = score_sequences(*args, head_on_completions=False)
    assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    assert_close(fast[1], plain[1])


def _cache_for(overrides: list[str], tmp_path: Path):
    cfg, module, datamodule = build(overrides)
    tokenizer = load_tokenizer(cfg.model)
    key = cache_key(cfg, module.policy, tokenizer, datamodule.data)
    return cfg, module, datamodule, key


def _first_batch_with(cached, datamodule: PreferenceDataModule, *, paired: bool) -> dict[str, torch.Tensor]:
    """The first training batch of `datamodule`'s data with `cached` as reference log-probs of both splits."""
    cached_datamodule = PreferenceDataModule(
        datamodule.data,
        paired=paired,
        pad_id=datamodule.pad_id,
        batch_size=8,
        eval_batch_size=16,
        seed=0,
        ref_logps={"train": cached, "validation": cached},
    )
    return first_batch(cached_datamodule)


def test_cached_reference_logps_equal_the_on_the_fly_ones(tmp_path: Path):
    _, module, datamodule, _ = _cache_for([], tmp_path)
    cached = compute_split(
        module.reference, datamodule.data.train.items, pad_id=datamodule.pad_id, batch_size=5
    )
    batch = _first_batch_with(cached, datamodule, paired=True)
    on_the_fly = module.reference_logps({k: v for k, v in batch.items() if k != "ref_logps"})
    assert_close(batch["ref_logps"].values, on_the_fly, rtol=1e-5, atol=1e-5)
    module.reference = None  # the module now reads them from the batch
    assert_close(module.reference_logps(batch), on_the_fly, rtol=1e-5, atol=1e-5)


def test_a_mismatched_or_partial_cache_is_refused(tmp_path: Path):
    _, module, datamodule, key = _cache_for([], tmp_path)
    items = datamodule.data.validation.items
    split = compute_split(module.reference, items, pad_id=datamodule.pad_id, batch_size=16)
    path = cache_path(tmp_path, key)
    save_cache(path, key, ReferenceCache(train=split, validation=_copy(split)))
    sizes = {"train": len(items), "validation": len(items)}
    assert_close(load_cache(path, key, sizes).train.chosen, split.chosen)
    with pytest.raises(CacheError, match="differs in: data_train"):
        load_cache(path, {**key, "data_train": "something else"}, sizes)
    with pytest.raises(CacheError, match="does not cover every train example"):
        load_cache(path, key, {**sizes, "train": len(items) + 1})
    split.rejected[3] = float("nan")  # an example never scored
    save_cache(path, key, ReferenceCache(train=split, validation=_copy(split)))
    with pytest.raises(CacheError, match="does not cover every"):
        load_cache(path, key, sizes)


def test_the_key_changes_with_weights_data_and_truncation(tmp_path: Path):
    _, module, _, key = _cache_for([], tmp_path)
    assert _cache_for(["seed=1"], tmp_path)[3]["reference_weights"] != key["reference_weights"]
    assert _cache_for(["data.max_length=30"], tmp_path)[3]["truncation"] != key["truncation"]
    assert _cache_for(["data.options.seed=1"], tmp_path)[3]["data_train"] != key["data_train"]
    assert _cache_for([], tmp_path)[3] == key


def test_the_key_changes_with_precision_and_the_reference_dtype(tmp_path: Path, tiny_model_dir):
    _, _, _, key = _cache_for([], tmp_path)
    assert _cache_for(["trainer.precision=bf16-true"], tmp_path)[3]["precision"] != key["precision"]
    # A `ref_path` reference's files are the same whatever dtype it is loaded in: the key names it.
    separate = [f"model.ref_path={tiny_model_dir}"]
    base = _cache_for(separate, tmp_path)[3]
    for override in ("model.dtype=bfloat16", "model.ref_dtype=bfloat16"):
        changed = _cache_for([*separate, override], tmp_path)[3]
        assert changed["reference_weights"] == base["reference_weights"]
        assert changed["reference_dtype"] != base["reference_dtype"], override


def test_cached_logps_pass_a_half_precision_plugin_unrounded(tmp_path: Path):
    """bf16-true casts every floating tensor of a batch before moving it (`convert_input`); the
    cached values, summed log-probs of tens to thousands of nats, must reach the loss as stored."""
    _, module, datamodule, _ = _cache_for([], tmp_path)
    cached = compute_split(
        module.reference, datamodule.data.train.items, pad_id=datamodule.pad_id, batch_size=8
    )
    batch = _first_batch_with(cached, datamodule, paired=True)
    index = batch["index"]
    stored = torch.cat([cached.chosen[index], cached.rejected[index]])
    assert not torch.equal(stored.to(torch.bfloat16).float(), stored)  # bf16 would round them
    moved = move_data_to_device(HalfPrecision("bf16-true").convert_input(batch), "cpu")
    assert moved["input_ids"].dtype == torch.long
    module.reference = None  # the module reads them from the batch
    read = module.reference_logps(moved)
    assert read.dtype == torch.float32 and torch.equal(read, stored)


def test_a_bf16_true_run_from_its_cached_reference_starts_at_ln_2(tmp_path: Path):
    # The cache is scored in bf16 weights as the policy is: the step-0 log-ratios are exactly 0.
    overrides = ["trainer.precision=bf16-true", "reference.cache=true", f"reference.cache_dir={tmp_path}"]
    overrides += ["trainer.max_steps=1", "trainer.val_check_interval=1"]
    summary = run(compose_config(overrides), tmp_path / "run")
    assert summary["reference_cached"]
    assert summary["step_zero"]["max_abs_logratio"] == 0
    assert summary["step_zero"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["metrics"]["train/loss"] == pytest.approx(math.log(2), abs=1e-6)  # step 0, as logged


def _copy(split: SplitLogps) -> SplitLogps:
    return SplitLogps(split.chosen.clone(), split.rejected.clone())


FOUR_STEPS = ["trainer.max_steps=4", "trainer.val_check_interval=4"]


def assert_same_training(expected: dict, actual: dict) -> None:
    """Two runs' summaries: the same training losses at every step (four of them) and val loss."""
    losses = torch.tensor(train_losses(Path(expected["run_dir"])))
    assert len(losses) == 4
    assert_close(torch.tensor(train_losses(Path(actual["run_dir"]))), losses, rtol=1e-5, atol=1e-6)
    assert_close(actual["metrics"]["val/loss"], expected["metrics"]["val/loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_with_the_cache_follows_the_same_loss_trajectory(tmp_path: Path):
    overrides, cache = FOUR_STEPS, ["reference.cache=true", f"reference.cache_dir={tmp_path / 'cache'}"]
    plain = run(compose_config(overrides), tmp_path / "plain")
    computed = run(compose_config([*overrides, *cache]), tmp_path / "computed")
    reused = run(compose_config([*overrides, *cache, "beta=0.5"]), tmp_path / "reused")
    assert not plain["reference_cached"] and computed["reference_cached"] and reused["reference_cached"]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1  # the β change reused it
    assert_same_training(plain, computed)
    for name in ("peak_memory_gb", "mfu", "tokens_per_s"):
        assert plain[name] > 0


@pytest.mark.slow
def test_training_on_shared_prompt_rows_follows_the_padded_loss_trajectory(tmp_path: Path):
    overrides = FOUR_STEPS
    padded = run(compose_config([*overrides, "speed.share_prompt=false"]), tmp_path / "padded")
    shared = run(compose_config([*overrides, "speed.share_prompt=true"]), tmp_path / "shared")
    assert_same_training(padded, shared)
    assert shared["tokens"] == padded["tokens"]  # the same sequences, counted alike
    assert shared["shared_prompt"] and not padded["shared_prompt"]


@pytest.mark.slow
def test_lora_reads_its_adapter_off_reference_from_the_cache(tmp_path: Path):
    lora = "model.lora={r:4,alpha:8,dropout:0.0,target_modules:all-linear}"
    overrides, cache = (
        [lora, *FOUR_STEPS],
        ["reference.cache=true", f"reference.cache_dir={tmp_path / 'cache'}"],
    )
    plain = run(compose_config(overrides), tmp_path / "plain")
    cached = run(compose_config([*overrides, *cache]), tmp_path / "cached")
    rank_8 = run(compose_config([*overrides, *cache, "model.lora.r=8"]), tmp_path / "rank_8")
    assert cached["reference_cached"] and rank_8["reference_cached"]
    # Another adapter on the same base has the same reference: the cache is reused.
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert_same_training(plain, cached)


def test_kto_reads_reference_logps_of_its_examples_and_their_mismatched_rows_from_the_cache():
    _, module, datamodule = build(["loss=kto"])
    items = datamodule.data.train.items
    cached = compute_split(module.reference, items, pad_id=0, batch_size=7, paired=False)
    batch = _first_batch_with(cached, datamodule, paired=False)
    plain = {name: value for name, value in batch.items() if "ref_logps" not in name}
    assert_close(batch["ref_logps"].values, module.reference_logps(plain), rtol=1e-5, atol=1e-5)
    assert_close(
        batch["kl_ref_logps"].values, module.reference_logps(plain, prefix="kl_"), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_kto_training_with_the_cache_follows_the_same_loss_trajectory(tmp_path: Path):
    overrides, cache = (
        ["loss=kto", *FOUR_STEPS],
        ["reference.cache=true", f"reference.cache_dir={tmp_path / 'cache'}"],
    )
    plain = run(compose_config(overrides), tmp_path / "plain")
    cached = run(compose_config([*overrides, *cache]), tmp_path / "cached")
    assert cached["reference_cached"] and not plain["reference_cached"]
    assert_same_training(plain, cached)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_the_cache_is_scored_when_training_starts_on_the_placed_model_in_its_precision(
    tmp_path: Path, monkeypatch, precision
):
    """Scored before the Trainer existed, the cache ran on the host in fp32 while a GPU idled; it is
    scored now under the Trainer's own precision plugin, on the module's device, once it is placed."""
    seen = []

    def recording(scorer, items, **options):
        parameter = next(scorer.parameters())
        seen.append((parameter.dtype, parameter.device, torch.is_autocast_enabled("cpu"), options["size"]))
        return compute_split(scorer, items, **options)

    monkeypatch.setattr(ref_scoring, "compute_split", recording)
    overrides = [f"trainer.precision={precision}", "reference.cache=true", f"reference.cache_dir={tmp_path}"]
    summary = run(compose_config([*overrides, *FOUR_STEPS]), tmp_path / "run")
    dtype, autocast = (torch.bfloat16, False) if precision == "bf16-true" else (torch.float32, True)
    assert seen == [(dtype, torch.device("cpu"), autocast, 80), (dtype, torch.device("cpu"), autocast, 16)]
    assert summary["step_zero"]["max_abs_logratio"] == 0  # the policy runs as its cache was scored
    seen.clear()
    run(compose_config([*overrides, *FOUR_STEPS]), tmp_path / "again")
    assert seen == []  # read back from the file, scored by no one

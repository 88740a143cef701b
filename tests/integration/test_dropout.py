"""`model.dropout` is one decision applied alike to a model built from a config and one loaded by path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from dpo_exp.config import ConfigError, validate_config
from dpo_exp.models.loading import load_policy, load_tokenizer
from tests.conftest import tiny_llama_config
from tests.helpers import compose_config


def dropout_rates(model: torch.nn.Module) -> list[float]:
    """Every dropout rate in the model: nn.Dropout modules and attention modules' kernel rate."""
    rates = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            rates.append(module.p)
        if isinstance(getattr(module, "attention_dropout", None), float):
            rates.append(module.attention_dropout)
    return rates


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, char_tokenizer) -> dict[str, Path]:
    """A Llama with attention dropout 0.5 and a GPT-2 with its usual 0.1 everywhere, loadable by path."""
    special = dict(
        vocab_size=len(char_tokenizer),
        pad_token_id=char_tokenizer.pad_token_id,
        bos_token_id=char_tokenizer.bos_token_id,
        eos_token_id=char_tokenizer.eos_token_id,
    )
    configs = {
        "llama": tiny_llama_config(char_tokenizer, attention_dropout=0.5),
        "gpt2": GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **special),
    }
    folders = {}
    for name, config in configs.items():
        folder = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        char_tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def sources(saved_models: dict[str, Path], dropout: bool) -> dict[str, list[str]]:
    """Overrides for the model built from its config (model=tiny) and for models loaded by path."""
    tiny = ["model.config.hidden_size=32", "model.config.intermediate_size=64"]
    return {
        "tiny, from config": [*tiny, "+model.config.attention_dropout=0.5", f"model.dropout={dropout}"],
        **{
            f"{name}, by path": ["model=hf", f"model.path={folder}", f"model.dropout={dropout}"]
            for name, folder in saved_models.items()
        },
    }


def two_forwards(policy: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(3, 19).reshape(2, 8)
    with torch.no_grad():
        return policy(input_ids=ids).logits, policy(input_ids=ids).logits


@pytest.mark.parametrize("dropout", [False, True])
def test_every_model_source_trains_in_train_mode_with_the_same_dropout_decision(saved_models, dropout):
    for source, overrides in sources(saved_models, dropout).items():
        cfg = compose_config(["data=synthetic", *overrides], fast=False)
        policy = load_policy(cfg.model, load_tokenizer(cfg.model))
        assert policy.training, f"{source}: the policy must train in train mode"
        rates = dropout_rates(policy)
        assert rates, f"{source}: the test model has no dropout to switch"
        first, second = two_forwards(policy)
        if dropout:
            assert max(rates) > 0, source
            assert not torch.equal(first, second), f"{source}: dropout on, yet two forwards agree"
        else:
            assert set(rates) == {0.0}, f"{source}: {rates}"
            assert torch.equal(first, second), f"{source}: dropout off, yet two forwards differ"


def test_dropout_is_off_by_default_for_every_model_group():
    for group in ("tiny", "hf", "llama", "qwen2", "gpt2", "pythia"):
        overrides = [f"model={group}"] + ([] if group == "tiny" else ["model.path=/some/model"])
        assert compose_config(overrides, fast=False).model.dropout is False, group


def test_dropout_takes_true_or_false_only():
    cfg = compose_config(["data=synthetic", "model.dropout=0.1"], fast=False)
    with pytest.raises(ConfigError, match="model.dropout must be true or false, got 0.1"):
        validate_config(cfg)

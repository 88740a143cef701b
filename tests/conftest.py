"""Shared fixtures: an offline character tokenizer and tiny models saved locally. No network."""

from __future__ import annotations

import os

# Set before transformers, datasets or wandb are imported by any test module.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from dpo_exp.models.tokenizer import build_char_tokenizer  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def char_tokenizer():
    return build_char_tokenizer()


def tiny_llama_config(tokenizer, **overrides) -> LlamaConfig:
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny Llama and its tokenizer saved with save_pretrained, loadable by path."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer))
    model.save_pretrained(directory)
    char_tokenizer.save_pretrained(directory)
    return directory
